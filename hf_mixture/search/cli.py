"""``hf-mixture search`` and ``hf-mixture fit-laws``.

    hf-mixture search --store STORE --target TARGET --output DIR [--config search.yaml] [--FIELD V]
        [--executor local|slurm|ray] [--workers N] [--slurm-partition P ...] [--ray-address A]
    hf-mixture fit-laws RUNS_DIR [--metric target] [--predict-steps N] [--predict-params N]

Every :class:`SearchCommand`, :class:`~hf_mixture.search.config.SearchConfig` and
:class:`~hf_mixture.executors.ExecutorConfig` field is a flag (``--proxy-tokens 200000``) and a
``--config`` key; flags override the config file.  Rerunning ``search`` with the same output
folder resumes it; on Slurm, a rerun while its jobs are queued says where it stands.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..executors import ExecutorConfig
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
        "search", dataclass_types=[SearchCommand, SearchConfig, ExecutorConfig],
        help="Search for the best mixture with proxy models (CLIMB).",
        description="Sample mixtures of the token store's components, train small proxy models "
                    "on them, fit a predictor of the target, sample the next round from its "
                    "predicted top, and write DIR/mixture.yaml, DIR/runs.jsonl and "
                    "DIR/report.md.  Each round is a datatrove stage on --executor local, slurm "
                    "(the whole chain submitted at once) or ray.  Rerun the same command to "
                    "resume.")
    search.set_defaults(func=run_search_command)

    laws = subparsers.add_parser(
        "fit-laws", dataclass_types=[FitLawsCommand],
        help="Fit loss-vs-steps and loss-vs-size power laws to proxy runs.",
        description="Fit L(s) = E + A s^-alpha to each finished run's eval curve and, for "
                    "mixtures trained at 3 or more model sizes, L(N) = E + A N^-alpha; print the "
                    "parameters and the extrapolated losses.")
    laws.set_defaults(func=run_fit_laws_command)


def run_search_command(command: SearchCommand, config: SearchConfig,
                       executor: ExecutorConfig) -> int:
    from .search import run_search

    result = run_search(command.store, command.target, command.output, config,
                        executor=executor)
    if result.status == "queued":
        print(result.state)
        print(f"Rerun this command to see where it stands; {command.output}/mixture.yaml "
              "appears when the last stage finishes.")
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


def run_fit_laws_command(command: FitLawsCommand) -> int:
    from .laws import fit_laws

    report = fit_laws(command.runs_dir, metric=command.metric,
                      predict_steps=command.predict_steps, predict_params=command.predict_params)
    if command.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.to_text(), end="")
    return 0
