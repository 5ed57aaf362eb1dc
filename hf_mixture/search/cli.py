"""``hf-mixture search``, ``hf-mixture search-run`` and ``hf-mixture fit-laws``.

    hf-mixture search --store STORE --target TARGET --output DIR [--config search.yaml] [--FIELD V]
    hf-mixture search-run DIR --index I        # one proxy run folder (a Slurm array task)
    hf-mixture fit-laws RUNS_DIR [--metric target] [--predict-steps N] [--predict-params N]

Every :class:`SearchCommand` and :class:`~hf_mixture.search.config.SearchConfig` field is
a flag (``--proxy-tokens 200000``) and a ``--config`` key; flags override the config file.  Rerunning
``search`` with the same output folder resumes it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from ..errors import HFMixtureError
from .config import SearchConfig


@dataclass
class SearchCommand:
    """What ``hf-mixture search`` searches over and where it writes (the rest: SearchConfig)."""

    store: str = field(metadata={"help": "Token store folder (hf-mixture tokenize)."})
    target: str = field(metadata={
        "help": "'mean' or 'worst' validation loss over the pool's domains, a text "
                "file/folder/dataset id whose loss to minimize, or 'module:function' "
                "(fn(model, tokenizer) -> float)."})
    output: str = field(metadata={"help": "Search folder (created; resumable)."})


@dataclass
class SearchRunCommand:
    """Options of ``hf-mixture search-run``."""

    path: str = field(metadata={"positional": True,
                                "help": "A search folder (with --index) or one run folder."})
    index: int | None = field(default=None, metadata={
        "help": "Position of the run among the search's run folders (e.g. $SLURM_ARRAY_TASK_ID)."})
    retry_failed: bool = field(default=False, metadata={"help": "Run a failed run again."})


@dataclass
class FitLawsCommand:
    """Options of ``hf-mixture fit-laws``."""

    runs_dir: str = field(metadata={"positional": True, "help": "A search folder or any folder "
                                                                "of proxy run folders."})
    metric: str = field(default="target", metadata={
        "help": "'target', 'mean', 'worst' or a domain name."})
    predict_steps: int | None = field(default=None, metadata={
        "help": "Extrapolate to this many steps."})
    predict_params: float | None = field(default=None, metadata={
        "help": "Extrapolate to this model size."})
    json: bool = field(default=False, metadata={"help": "Print JSON instead of tables."})


def add_parser(subparsers) -> None:
    search = subparsers.add_parser(
        "search", dataclass_types=[SearchCommand, SearchConfig],
        help="Search for the best mixture with proxy models (CLIMB).",
        description="Sample mixtures of the token store's components, train small proxy models "
                    "on them, fit a predictor of the target, sample the next round from its "
                    "predicted top, and write DIR/mixture.yaml, DIR/runs.jsonl and "
                    "DIR/report.md.  Rerun the same command to resume.")
    search.set_defaults(func=run_search_command)

    one = subparsers.add_parser(
        "search-run", dataclass_types=[SearchRunCommand],
        help="Train one planned proxy run (e.g. as a Slurm array task).",
        description="Train the proxy run folder DIR/runs/<name> at position --index of the "
                    "search's run folders (sorted by name), or the run folder given directly. "
                    "A finished run is left as it is.")
    one.set_defaults(func=run_one_command)

    laws = subparsers.add_parser(
        "fit-laws", dataclass_types=[FitLawsCommand],
        help="Fit loss-vs-steps and loss-vs-size power laws to proxy runs.",
        description="Fit L(s) = E + A s^-alpha to each finished run's eval curve and, for "
                    "mixtures trained at 3 or more model sizes, L(N) = E + A N^-alpha; print the "
                    "parameters and the extrapolated losses.")
    laws.set_defaults(func=run_fit_laws_command)


def run_search_command(command: SearchCommand, config: SearchConfig) -> int:
    from .search import run_search

    result = run_search(command.store, command.target, command.output, config)
    if result.status == "pending":
        from .search import run_folders

        runs = [p.name for p in run_folders(command.output)]
        idx = [runs.index(name) for name in result.pending]
        print(f"{len(result.pending)} proxy run(s) are waiting to be run: indices "
              f"{min(idx)}-{max(idx)} of `hf-mixture search-run {command.output} --index I` "
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


def run_one_command(command: SearchRunCommand) -> int:
    from pathlib import Path

    from .proxy import SPEC, run_proxy
    from .search import run_folders

    path = Path(command.path)
    if command.index is None:
        if not (path / SPEC).is_file():
            raise HFMixtureError(f"'{path}' is not a proxy run folder (no {SPEC}); give a search "
                                 "folder with --index.")
        run_dir = path
    else:
        runs = run_folders(path)
        if not runs:
            raise HFMixtureError(f"'{path}' holds no planned proxy runs (no runs/*/{SPEC}).")
        if not 0 <= command.index < len(runs):
            raise HFMixtureError(f"--index {command.index} is out of range: '{path}' has "
                                 f"{len(runs)} run folders (0-{len(runs) - 1}).")
        run_dir = runs[command.index]
    result = run_proxy(run_dir, retry_failed=command.retry_failed)
    if result.get("status") != "finished":
        print(f"hf-mixture search-run: {run_dir.name} failed: {result.get('error')}",
              file=sys.stderr)
        return 1
    print(f"{run_dir.name}: target {result['target']:.4f} ({result['seconds']:.0f} s)")
    return 0


def run_fit_laws_command(command: FitLawsCommand) -> int:
    from .laws import fit_laws

    report = fit_laws(command.runs_dir, metric=command.metric,
                      predict_steps=command.predict_steps, predict_params=command.predict_params)
    if command.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.to_text(), end="")
    return 0
