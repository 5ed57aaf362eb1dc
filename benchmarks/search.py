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
        [--executor local|slurm --slurm-partition P]

Rerunning with the same ``--workdir`` resumes (finished proxy runs are kept).

``--many-runs N`` measures the predictors instead, as RegMix does with its 512 runs: N
cheap proxies (``--many-model cpu-tiny``, ``--many-tokens`` each) on N Dirichlet mixtures
(one proxy stage), plus ``--many-transfer`` of them again with a larger proxy
(``--transfer-model``); every predictor is fitted on ``--fit-sizes`` (16 64 256) of the
runs (3 seeded subsets each) and ranks the runs it did not see at the same scale and the
transfer set (Spearman).  The full setting is ``--many-runs 320``; a reduced one (e.g.
``--many-runs 80 --fit-sizes 16 32 64``) fits a 2-core machine in minutes.

``--timing`` prints each stage's wall time and the gap between one stage's end and the
next one's start (the scheduler's overhead per stage: submission/queue/start-up).
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
    parser.add_argument("--executor", default="local", choices=("local", "slurm", "ray"))
    parser.add_argument("--slurm-partition", default=None)
    parser.add_argument("--timing", action="store_true",
                        help="Run the search only and print per-stage times and overheads.")
    parser.add_argument("--many-runs", type=int, default=0,
                        help="Measure the predictors on this many cheap proxy runs instead.")
    parser.add_argument("--many-model", default="cpu-tiny")
    parser.add_argument("--many-tokens", type=int, default=30_000)
    parser.add_argument("--many-transfer", type=int, default=24)
    parser.add_argument("--fit-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--synthetic", action="store_true",
                        help="The predictors on a known function of the weights (no training).")
    args = parser.parse_args()
    if args.synthetic:
        return synthetic(args)
    if args.many_runs:
        return many_runs(args)

    import numpy as np

    from hf_mixture.executors import ExecutorConfig
    from hf_mixture.search import SearchConfig, run_search
    from hf_mixture.search.search import retrain

    started = time.perf_counter()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hf_mixture_search_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    store, target_file, held_out = build_store(workdir, args.target_source, args.target_docs, 0)
    overrides = {"exclude": [held_out], "transfer_check": not args.timing}
    if args.transfer_model:
        overrides["transfer_model"] = args.transfer_model
    if args.transfer_runs:
        overrides["transfer_runs"] = args.transfer_runs
    if args.rounds:
        overrides["rounds"] = args.rounds
    if args.proxy_tokens:
        overrides["proxy_tokens"] = args.proxy_tokens
    config = SearchConfig(**overrides)
    executor = _executor(args)
    # --timing: a folder per executor and worker count, beside the store they share
    search_dir = workdir / (f"timing-{args.executor}-w{args.workers}" if args.timing else "search")
    t0 = time.perf_counter()
    result = run_search(store, str(target_file), search_dir, config, executor=executor)
    if result.status == "queued":
        wait_for_chain(search_dir)
        result = run_search(store, str(target_file), search_dir, config, executor=executor)
    search_seconds = time.perf_counter() - t0
    if args.timing:
        print_timing(search_dir, args, search_seconds)
        return
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
                      executor=ExecutorConfig(workers=args.workers))
    retrain_seconds = time.perf_counter() - t1

    load = os.getloadavg()
    print()
    print(f"# Mixture search benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()}-core CPU, "
          f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, Python "
          f"{platform.python_version()})")
    print(f"target: held-out text of source '{args.target_source}' ({args.target_docs} docs), "
          f"its component {held_out} removed from the pool of {len(names)}")
    print(f"search: rounds {config.rounds}, proxies {config.proxy_model} x {config.proxy_tokens:,} "
          f"tokens, {args.executor} executor, workers {args.workers}; "
          f"{search_seconds / 60:.1f} min")
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


def _executor(args):
    from hf_mixture.executors import ExecutorConfig

    if args.executor == "slurm":
        import sys

        return ExecutorConfig(executor="slurm", slurm_partition=args.slurm_partition,
                              workers=args.workers, slurm_cpus_per_task=1,
                              slurm_mem_per_cpu_gb=1, slurm_time="02:00:00",
                              slurm_env_command=f"export PATH={Path(sys.executable).parent}:$PATH")
    return ExecutorConfig(executor=args.executor, workers=args.workers)


def wait_for_chain(search_dir: Path, timeout: float = 7200) -> None:
    """Wait until a chain submitted to Slurm released the search's lock."""
    lock = search_dir.with_name(f".{search_dir.name}.lock")
    end = time.monotonic() + timeout
    while lock.exists() and time.monotonic() < end:
        time.sleep(2)


def stage_times(search_dir: Path) -> list[tuple[str, float, float]]:
    """(stage, first task start, last task end) from datatrove's task logs and completions,
    in chain order."""
    import datetime

    rows = []
    for stage in (search_dir / "logs").iterdir():
        logs = sorted((stage / "logs").glob("task_*.log"))
        done = sorted((stage / "completions").glob("*"))
        if not logs or not done:
            continue
        starts = []
        for log in logs:
            first = log.read_text().split(" | ", 1)[0]
            starts.append(datetime.datetime.strptime(first, "%Y-%m-%d %H:%M:%S.%f").timestamp())
        rows.append((stage.name, min(starts), max(p.stat().st_mtime for p in done)))
    return sorted(rows, key=lambda r: r[1])


def print_timing(search_dir: Path, args, seconds: float) -> None:
    rows = stage_times(search_dir)
    print(f"# search timing: {args.executor} executor, workers {args.workers}: "
          f"{seconds:.0f} s wall")
    print(f"{'stage':<26} {'wall s':>8} {'gap before s':>13}")
    gaps = []
    for i, (name, start, end) in enumerate(rows):
        gap = start - rows[i - 1][2] if i else float("nan")
        if i:
            gaps.append(gap)
        print(f"{name:<26} {end - start:>8.1f} {gap:>13.1f}")
    proxies = sum(end - start for name, start, end in rows if name.startswith("proxies-"))
    print(f"proxy stages {proxies:.0f} s; mean gap between stages {statistics.mean(gaps):.1f} s "
          f"(submission/queue/start-up per stage)" if gaps else "")


def many_runs(args) -> None:
    """RegMix's question on cheap proxies: how well does each predictor rank unseen runs,
    fitted on 16 / 64 / 256 of them, at the same scale and at a larger one?"""
    import numpy as np

    from hf_mixture.search import SearchConfig, run_search
    from hf_mixture.search.predictors import make_predictor, predictor_names, spearman

    started = time.perf_counter()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hf_mixture_many_runs_"))
    workdir.mkdir(parents=True, exist_ok=True)
    store, target_file, held_out = build_store(workdir, args.target_source, args.target_docs, 0)
    config = SearchConfig(
        rounds=[args.many_runs], verify_seeds=0, exclude=[held_out], proxy_model=args.many_model,
        proxy_tokens=args.many_tokens, proxy_eval_points=1, transfer_check=True,
        transfer_model=args.transfer_model or "cpu-1m", transfer_runs=args.many_transfer,
        predictor="linear")  # the search's own pick does not matter here
    result = run_search(store, str(target_file), workdir / "search", config,
                        executor=_executor(args))
    if result.status == "queued":
        wait_for_chain(workdir / "search")
        result = run_search(store, str(target_file), workdir / "search", config,
                            executor=_executor(args))
    train_seconds = time.perf_counter() - started
    names = result.mixture.component_names
    ok = [r for r in result.runs if r["status"] == "finished"]
    X = np.array([[r["weights"][n] for n in names] for r in ok])
    y = np.array([r["target"] for r in ok])
    t = result.transfer
    large = dict(zip(t["runs"], t["large_targets"]))
    in_transfer = np.array([r["run"] in large for r in ok])
    Xt = np.array([[r["weights"][n] for n in names] for r in ok if r["run"] in large])
    yt = np.array([large[r["run"]] for r in ok if r["run"] in large])
    pool = np.flatnonzero(~in_transfer)  # fit and same-scale test runs: never a transfer mixture
    print()
    print(f"# Predictors on many runs ({time.strftime('%Y-%m-%d')}, {os.cpu_count()}-core CPU)")
    print(f"{len(ok)} {args.many_model} proxies x {args.many_tokens:,} tokens; transfer: "
          f"{len(yt)} of them with {config.transfer_model}; {train_seconds / 60:.1f} min to train")
    print(f"{'predictor':<12} " + " ".join(f"{f'n={n} same':>11} {f'n={n} xfer':>11}"
                                           for n in args.fit_sizes))
    table: dict[str, list[str]] = {}
    best: dict[tuple[int, str], float] = {}
    for name in predictor_names():
        cells = []
        for n in args.fit_sizes:
            if n >= len(pool):
                cells += ["n/a", "n/a"]
                continue
            same, xfer = [], []
            for rep in range(3):
                fit = np.random.default_rng([rep, n]).choice(pool, size=n, replace=False)
                rest = np.setdiff1d(pool, fit)
                try:
                    model = make_predictor(name).fit(X[fit], y[fit])
                except Exception as err:  # noqa: BLE001 - a predictor that cannot fit n runs
                    same, xfer = [], []
                    print(f"  {name} at n={n}: {err}")
                    break
                same.append(spearman(model.predict(X[rest]), y[rest]) or 0.0)
                xfer.append(spearman(model.predict(Xt), yt) or 0.0)
            for kind, vals in (("same", same), ("xfer", xfer)):
                value = float(np.mean(vals)) if vals else float("nan")
                best[(n, kind)] = max(best.get((n, kind), -1.0), value)
                cells.append(f"{value:.3f}" if vals else "n/a")
        table[name] = cells
    for name, cells in table.items():
        print(f"{name:<12} " + " ".join(f"{c:>11}" for c in cells))
    print("best:        " + " ".join(f"{best[(n, k)]:>11.3f}" for n in args.fit_sizes
                                     for k in ("same", "xfer")))
    print(f"time: {(time.perf_counter() - started) / 60:.1f} min; workdir {workdir}")


def synthetic(args) -> None:
    """The predictors' capacity question without training: targets from a known function of
    6 weights (a mixing law plus pairwise interactions and a wiggle, the kind of structure
    a law misses), plus noise; each predictor fitted on n runs ranks 800 fresh mixtures."""
    import numpy as np

    from hf_mixture.search.candidates import dirichlet_candidates
    from hf_mixture.search.predictors import make_predictor, predictor_names, spearman

    rng = np.random.default_rng(0)
    D = 6
    t = rng.normal(0, 1.5, D)
    W = rng.normal(0, 1, (D, D))
    W = (W + W.T) / 2

    def f(X):
        return (2.0 + np.exp(X @ t) + 0.3 * np.einsum("ni,ij,nj->n", X, W, X)
                + 0.2 * np.sin(6 * X[:, 0]) * X[:, 1])

    prior = np.full(D, 1 / D)
    X_test = dirichlet_candidates(800, prior, concentration=1.0, rng=np.random.default_rng(9))
    y_test = f(X_test)
    # the 2026-12-01 default: the law plus a fixed, damped correction (60 depth-2 trees)
    damped = {"n_estimators": 60, "learning_rate": 0.05, "num_leaves": 4, "max_depth": 2,
              "min_child_samples": 3, "reg_lambda": 1.0}
    makers = {name: (lambda name=name: make_predictor(name)) for name in predictor_names()}
    makers["hybrid_fixed"] = lambda: make_predictor("hybrid", **damped)
    sizes = args.fit_sizes
    print(f"# Predictors on a synthetic target ({time.strftime('%Y-%m-%d')}): Spearman on 800 "
          "unseen mixtures, mean of 3 draws of the fitted runs")
    print(f"{'predictor':<13} " + " ".join(f"{f'n={n}':>8}" for n in sizes))
    rows = {}
    for name, make in makers.items():
        cells = []
        for n in sizes:
            vals = []
            for rep in range(3):
                X = dirichlet_candidates(n, prior, concentration=1.0,
                                         rng=np.random.default_rng([rep, n]))
                y = f(X) + np.random.default_rng([rep, n, 1]).normal(0, 0.03, n)
                vals.append(spearman(make().fit(X, y).predict(X_test), y_test) or 0.0)
            cells.append(float(np.mean(vals)))
        rows[name] = cells
        print(f"{name:<13} " + " ".join(f"{v:>8.3f}" for v in cells))
    best = [max(r[i] for r in rows.values()) for i in range(len(sizes))]
    print(f"{'best':<13} " + " ".join(f"{v:>8.3f}" for v in best))


if __name__ == "__main__":
    main()
