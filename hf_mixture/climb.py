"""``hf-mixture climb``: the whole chain — cluster → tokenize → search → mixture + report.

On the embedded playground by default, with CPU-sized defaults (the main job of
the README).  Every stage writes its own folder under ``--output`` and is skipped
on a rerun when its inputs and settings did not change (a ``.climb/<stage>.json``
marker holds their fingerprint), so an interrupted run resumes where it stopped.  climb owns
these folders: when an earlier stage's output changed (a replaced input file reclusters, so
the store is rewritten), the later stages are redone -- the search starts again -- and each
says so::

    OUTPUT/
      clusters/      clustered corpus (cluster_<k>/*.parquet, README configs, clusters.json, report.md)
      store/         token store (per-cluster memmaps + held-out validation slices)
      search/        proxy runs, runs.jsonl, report.md, mixture.yaml
      mixture.yaml   the mixture found (search/mixture.yaml, named after OUTPUT)
      plan.md        its MPT-style plan table

A config file (``--config FILE.yaml``) has the flags' names as keys plus one section per
stage, each a typed dataclass whose fields are its keys::

    seed: 0
    cluster: {final_clusters: 7}        # ClusterConfig fields
    tokenize: {validation_fraction: 0.01}   # TokenizeSettings fields
    search: {rounds: [8, 4, 2]}         # SearchConfig fields

A section's ``seed`` (and the cluster section's ``tokenizer``) default to the shared keys.

>>> run_climb(ClimbConfig(output="runs/climb"))      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import atomic_write_json, atomic_write_text, short_hash
from ._progress import say
from .clustering.config import ClusterConfig
from .config import dataclass_from_dict
from .errors import HFMixtureError
from .formats.tokenize import DEFAULT_VALIDATION_FRACTION
from .search.config import SearchConfig

# climb holds out twice the tokenizer's default: the search measures every domain on
# proxy_eval_tokens (2048 by default) held-out tokens, i.e. about 12 playground documents
# (706 characters, ≈175 tokens, on average); at 1% only clusters of 1,200+ documents hold
# that many, at 2% clusters of 600+, which the playground's smaller clusters need (its
# 15,400 documents make about 2,200 per cluster on average, the small ones far fewer).
CLIMB_VALIDATION_FRACTION = 2 * DEFAULT_VALIDATION_FRACTION

logger = logging.getLogger(__name__)

STAGES = ("cluster", "tokenize", "search", "plan")


@dataclass
class TokenizeSettings:
    """Options of the tokenize stage."""

    validation_fraction: float = field(
        default=CLIMB_VALIDATION_FRACTION,
        metadata={"help": "Share of each cluster's documents held out for validation."})
    num_proc: int | None = field(default=None, metadata={"help": "Tokenizer processes (None: one)."})


@dataclass
class ClimbConfig:
    """Options of ``hf-mixture climb``: the shared keys, then one typed section per stage.

    A section given as a mapping (a config file's ``cluster:``) is read with the shared
    ``seed`` (and ``tokenizer`` for clustering) as its defaults; unknown keys are named.
    """

    input: str | None = field(
        default=None, metadata={"help": "Corpus to cluster (anything datasets.load_dataset reads); "
                                        "default: the embedded playground."})
    output: str = field(default="runs/climb", metadata={"help": "Folder for every stage's output."})
    target: str = field(
        default="mean", metadata={"help": "What the search minimizes: 'mean' or 'worst' per-domain "
                                          "held-out loss, or a text file/folder/dataset id."})
    seed: int = field(default=0, metadata={"help": "Seed of every stage."})
    tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer (folder or Hub id); default: the playground's."})
    plan_tokens: int | None = field(
        default=None, metadata={"help": "Length in tokens of the run the mixture is for: the search's "
                                        "repetition caps and the plan table use it (default: the "
                                        "store's training tokens, one natural epoch)."})
    cluster: ClusterConfig = field(default_factory=dict, metadata={
        "help": "The cluster stage (ClusterConfig keys; config file only)."})
    tokenize: TokenizeSettings = field(default_factory=dict, metadata={
        "help": "The tokenize stage (TokenizeSettings keys; config file only)."})
    search: SearchConfig = field(default_factory=dict, metadata={
        "help": "The search stage (SearchConfig keys; config file only)."})

    def __post_init__(self) -> None:
        if isinstance(self.cluster, Mapping):
            options = {"seed": self.seed, **self.cluster}
            if self.tokenizer is not None:
                options.setdefault("tokenizer", self.tokenizer)
            self.cluster = dataclass_from_dict(ClusterConfig, options, where="climb [cluster]")
        if self.cluster.overwrite:
            raise HFMixtureError("climb [cluster]: key 'overwrite' is managed by climb itself.")
        if isinstance(self.tokenize, Mapping):
            self.tokenize = dataclass_from_dict(TokenizeSettings, self.tokenize,
                                                where="climb [tokenize]")
        if isinstance(self.search, Mapping):
            self.search = dataclass_from_dict(SearchConfig, {"seed": self.seed, **self.search},
                                              where="climb [search]")


def _fingerprint(obj: Any) -> str:
    return short_hash(obj)


class _Markers:
    """``OUTPUT/.climb/<stage>.json``: which stages finished, with which inputs."""

    def __init__(self, output: Path):
        self.dir = output / ".climb"

    def done(self, stage: str, fingerprint: str, outputs: list[Path]) -> bool:
        path = self.dir / f"{stage}.json"
        if not path.is_file() or not all(p.exists() for p in outputs):
            return False
        try:
            return json.loads(path.read_text()).get("fingerprint") == fingerprint
        except json.JSONDecodeError:
            return False

    def fingerprint(self, stage: str) -> str | None:
        """The fingerprint the stage was last marked with (``None``: never, or unreadable)."""
        try:
            return json.loads((self.dir / f"{stage}.json").read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None

    def mark(self, stage: str, fingerprint: str, seconds: float) -> None:
        atomic_write_json(self.dir / f"{stage}.json", {"fingerprint": fingerprint, "seconds": round(seconds, 1)})


def _cluster_stage(cfg: ClimbConfig, cluster_cfg: Any, out: Path, markers: _Markers) -> Path:
    from .clustering import cluster_corpus
    from .clustering.reader import plan_input

    target = out / "clusters"
    # The input's content (every file's size and mtime, or Hub blob id), never just its path:
    # a replaced input file reclusters.
    plan = plan_input(cfg.input, text_column=cluster_cfg.text_column,
                      config_name=cluster_cfg.dataset_config, split=cluster_cfg.split,
                      shard_rows=cluster_cfg.shard_rows)
    fp = _fingerprint({"input": plan.fingerprint, "config": dataclasses.asdict(cluster_cfg)})
    if markers.done("cluster", fp, [target / "clusters.json"]):
        say(f"[1/4] cluster: up to date ({target})")
        return target
    say(f"[1/4] cluster: embed → k-means → prune → merge → describe → {target}")
    if target.exists() and markers.fingerprint("cluster") not in (None, fp):
        say("      the input or the cluster settings changed since the last run: clustering "
              "again, and every later stage follows")
    start = time.perf_counter()
    # The marker says the old output is stale.
    cluster_corpus(cfg.input, target, dataclasses.replace(cluster_cfg, overwrite=True))
    markers.mark("cluster", fp, time.perf_counter() - start)
    return target


def _tokenizer_for(cfg: ClimbConfig) -> Any:
    if cfg.tokenizer is not None:
        return cfg.tokenizer
    from . import playground

    return playground.tokenizer()


def _tokenize_stage(cfg: ClimbConfig, settings: TokenizeSettings, clusters: Path, out: Path,
                    markers: _Markers) -> Path:
    from .formats.tokenize import tokenize

    target = out / "store"
    say(f"[2/4] tokenize: {clusters} → {target}")
    start = time.perf_counter()
    # tokenize() is idempotent on its own: same inputs and settings leave the store as it is.
    result = tokenize(clusters, target, _tokenizer_for(cfg), seed=cfg.seed, overwrite=True,
                      validation_fraction=settings.validation_fraction, num_proc=settings.num_proc)
    if result.written and markers.fingerprint("tokenize") not in (None, result.fingerprint):
        say(f"      the clusters changed: {target} was written again")
    markers.mark("tokenize", result.fingerprint, time.perf_counter() - start)
    return target


def _search_stage(cfg: ClimbConfig, search_cfg: Any, store: Any, out: Path,
                  markers: _Markers) -> Any:
    from .search import run_search
    from .search.search import SEARCH_FILE

    target = out / "search"
    say(f"[3/4] search: proxy runs → predictor → next round ({target})")
    # climb owns this folder: a search begun on another store (the input, the clusters or the
    # tokenization changed) or with other settings is of no use, so it starts again.
    from .search.config import RESUMABLE_CHANGES

    # what the search may change and still resume (more rounds, workers, ...) is left out
    fp = _fingerprint({"store": store.fingerprint, "target": cfg.target,
                       "settings": {k: v for k, v in search_cfg.to_dict().items()
                                    if k not in RESUMABLE_CHANGES}})
    stale = None
    if (target / SEARCH_FILE).is_file():
        try:
            old = json.loads((target / SEARCH_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        if not isinstance(old, dict) or old.get("store_fingerprint") != store.fingerprint:
            stale = "the token store changed since it began"
        elif markers.fingerprint("search") not in (None, fp):
            stale = "its target or settings changed since it began"
    if stale is not None:
        import shutil

        say(f"      {target} holds an earlier search: {stale}; starting the search again")
        shutil.rmtree(target)
    markers.mark("search", fp, 0.0)  # before it runs: an interrupted search of ours resumes
    # run_search resumes by itself: finished proxy runs are never redone.
    return run_search(store, cfg.target, target, search_cfg)


def _check_before_work(cfg: ClimbConfig) -> None:
    """What the later stages would refuse, refused before the first one runs: the tokenizer
    and the search target (the cluster stage checks its input and models itself)."""
    if cfg.tokenizer is not None:
        from .formats.tokenizers import load_tokenizer

        load_tokenizer(cfg.tokenizer)
    target = str(cfg.target)
    if target in ("mean", "worst"):
        return
    import re

    from .search.target import load_target_texts, resolve_callable

    if not Path(target).exists() and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", target):
        resolve_callable(target)  # "module:function", as the search reads it
    elif Path(target).expanduser().exists():
        load_target_texts(target, text_column=cfg.search.target_text_column,
                          split=cfg.search.target_split)
    elif target.startswith((".", "/", "~")) or Path(target).suffix or target.count("/") > 1:
        raise HFMixtureError(f"climb: target '{target}' is neither 'mean', 'worst', an existing "
                             "text file or folder, a dataset id nor 'module:function'.")


def run_climb(cfg: ClimbConfig) -> dict[str, Any]:
    """Run every stage; returns the paths and the headline numbers it printed."""
    from .formats.token_store import TokenStore
    from .mixture import Mixture

    started = time.perf_counter()
    out = Path(cfg.output)
    cluster_cfg, settings, search_cfg = cfg.cluster, cfg.tokenize, cfg.search
    _check_before_work(cfg)
    markers = _Markers(out)
    clusters = _cluster_stage(cfg, cluster_cfg, out, markers)
    store_path = _tokenize_stage(cfg, settings, clusters, out, markers)
    store = TokenStore(store_path)
    # The run the mixture is for: its length sets the search's repetition caps and the plan.
    total = cfg.plan_tokens or sum(store.num_tokens(c) for c in store.components)
    if search_cfg.run_tokens is None:
        search_cfg = dataclasses.replace(search_cfg, run_tokens=total)
    result = _search_stage(cfg, search_cfg, store, out, markers)
    if result.status == "pending":
        raise HFMixtureError(
            f"The search in '{out / 'search'}' has proxy runs waiting to be run elsewhere; run them, "
            "then rerun `hf-mixture climb` to finish."
        )
    from .search.cli import summary_line
    from .search.search import named_after

    say(f"[4/4] plan: the mixture for a {total:,}-token run → {out / 'plan.md'}")
    say(f"      {summary_line(result)}")
    mixture = Mixture.load(result.mixture_path)
    # Named after the climb folder (the search names it after its own folder, "search"),
    # without doubling: runs/climb gives "climb", runs/out "climb-out".
    mixture = dataclasses.replace(mixture, name=named_after("climb", out))
    mixture.save(out / "mixture.yaml")
    plan = mixture.plan(total, store)
    atomic_write_text(out / "plan.md", plan.to_markdown() + "\n")
    summary = {
        "clusters": str(clusters),
        "store": str(store_path),
        "search": str(out / "search"),
        "mixture": str(out / "mixture.yaml"),
        "plan": str(out / "plan.md"),
        "report": str(result.report_path),
        "cluster_report": str(clusters / "report.md"),
    }
    atomic_write_json(out / "summary.json", summary)
    say()
    say(plan)
    say()
    for key, value in summary.items():
        say(f"{key + ':':16s}{value}")
    minutes = (time.perf_counter() - started) / 60
    say(f"done in {minutes:.1f} min: the mixture is {out / 'mixture.yaml'}, its plan "
          f"{out / 'plan.md'}, the search report {result.report_path}.")
    return summary


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "climb", dataclass_types=[ClimbConfig],
        help="Run the whole chain: cluster → tokenize → search → mixture + report.",
        description="Cluster a corpus (the playground by default), tokenize it, search the best "
                    "mixture with proxy models and write it with its plan and reports.",
        epilog="A --config file may also hold the sections cluster: (ClusterConfig keys), "
               "tokenize: (TokenizeSettings keys) and search: (SearchConfig keys).")
    parser.set_defaults(func=run_climb_command)


def run_climb_command(cfg: ClimbConfig) -> int:
    run_climb(cfg)
    return 0
