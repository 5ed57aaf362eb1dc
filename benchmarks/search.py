"""Mixture search quality on the playground, with the target held out of the pool.

The playground is grouped by source (cluster_id = source: ground truth used here
to *build* the benchmark only; the search never reads it).  One source is the
target: its text is the target set and its component is removed from the pool,
so the search must find which *other* sources help.  Printed:

1. each predictor's Spearman and MAE on held-out proxy runs (cross-validated over
   the search's runs; target >= 0.9, CLIMB ≈0.94, RegMix ≈0.97) beside its transfer
   Spearman: fitted on the small proxies, ranking round-1 mixtures trained with a
   larger proxy (``--transfer-model``; target >= 0.9);
2. the verification: which final candidate (predicted best, top-k average, best
   run) won when trained, predicted vs observed;
3. the found (verified) mixture's target loss against the best observed proxy run,
   uniform, natural and the best random mixture of round 1, each retrained at equal
   tokens with 3 seeds (mean ± sd);
4. the fraction of training steps the found mixture needs to reach uniform's
   final target loss (data mixing laws: ≈0.68; aim <= 0.65).

    python benchmarks/search.py [--target-source python_code] [--workers 2] [--workdir DIR]

Rerunning with the same ``--workdir`` resumes (finished proxy runs are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def build_store(workdir: Path, target_source: str, target_docs: int, seed: int):
    """Playground -> clustered by source -> token store; the target source's texts -> jsonl."""
    import numpy as np

    from hf_mixture import playground
    from hf_mixture.formats import tokenize_corpus, write_clustered_corpus

    store = workdir / "store"
    ds = playground.load()
    sources = list(playground.SOURCES)
    if target_source not in sources:
        raise SystemExit(f"--target-source must be one of {', '.join(sources)}")
    target_file = workdir / f"target_{target_source}.jsonl"
    if not (store / "manifest.json").is_file():
        by_source = ds.map(lambda b: {"cluster_id": [sources.index(s) for s in b["source"]]},
                           batched=True)
        write_clustered_corpus(by_source, workdir / "corpus", tokenizer=playground.tokenizer(),
                               overwrite=True)
        tokenize_corpus(workdir / "corpus", store, playground.tokenizer(), seed=seed)
    if not target_file.is_file():
        texts = [t for t, s in zip(ds["text"], ds["source"]) if s == target_source]
        pick = np.random.default_rng(seed).permutation(len(texts))[:target_docs]
        target_file.write_text("".join(json.dumps({"text": texts[i]}) + "\n" for i in sorted(pick)))
    return store, target_file, f"cluster_{sources.index(target_source)}"


def steps_to_reach(curve: list[dict], level: float) -> float | None:
    """First step (linearly interpolated between eval points) where target <= level."""
    prev = None
    for point in curve:
        step, value = point["step"], point["target"]
        if value <= level:
            if prev is None:
                return float(step)
            s0, v0 = prev
            return s0 + (v0 - level) / (v0 - value) * (step - s0) if v0 != value else float(step)
        prev = (step, value)
    return None


def mean_sd(values: list[float]) -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-source", default="python_code")
    parser.add_argument("--target-docs", type=int, default=400)
    parser.add_argument("--workdir", help="Working folder (default: a new temporary folder).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, nargs="+", default=None,
                        help="Proxy runs per round (default: SearchConfig's CPU default).")
    parser.add_argument("--proxy-tokens", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--transfer-model", default=None,
                        help="Larger proxy of the transfer check (default: SearchConfig's).")
    parser.add_argument("--transfer-runs", type=int, default=None)
    parser.add_argument("--eval-points", type=int, default=12,
                        help="Eval points of the retrained runs (for the steps fraction).")
    args = parser.parse_args()

    import numpy as np

    from hf_mixture.search import SearchConfig, run_search
    from hf_mixture.search.search import retrain

    started = time.perf_counter()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hf_mixture_search_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    store, target_file, held_out = build_store(workdir, args.target_source, args.target_docs, 0)
    overrides = {"exclude": [held_out], "workers": args.workers, "transfer_check": True}
    if args.transfer_model:
        overrides["transfer_model"] = args.transfer_model
    if args.transfer_runs:
        overrides["transfer_runs"] = args.transfer_runs
    if args.rounds:
        overrides["rounds"] = args.rounds
    if args.proxy_tokens:
        overrides["proxy_tokens"] = args.proxy_tokens
    config = SearchConfig(**overrides)
    t0 = time.perf_counter()
    result = run_search(store, str(target_file), workdir / "search", config)
    search_seconds = time.perf_counter() - t0
    names = result.mixture.component_names
    from hf_mixture.formats import TokenStore

    st = TokenStore(store)
    tokens = np.array([st.num_tokens(n) for n in names], dtype=float)
    random_runs = [r for r in result.runs if r["round"] == 1 and r["status"] == "finished"]
    best_random = min(random_runs, key=lambda r: r["target"])
    mixtures = {
        "found": result.mixture.weights(),
        "best_observed": result.best_run["weights"],
        "uniform": {n: 1.0 / len(names) for n in names},
        "natural": {n: float(t / tokens.sum()) for n, t in zip(names, tokens)},
        "best_random": best_random["weights"],
    }
    t1 = time.perf_counter()
    seeds = tuple(range(args.seeds))
    trained = retrain(workdir / "search", mixtures, seeds=seeds, eval_points=args.eval_points,
                      workers=args.workers)
    retrain_seconds = time.perf_counter() - t1

    load = os.getloadavg()
    print()
    print(f"# Mixture search benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()}-core CPU, "
          f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, Python "
          f"{platform.python_version()})")
    print(f"target: held-out text of source '{args.target_source}' ({args.target_docs} docs), "
          f"its component {held_out} removed from the pool of {len(names)}")
    print(f"search: rounds {config.rounds}, proxies {config.proxy_model} x {config.proxy_tokens:,} "
          f"tokens, workers {config.workers}; {search_seconds / 60:.1f} min")
    print()
    t = result.transfer or {"spearman": {}, "runs": []}
    print("## Predictor quality: same-scale (cross-validated over the search's runs) and transfer")
    own = t.get("observed_spearman")
    print(f"transfer: {len(t['runs'])} round-1 mixtures retrained with {config.transfer_model} "
          f"({(t.get('num_params') or 0) / 1e6:.2f}M parameters vs "
          f"{(t.get('small_num_params') or 0) / 1e6:.2f}M); the small runs' own losses rank them "
          f"at {'n/a' if own is None else f'{own:.3f}'}")
    print(f"{'predictor':<12} {'same-scale':>10} {'MAE':>8} {'transfer':>9} {'runs':>5}  scheme")
    for name, q in result.quality.items():
        rho_t = t["spearman"].get(name)
        rho_t = "n/a" if rho_t is None else f"{rho_t:.3f}"
        if q and "error" not in q:
            rho = "n/a" if q["spearman"] is None else f"{q['spearman']:.3f}"
            mark = " (used)" if name == result.predictor else ""
            print(f"{name + mark:<12} {rho:>10} {q['mae']:>8.4f} {rho_t:>9} {q['num_runs']:>5}  "
                  f"{q['scheme']}")
    print()
    v = result.verification
    print("## Verification: the final candidates trained (seed "
          f"{config.seed}, {config.verify_seeds} seed(s))")
    for label, c in v["candidates"].items():
        mark = "  <- returned" if label == v["winner"] else ""
        print(f"{label:<15} predicted {c['predicted']:.4f}  observed {c['observed']:.4f}  "
              f"off by {c['error']:+.4f}{mark}")
    print()
    print(f"## Target loss at equal tokens ({config.proxy_tokens:,} tokens, seeds {list(seeds)})")
    finals = {n: [r["target"] for r in rs if r.get("status") == "finished"]
              for n, rs in trained.items()}
    print(f"{'mixture':<13} {'target loss':>18}  weights")
    for name, vals in finals.items():
        w = ", ".join(f"{k} {v:.2f}" for k, v in mixtures[name].items())
        print(f"{name:<13} {mean_sd(vals):>18}  {w}")
    wins = {other: sum(f < o for f, o in zip(finals["found"], finals[other]))
            for other in ("uniform", "natural", "best_random")}
    print("found beats: " + ", ".join(f"{k} in {v}/{len(seeds)} seeds" for k, v in wins.items()))
    at_most = sum(f <= o for f, o in zip(finals["found"], finals["best_observed"]))
    print(f"found <= best observed proxy run in {at_most}/{len(seeds)} seeds")
    print()
    fractions = []
    for found, uniform in zip(trained["found"], trained["uniform"]):
        if found.get("status") != "finished" or uniform.get("status") != "finished":
            continue
        reach = steps_to_reach(found["curve"], uniform["target"])
        fractions.append(reach / found["steps"] if reach is not None else float("nan"))
    shown = ", ".join("not reached" if np.isnan(f) else f"{f:.3f}" for f in fractions)
    print("## Steps the found mixture needs to reach uniform's final target loss")
    print(f"fraction of uniform's steps: {mean_sd([f for f in fractions if not np.isnan(f)])} "
          f"(per seed: {shown}; first eval point is at 10% of the steps)")
    print()
    print(f"time: search {search_seconds / 60:.1f} min, retraining {retrain_seconds / 60:.1f} min, "
          f"total {(time.perf_counter() - started) / 60:.1f} min; workdir {workdir}")


if __name__ == "__main__":
    main()
