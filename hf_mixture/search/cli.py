"""``hf-mixture search``, ``hf-mixture search-run`` and ``hf-mixture fit-laws``.

    hf-mixture search --store STORE --target TARGET --output DIR [--config search.yaml] [--FIELD V]
    hf-mixture search-run DIR --index I        # one proxy run folder (a Slurm array task)
    hf-mixture fit-laws RUNS_DIR [--metric target] [--predict-steps N] [--predict-params N]

Every :class:`~hf_mixture.search.config.SearchConfig` field is also a flag
(``--proxy-tokens 200000``); flags override the config file.  Rerunning
``search`` with the same output folder resumes it.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import HFMixtureError


def add_parser(subparsers) -> None:
    from ..config import add_dataclass_arguments
    from .config import SearchConfig

    search = subparsers.add_parser(
        "search", help="Search for the best mixture with proxy models (CLIMB).",
        description="Sample mixtures of the token store's components, train small proxy models "
                    "on them, fit a predictor of the target, sample the next round from its "
                    "predicted top, and write DIR/mixture.yaml, DIR/runs.jsonl and "
                    "DIR/report.md.  Rerun the same command to resume.")
    search.add_argument("--store", required=True, help="Token store folder (hf-mixture tokenize).")
    search.add_argument("--target", required=True,
                        help="'mean' or 'worst' validation loss over the pool's domains, a text "
                             "file/folder/dataset id whose loss to minimize, or "
                             "'module:function' (fn(model, tokenizer) -> float).")
    search.add_argument("--output", required=True, help="Search folder (created; resumable).")
    search.add_argument("--config", help="search.yaml: SearchConfig fields (flags override it).")
    add_dataclass_arguments(search, SearchConfig)
    search.set_defaults(func=run_search_command)

    one = subparsers.add_parser(
        "search-run", help="Train one planned proxy run (e.g. as a Slurm array task).",
        description="Train the proxy run folder DIR/runs/<name> at position --index of the "
                    "search's run folders (sorted by name), or the run folder given directly. "
                    "A finished run is left as it is.")
    one.add_argument("path", help="A search folder (with --index) or one run folder.")
    one.add_argument("--index", type=int, help="Position of the run among the search's run "
                                               "folders (e.g. $SLURM_ARRAY_TASK_ID).")
    one.add_argument("--retry-failed", action="store_true", help="Run a failed run again.")
    one.set_defaults(func=run_one_command)

    laws = subparsers.add_parser(
        "fit-laws", help="Fit loss-vs-steps and loss-vs-size power laws to proxy runs.",
        description="Fit L(s) = E + A s^-alpha to each finished run's eval curve and, for "
                    "mixtures trained at 3 or more model sizes, L(N) = E + A N^-alpha; print the "
                    "parameters and the extrapolated losses.")
    laws.add_argument("runs_dir", help="A search folder or any folder of proxy run folders.")
    laws.add_argument("--metric", default="target",
                      help="'target', 'mean', 'worst' or a domain name (default: target).")
    laws.add_argument("--predict-steps", type=int, help="Extrapolate to this many steps.")
    laws.add_argument("--predict-params", type=float, help="Extrapolate to this model size.")
    laws.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
    laws.set_defaults(func=run_fit_laws_command)


def run_search_command(args: argparse.Namespace) -> int:
    from ..config import config_from_args
    from .config import SearchConfig
    from .search import run_search

    config = config_from_args(SearchConfig, args, config_file=args.config)
    result = run_search(args.store, args.target, args.output, config)
    if result.status == "pending":
        from .search import run_folders

        runs = [p.name for p in run_folders(args.output)]
        idx = [runs.index(name) for name in result.pending]
        print(f"{len(result.pending)} proxy run(s) are waiting to be run: indices "
              f"{min(idx)}-{max(idx)} of `hf-mixture search-run {args.output} --index I` "
              "(e.g. a Slurm array); then rerun this command.")
        return 0
    print(f"mixture: {result.mixture_path}")
    print(f"report:  {result.report_path}")
    print(f"runs:    {result.runs_path}")
    print(summary_line(result))
    return 0


def summary_line(result) -> str:
    """What the search returned, in one line: which candidate won, predicted vs observed."""
    q = result.quality.get(result.predictor) or {}
    rho = q.get("spearman")
    quality = f"{result.predictor} held-out Spearman " + (f"{rho:.3f}" if rho is not None
                                                          else "n/a")
    if result.transfer:
        rho_t = result.transfer["spearman"].get(result.predictor)
        quality += ", transfer " + (f"{rho_t:.3f}" if rho_t is not None else "n/a")
    best = f"best proxy {result.best_run['run']} {result.best_run['target']:.4f}"
    if result.verification:
        v = result.verification
        c = v["candidates"][v["winner"]]
        return (f"winner: {v['winner']} (trained, {v['seeds']} seed(s)): observed target "
                f"{c['observed']:.4f}, predicted {c['predicted']:.4f} (predictor off by "
                f"{c['error']:+.4f}); {best}; {quality}")
    return (f"predicted target {result.predicted_target:.4f} (not trained: verify_seeds 0); "
            f"{best}; {quality}")


def run_one_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .proxy import SPEC, run_proxy
    from .search import run_folders

    path = Path(args.path)
    if args.index is None:
        if not (path / SPEC).is_file():
            raise HFMixtureError(f"'{path}' is not a proxy run folder (no {SPEC}); give a search "
                                 "folder with --index.")
        run_dir = path
    else:
        runs = run_folders(path)
        if not runs:
            raise HFMixtureError(f"'{path}' holds no planned proxy runs (no runs/*/{SPEC}).")
        if not 0 <= args.index < len(runs):
            raise HFMixtureError(f"--index {args.index} is out of range: '{path}' has "
                                 f"{len(runs)} run folders (0-{len(runs) - 1}).")
        run_dir = runs[args.index]
    result = run_proxy(run_dir, retry_failed=args.retry_failed)
    if result.get("status") != "finished":
        print(f"hf-mixture search-run: {run_dir.name} failed: {result.get('error')}",
              file=sys.stderr)
        return 1
    print(f"{run_dir.name}: target {result['target']:.4f} ({result['seconds']:.0f} s)")
    return 0


def run_fit_laws_command(args: argparse.Namespace) -> int:
    from .laws import fit_laws

    report = fit_laws(args.runs_dir, metric=args.metric, predict_steps=args.predict_steps,
                      predict_params=args.predict_params)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.to_text(), end="")
    return 0
