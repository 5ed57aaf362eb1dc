"""Online mixture callbacks vs static mixtures on the playground: held-out loss over seeds.

Same model, steps, data and eval sets for every run of a seed; only the mixture
rule changes.  Runs per seed:

- ``natural``: static token-proportional weights;
- ``uniform``: static equal weights (also DoReMi's reference model, as in the paper);
- ``ado``: :class:`~hf_mixture.callbacks.ADOCallback` (prior = natural, as in ADO);
- ``doremi``: :class:`~hf_mixture.callbacks.DoReMiCallback`, the paper's per-token
  rule against the same seed's trained ``uniform`` model, starting uniform;
- ``bandit``: :class:`~hf_mixture.callbacks.BanditCallback` (EXP3 / ODM), starting
  uniform (EXP3's start);
- ``schedule``: two stages, uniform then natural for the last third (a fixed curriculum).

The adaptive rules read eval losses on *feedback* windows; the result is the
loss on other, *held-out* windows of the same validation split (a seeded
disjoint split), so no rule is scored on the data it adapted to.  Printed: mean
± sd over seeds of the held-out per-domain loss (mean over domains and worst
domain), per-seed differences to natural and uniform, the callback's own time,
and one PNG of every run's weight trajectory (seed 0).

    python benchmarks/callbacks.py                      # ~8 min on a shared 2-core CPU
    python benchmarks/callbacks.py --steps 20 --eval-steps 10 --seeds 0   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RUNS = ("natural", "uniform", "ado", "doremi", "bandit", "schedule")
ADAPTIVE = ("ado", "doremi", "bandit")


def build_store(work: Path, validation_fraction: float) -> Path:
    """Playground → clustered corpus (cluster = source) → token store; reused when present."""
    from hf_mixture import playground
    from hf_mixture.formats import tokenize_corpus, write_clustered_corpus

    store = work / "store"
    if (store / "manifest.json").is_file():
        return store
    sources = list(playground.SOURCES)
    data = playground.load().map(lambda row: {"cluster_id": sources.index(row["source"])})
    corpus = work / "corpus"
    if not (corpus / "clusters.json").is_file():
        write_clustered_corpus(data, corpus, tokenizer=playground.tokenizer())
    tokenize_corpus(corpus, store, playground.tokenizer_dir(),
                    validation_fraction=validation_fraction, seed=0)
    return store


def eval_sets(store, mixture, args):
    """Per-domain (feedback, held-out) windows: one seeded sample, split in two disjoint parts."""
    from hf_mixture.callbacks import domain_eval_datasets

    n = args.eval_sequences
    every = domain_eval_datasets(store, mixture, seq_len=args.seq_len, max_sequences=2 * n,
                                 seed=0)
    feedback = {d: ds.select(range(0, min(n, len(ds) // 2))) for d, ds in every.items()}
    heldout = {d: ds.select(range(min(n, len(ds) // 2), len(ds))) for d, ds in every.items()}
    return feedback, heldout


def make_model(store, args, seed):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=store.vocab_size, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=args.seq_len, eos_token_id=store.eos_token_id,
        bos_token_id=None, pad_token_id=None))


def run_one(task: tuple[str, int, dict]) -> dict:
    """One training run: ``(name, seed, args)`` → held-out losses, weights history, timing."""
    name, seed, raw = task
    args = argparse.Namespace(**raw)
    import torch

    torch.set_num_threads(args.threads)
    from transformers import PrinterCallback, TrainingArguments

    from hf_mixture import playground
    from hf_mixture.callbacks import (
        ADOCallback,
        BanditCallback,
        DoReMiCallback,
        ScheduleCallback,
    )
    from hf_mixture.formats import TokenStore
    from hf_mixture.mixture import Component, Mixture, MixtureDataset, MixtureTrainer, Stage

    work = Path(args.work_dir)
    store = TokenStore(work / "store")
    sources = list(playground.SOURCES)
    natural = {s: store.num_tokens(f"cluster_{k}", "train") for k, s in enumerate(sources)}
    start = {"natural": natural, "ado": natural, "schedule": natural}.get(
        name, {s: 1.0 for s in sources})
    comps = [Component(s, f"cluster_id == {k}", weight=start[s]) for k, s in enumerate(sources)]
    mixture = Mixture(comps, seed=seed)
    feedback, heldout = eval_sets(store, mixture, args)
    data = MixtureDataset(store, mixture, seq_len=args.seq_len)
    model = make_model(store, args, seed)
    training = TrainingArguments(
        output_dir=str(work / f"run_{name}_{seed}"), max_steps=args.steps,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=32,
        learning_rate=3e-3, warmup_steps=10, lr_scheduler_type="cosine",
        eval_strategy="steps", eval_steps=args.eval_steps, logging_steps=args.eval_steps,
        save_strategy="no", report_to="none", use_cpu=True, seed=seed, disable_tqdm=True,
        log_level="error")
    trainer = MixtureTrainer(model=model, args=training, train_dataset=data,
                             eval_dataset=feedback)
    trainer.remove_callback(PrinterCallback)
    callback = None
    if name == "ado":
        # The reference ignores its first 500 of many thousand steps; here the first eval.
        callback = ADOCallback(data.live, fit_from_step=args.eval_steps, min_points=3)
    elif name == "doremi":
        callback = DoReMiCallback(data.live, reference_model=str(work / f"uniform_model_{seed}"))
    elif name == "bandit":
        callback = BanditCallback(data.live)
    elif name == "schedule":
        uniform = {s: 1.0 for s in sources}
        callback = ScheduleCallback(data.live, [Stage(0, uniform, name="uniform"),
                                                Stage(2 * args.steps // 3, natural,
                                                      name="natural")], unit="steps")
    if callback is not None:
        callback.attach(trainer)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    if name == "uniform":
        trainer.save_model(str(work / f"uniform_model_{seed}"))
    metrics = trainer.evaluate(heldout, metric_key_prefix="test")
    losses = {d: float(metrics[f"test_{d}_loss"]) for d in sources}
    per_step = args.batch_size
    history = [(c.sample / per_step, list(c.weights)) for c in data.live.history]
    return {"name": name, "seed": seed, "losses": losses,
            "mean": statistics.fmean(losses.values()), "worst": max(losses.values()),
            "worst_domain": max(losses, key=losses.get), "seconds": seconds,
            "callback_seconds": callback.seconds if callback is not None else 0.0,
            "parameters": sum(p.numel() for p in model.parameters()),
            "history": history, "final": list(data.live.weights_array), "domains": sources}


def plot(results: list[dict], path: Path, steps: int) -> None:
    """Every run's weights over steps (seed 0), one stacked-area panel per run, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hf_mixture._io import atomic_path

    runs = sorted((r for r in results if r["seed"] == min(x["seed"] for x in results)),
                  key=lambda r: RUNS.index(r["name"]))
    fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.2), sharey=True)
    for ax, r in zip(axes, runs):
        xs, ws = [], []
        hist = sorted(r["history"], key=lambda h: h[0])
        for i, (step, w) in enumerate(hist):   # a step function: each weight holds until the next
            end = hist[i + 1][0] if i + 1 < len(hist) else steps
            xs += [step, end]
            ws += [w, w]
        ax.stackplot(xs, list(zip(*ws)), labels=r["domains"])
        ax.set_title(r["name"])
        ax.set_xlim(0, steps)
        ax.set_ylim(0, 1)
        ax.set_xlabel("step")
    axes[0].set_ylabel("weight")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60,
                        help="sized so 18 runs fit ~12 min on a busy 2-core CPU")
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--eval-sequences", type=int, default=8,
                        help="feedback windows per domain; as many again are held out")
    parser.add_argument("--validation-fraction", type=float, default=0.04)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per run (tiny matmuls do not profit from more)")
    parser.add_argument("--work-dir", default="bench_callbacks")
    args = parser.parse_args(argv)
    if args.steps % args.eval_steps:
        parser.error("--steps must be a multiple of --eval-steps")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = args.runs.split(",")
    if "doremi" in runs and "uniform" not in runs:
        parser.error("the doremi run needs the uniform run (its reference model)")

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build_store(work, args.validation_fraction)
    print(f"store ready in {time.perf_counter() - t0:.0f} s", flush=True)
    raw = vars(args)
    # DoReMi needs its seed's uniform model: it runs in a second wave.
    first = [(n, s, raw) for s in seeds for n in runs if n != "doremi"]
    second = [(n, s, raw) for s in seeds for n in runs if n == "doremi"]
    results = []
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(args.jobs) as pool:
        for wave in (first, second):
            for r in pool.imap_unordered(run_one, wave):
                results.append(r)
                print(f"  seed {r['seed']} {r['name']:<8} mean={r['mean']:.4f} "
                      f"worst={r['worst']:.4f} ({r['worst_domain']}) train={r['seconds']:.0f}s "
                      f"callback={r['callback_seconds']:.2f}s", flush=True)
    wall = time.perf_counter() - t0
    by = {(r["name"], r["seed"]): r for r in results}
    base = by[(runs[0], seeds[0])]
    print(f"\n## Callbacks: {len(seeds)} seeds, {platform.machine()}, torch threads={args.threads}, "
          f"{args.jobs} parallel runs, {wall / 60:.1f} min wall")
    print(f"{args.steps} steps x {args.batch_size} seqs x {args.seq_len} tokens; Llama "
          f"{base['parameters'] / 1e6:.2f}M parameters (hidden {args.hidden}, 2 layers); eval "
          f"every {args.eval_steps} steps on {args.eval_sequences} feedback windows per domain; "
          "held-out = other windows\n")
    print("| run | held-out mean loss (mean ± sd) | worst domain (mean ± sd) | "
          "Δ mean vs natural per seed | Δ mean vs uniform per seed | callback s |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name in runs:
        rs = [by[(name, s)] for s in seeds if (name, s) in by]
        means, worsts = [r["mean"] for r in rs], [r["worst"] for r in rs]
        sd = statistics.stdev(means) if len(means) > 1 else 0.0
        sdw = statistics.stdev(worsts) if len(worsts) > 1 else 0.0
        dn = [by[(name, s)]["mean"] - by[("natural", s)]["mean"] for s in seeds
              if ("natural", s) in by and (name, s) in by]
        du = [by[(name, s)]["mean"] - by[("uniform", s)]["mean"] for s in seeds
              if ("uniform", s) in by and (name, s) in by]
        summary[name] = {"mean": statistics.fmean(means), "sd": sd,
                         "worst": statistics.fmean(worsts), "worst_sd": sdw,
                         "vs_natural": dn, "vs_uniform": du,
                         "final_weights": [r["final"] for r in rs]}
        print(f"| {name} | {statistics.fmean(means):.4f} ± {sd:.4f} | "
              f"{statistics.fmean(worsts):.4f} ± {sdw:.4f} | "
              f"{' '.join(f'{x:+.4f}' for x in dn)} | {' '.join(f'{x:+.4f}' for x in du)} | "
              f"{statistics.fmean(r['callback_seconds'] for r in rs):.2f} |")
    print("\nfinal weights (seed 0): " + ", ".join(base["domains"]))
    for name in runs:
        if (name, seeds[0]) in by:
            print(f"  {name:<8} " + " ".join(f"{w:.3f}" for w in by[(name, seeds[0])]["final"]))
    # The target: some adaptive rule beats both static mixtures in every seed, and none
    # loses to natural by more than its own seed spread.
    winners = [n for n in ADAPTIVE if n in summary and summary[n]["vs_natural"]
               and all(a < 0 and b < 0 for a, b in zip(summary[n]["vs_natural"],
                                                       summary[n]["vs_uniform"]))]
    losers = [n for n in ADAPTIVE if n in summary and summary[n]["vs_natural"]
              and statistics.fmean(summary[n]["vs_natural"]) > summary[n]["sd"]]
    print(f"\nbeats natural and uniform in every seed: {', '.join(winners) or 'none'}; "
          f"loses to natural by more than its seed sd: {', '.join(losers) or 'none'}")
    plot(results, work / "callbacks_weights.png", args.steps)
    print(f"weights picture: {work / 'callbacks_weights.png'}")
    (work / "results.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
