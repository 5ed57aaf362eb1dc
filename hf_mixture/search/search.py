"""The CLIMB search loop: sample mixtures, train proxies, fit a predictor, sample from its top.

Round 1 trains ``rounds[0]`` proxies on mixtures drawn from a Dirichlet around
the pool's token shares (capped by the tokens available, see
:mod:`hf_mixture.search.candidates`).  Each later round fits the predictor on
every finished run, scores ``candidates`` fresh draws, and trains ``rounds[k]``
mixtures drawn at random from the predicted top ``top_fraction``.  After the
last round the three mixtures the search could return — the predicted best
(CLIMB), the average of the predicted top-k (RegMix) and the best finished run —
are trained as proxies too (``verify_seeds`` seeds each) and the best *observed*
one is returned: the answer is always a mixture that was trained.

The output folder holds everything and is the resume point::

    DIR/search.json      settings, store fingerprint, pool and target (checked on resume)
    DIR/target/          the tokenized target text (for a text target)
    DIR/rounds/round_K.json   each round's planned mixtures (and their predicted target)
    DIR/runs/rK-III/     one proxy run folder each (see hf_mixture.search.proxy)
    DIR/runs.jsonl       one JSON object per proxy run: weights, metrics, status
    DIR/verify/          the final candidates' proxy runs (<candidate>-<digest>-seed<S>)
    DIR/transfer/        with transfer_check: round-1 mixtures trained with transfer_model
    DIR/mixture.yaml     the winner (a Mixture)
    DIR/report.md        iteration table, predictor quality, pictures

Finished runs are never redone and a round's plan is written before its runs
start, so rerunning the same command after an interruption continues where it
stopped, with the same mixtures.

>>> result = run_search("store/", "mean", "search_out/", SearchConfig())   # doctest: +SKIP
>>> result.mixture.weights()                                              # doctest: +SKIP
{'cluster_0': 0.21, ...}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_json, atomic_write_text, short_hash
from .._progress import progress_bar
from ..errors import HFMixtureError
from .candidates import dirichlet_candidates, project_to_caps, repetition_caps, token_prior
from .config import RESUMABLE_CHANGES, SearchConfig
from .predictors import (
    cross_validate,
    make_predictor,
    predictor_family,
    predictor_names,
    spearman,
)
from .proxy import (
    MIXTURE_FILE,
    SPEC,
    read_result,
    run_status,
    settings_dict,
    write_run_folder,
)
from .target import TargetSpec, prepare_target

logger = logging.getLogger(__name__)

__all__ = ["SearchResult", "build_pool", "load_runs", "run_folders", "run_search"]

SEARCH_FILE = "search.json"
SEARCH_FORMAT = "hf_mixture.search"


@dataclass
class SearchResult:
    """What :func:`run_search` produced.

    ``status`` is ``"complete"``, or ``"queued"`` when its stages were submitted to Slurm
    (or already were: ``state`` says where the search stands, ``jobs`` are its job ids).
    """

    output_dir: Path
    status: str
    mixture: Any = None
    mixture_path: Path | None = None
    report_path: Path | None = None
    runs_path: Path | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    quality: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    predicted_target: float | None = None
    best_run: dict[str, Any] | None = None
    pending: list[str] = field(default_factory=list)
    #: the Slurm jobs of a queued search, and a sentence saying where it stands
    jobs: list[str] = field(default_factory=list)
    state: str | None = None
    predictor: str | None = None
    #: the final candidates as trained: {"winner": label, "candidates": {label: {...}}} (None
    #: when verify_seeds is 0 and the mixture is a prediction)
    verification: dict[str, Any] | None = None
    #: the transfer check: larger model, runs, each predictor's Spearman (None when off)
    transfer: dict[str, Any] | None = None
    observed_target: float | None = None


# What each final candidate is, in the words of the report.
CANDIDATES = {
    "predicted_best": "the predictor's best candidate (CLIMB)",
    "top_k_average": "the mean of the predicted top-k candidates (RegMix)",
    "best_run": "the best finished proxy run",
}


def named_after(prefix: str, folder: Path) -> str:
    """``prefix-<folder>``, or the folder's own name when it already starts with ``prefix``
    (``search/`` gives "search", not "search-search")."""
    name = folder.resolve().name
    return name if name.startswith(prefix) else f"{prefix}-{name}"


# -- the pool -------------------------------------------------------------------------------
def build_pool(store, config: SearchConfig):
    """The pool as a Mixture (natural weights): the ``pool`` file's components or the store's."""
    from ..mixture import Component, Mixture

    if config.pool:
        pool = Mixture.load(config.pool)
        where = f"Pool mixture '{config.pool}'"
    else:
        pool = None
        where = f"Token store '{store.path}'"
    names = pool.component_names if pool is not None else list(store.components)
    unknown = [n for n in config.exclude if n not in names]
    if unknown:
        raise HFMixtureError(f"Field 'exclude' names {unknown[0]!r}, which is not a pool "
                             f"component; the pool has {', '.join(names)}.")
    keep = [n for n in names if n not in set(config.exclude)]
    if not keep:
        raise HFMixtureError(f"The search pool is empty: {where} has no component left after "
                             f"field 'exclude' ({', '.join(config.exclude) or 'nothing'}).")
    if pool is not None:
        comps = [Component(c.name, c.query, weight=1.0, description=c.description)
                 for c in pool.components if c.name in keep]
    else:
        # The store keeps each cluster's description (clusters.json's top terms): the
        # mixture, report and pictures show it beside the name.
        comps = [Component(n, weight=1.0, description=_store_description(store, n)) for n in keep]
    probe = Mixture(comps, seed=config.seed, name="pool")
    try:
        resolved = probe.resolve(store, "train")
    except HFMixtureError as err:
        raise HFMixtureError(f"{where}: {err}") from None
    tokens = {r.name: r.num_tokens for r in resolved}
    for c in comps:
        c.weight = float(tokens[c.name])
    return Mixture(comps, seed=config.seed, name="pool"), tokens


def _store_description(store, component: str) -> str | None:
    text = (store.info(component) or {}).get("description")
    return text if isinstance(text, str) and text.strip() else None


def _mixture_for(pool, weights: dict[str, float], seed: int, *, name: str | None = None,
                 description: str | None = None, max_epochs: float | None = None):
    from ..mixture import Component, Mixture

    comps = [Component(c.name, c.query, weight=round(float(weights[c.name]), 8),
                       max_epochs=max_epochs, description=c.description) for c in pool.components]
    return Mixture(comps, seed=seed, name=name, description=description)


# -- run folders ------------------------------------------------------------------------------
def run_folders(output_dir: str | os.PathLike) -> list[Path]:
    """Every proxy run folder of a search (those with a spec.json), in name order."""
    root = Path(output_dir) / "runs"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / SPEC).is_file())


def _run_row(run_dir: Path) -> dict[str, Any]:
    spec = json.loads((run_dir / SPEC).read_text(encoding="utf-8"))
    result = read_result(run_dir) or {}
    row = {"run": run_dir.name, "round": spec.get("round"), "index": spec.get("index"),
           "status": result.get("status", "pending"), "weights": spec["weights"],
           "predicted": spec.get("predicted")}
    for key in ("target", "target_name", "mean_domain_loss", "worst_domain_loss", "domains",
                "steps", "tokens", "num_params", "seconds", "tokens_per_second", "error"):
        if key in result:
            row[key] = result[key]
    return row


def load_runs(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per proxy run (what runs.jsonl holds)."""
    return [_run_row(p) for p in run_folders(output_dir)]


def _write_runs_jsonl(output_dir: Path) -> Path:
    rows = load_runs(output_dir)
    return atomic_write_text(output_dir / "runs.jsonl",
                             "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))


# -- run folders as tasks ---------------------------------------------------------------------
FINAL_LISTING = "rounds/final.json"  # the verification and transfer run folders, in task order


def listed_folders(output_dir: Path, listing: str) -> list[Path]:
    """The run folders a :class:`~hf_mixture.search.stages.ProxyTask` stage runs, in task order.

    ``round_K``: the folders of round K's plan; otherwise ``listing`` is a JSON list of run
    folders (relative to ``output_dir``), e.g. :data:`FINAL_LISTING`.
    """
    output_dir = Path(output_dir)
    if listing.startswith("round_"):
        k = int(listing[len("round_"):])
        plan = json.loads((output_dir / "rounds" / f"{listing}.json").read_text(encoding="utf-8"))
        return [output_dir / "runs" / f"r{k}-{i:03d}" for i in range(len(plan["weights"]))]
    path = output_dir / listing
    return [output_dir / rel for rel in json.loads(path.read_text(encoding="utf-8"))]


def _proxy_stage(name: str, output_dir: Path, listing: str, tasks: int, retry_failed: bool,
                 target_fn: Callable | None):
    from ..executors import Stage
    from .stages import ProxyTask

    return Stage(name, [ProxyTask(str(output_dir), listing, listed_folders, retry_failed,
                                  target_fn, stage=name)], tasks, gpu=True)


def _forget_failed(output_dir: Path, stage: str, folders: list[Path]) -> None:
    """Let a finished stage run its failed runs' tasks again (``--retry-failed``)."""
    for i, d in enumerate(folders):
        if run_status(d) == "failed":
            (output_dir / "logs" / stage / "completions" / f"{i:05d}").unlink(missing_ok=True)


# -- the search ---------------------------------------------------------------------------------
def _identity(config: SearchConfig, store, pool, target: TargetSpec) -> dict[str, Any]:
    settings = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    return {"format": SEARCH_FORMAT, "store": str(Path(store.path).resolve()),
            "store_fingerprint": store.fingerprint, "pool": pool.to_dict(),
            "target": {"kind": target.kind, "name": target.name, "callable": target.callable,
                       "facts": target.facts},
            "settings": settings}


def _check_or_write_identity(output_dir: Path, identity: dict[str, Any], rounds: list[int]) -> None:
    path = output_dir / SEARCH_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise HFMixtureError(f"{path} is not valid JSON ({err}).") from None
        for key in ("store_fingerprint", "pool", "target"):
            if old.get(key) != identity[key]:
                raise HFMixtureError(
                    f"Search folder '{output_dir}' holds a search with a different {key}; "
                    "use a new --output to start another search.")
        # A setting added since the folder was started held its default then.
        defaults = {f.name: f.default for f in dataclasses.fields(SearchConfig)}
        for key, value in identity["settings"].items():
            was = old.get("settings", {}).get(key, defaults.get(key))
            if was != value:
                raise HFMixtureError(
                    f"Search folder '{output_dir}' was started with {key} = "
                    f"{was!r}, not {value!r}; use a new --output to start another search.")
        planned = sorted((output_dir / "rounds").glob("round_*.json"))
        if len(planned) > len(rounds):
            raise HFMixtureError(f"Search folder '{output_dir}' already planned {len(planned)} "
                                 f"rounds; field 'rounds' lists only {len(rounds)}.")
    atomic_write_json(path, {**identity, "rounds": rounds})


def _finished_xy(runs: list[dict[str, Any]], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ok = [r for r in runs if r["status"] == "finished" and r.get("target") is not None]
    X = np.array([[r["weights"][n] for n in names] for r in ok], dtype=np.float64).reshape(-1, len(names))
    y = np.array([r["target"] for r in ok], dtype=np.float64)
    return X, y


def _score(values: np.ndarray, greater_is_better: bool) -> np.ndarray:
    """Lower is better after this (the search minimizes)."""
    return -values if greater_is_better else values


def _quality(X: np.ndarray, y: np.ndarray, config: SearchConfig) -> dict[str, dict[str, Any]]:
    """Every registered predictor's held-out Spearman/MAE (or why it could not be measured)."""
    quality: dict[str, dict[str, Any]] = {}
    for name in predictor_names():
        try:
            quality[name] = cross_validate(name, X, y, folds=config.cv_folds,
                                           seed=config.seed).to_dict()
        except HFMixtureError as err:  # too few runs, or loglinear on non-positive values
            quality[name] = {"predictor": name, "error": str(err)}
    return quality


def _choose(quality: dict[str, dict[str, Any]], margin: float = 0.05) -> str:
    """``auto``: the law-based predictor with the best held-out Spearman (then the lowest MAE),
    unless another predictor's Spearman is more than ``margin`` higher; ``linear`` when none
    was measured.

    Cross-validation on same-scale runs rewards whatever fits this scale best, and
    trees fit it best while transferring worst to larger models (RegMix's released runs:
    see docs/search.md); the law's shape is what carries over, so it wins ties.
    """
    scored = {name: (q["spearman"], -q["mae"]) for name, q in quality.items()
              if "error" not in q and q.get("spearman") is not None}
    if not scored:
        return "linear"
    best = max(scored, key=lambda n: (scored[n], n))
    law = [n for n in scored if predictor_family(n) == "law"]
    if not law:
        return best
    best_law = max(law, key=lambda n: (scored[n], n))
    return best if scored[best][0] > scored[best_law][0] + margin else best_law


def _fit(config: SearchConfig, X: np.ndarray, y: np.ndarray, runs: list[dict[str, Any]],
         when: str, quality: dict[str, dict[str, Any]] | None = None):
    """(fitted predictor, its name); ``auto`` picks by cross-validation on these runs."""
    name = config.predictor
    if name == "auto" and len(X) >= 2:
        name = _choose(quality if quality is not None else _quality(X, y, config),
                       config.auto_margin)
    predictor = make_predictor("linear" if name == "auto" else name)
    if len(X) < predictor.min_runs:
        failed = sum(r["status"] == "failed" for r in runs)
        raise HFMixtureError(
            f"{when}: only {len(X)} proxy run(s) finished ({failed} failed; see runs.jsonl), too "
            f"few to fit predictor {config.predictor!r}, which needs {predictor.min_runs}; fix "
            "the cause and rerun (with --retry-failed to run the failed ones again).")
    return predictor.fit(X, y), predictor.name


def _plan_round(k: int, size: int, config: SearchConfig, names: list[str], prior, caps,
                runs: list[dict[str, Any]], greater_is_better: bool) -> dict[str, Any]:
    rng = np.random.default_rng([config.seed, k])
    if k == 1:
        X = dirichlet_candidates(size, prior, concentration=config.dirichlet_concentration,
                                 caps=caps, rng=rng)
        return {"round": k, "weights": X.tolist(), "predicted": [None] * size, "fitted_on": 0}
    X_runs, y_runs = _finished_xy(runs, names)
    model, used = _fit(config, X_runs, y_runs, runs, f"Planning round {k}")
    C = dirichlet_candidates(config.candidates, prior, concentration=config.dirichlet_concentration,
                             caps=caps, rng=rng)
    pred = model.predict(C)
    order = np.argsort(_score(pred, greater_is_better), kind="stable")
    top = order[:max(size, math.ceil(config.top_fraction * len(C)))]
    pick = rng.choice(top, size=min(size, len(top)), replace=False)
    pick = pick[np.argsort(_score(pred[pick], greater_is_better), kind="stable")]
    return {"round": k, "weights": C[pick].tolist(), "predicted": pred[pick].tolist(),
            "fitted_on": len(X_runs), "predictor": used}


def _check_models(config: SearchConfig) -> None:
    """The proxy (and transfer) model and the tokenizer, checked before anything is recorded."""
    from .proxy import check_proxy_model

    check_proxy_model(config.proxy_model, config.proxy_init_from, "proxy_model")
    if config.transfer_check:
        check_proxy_model(config.transfer_model, None, "transfer_model")
    if config.tokenizer is not None:
        from ..formats.tokenizers import load_tokenizer

        load_tokenizer(config.tokenizer)


def run_search(store: Any, target: Any, output_dir: str | os.PathLike,
               config: SearchConfig | None = None, *, executor: Any = None,
               progress: bool = True) -> SearchResult:
    """Run (or resume) a CLIMB mixture search; see the module docstring for the outputs.

    ``store``: a :class:`~hf_mixture.formats.TokenStore` or its path.  ``target``:
    ``"mean"``, ``"worst"``, a text file/folder/dataset id, ``"module:function"`` or a
    callable ``fn(model, tokenizer) -> float`` (see :mod:`hf_mixture.search.target`).
    ``executor``: an :class:`~hf_mixture.executors.ExecutorConfig` (default: local, one
    proxy per core or GPU).  Every round is a datatrove stage (see
    :mod:`hf_mixture.search.stages`); local and Ray run the chain to the end here, Slurm
    submits it at once and returns ``status == "queued"`` (the output stays locked until its
    last stage ends; a rerun meanwhile returns the search's state and submits nothing).
    One search at a time writes a folder (a second one would train every proxy twice).

    >>> run_search("store/", "held_out.jsonl", "out/", SearchConfig(rounds=[8, 4]))  # doctest: +SKIP
    """
    from .._io import OutputBusy, output_lock
    from ..executors import ExecutorConfig, slurm_jobs_alive

    executor = executor if executor is not None else ExecutorConfig()
    if not isinstance(executor, ExecutorConfig):
        raise HFMixtureError(f"executor must be an ExecutorConfig, got {type(executor).__name__}.")
    if executor.tasks is not None:
        raise HFMixtureError("--tasks does not apply to hf-mixture search: each round's stage "
                             "has one task per proxy run (use --workers to bound how many run "
                             "at once).")
    try:
        with output_lock(output_dir, jobs_alive=slurm_jobs_alive) as lock:
            return _run_search(store, target, output_dir, config, executor, lock,
                               progress=progress)
    except OutputBusy as busy:
        if not busy.holder.get("jobs"):
            raise
        return _queued(Path(output_dir), busy.holder["jobs"], submitted=False)


@dataclass
class _Search:
    """What every step of one search needs (rebuilt in each task from the search folder)."""

    output_dir: Path
    config: SearchConfig
    store: Any
    pool: Any
    names: list[str]
    counts: np.ndarray
    prior: np.ndarray
    caps: np.ndarray
    spec: TargetSpec
    base_spec: dict[str, Any]


def _setup(store: Any, target: Any, output_dir: str | os.PathLike,
           config: SearchConfig | None, *, write: bool = True) -> _Search:
    from ..formats.token_store import TokenStore

    config = config or SearchConfig()
    if not isinstance(config, SearchConfig):
        raise HFMixtureError(f"config must be a SearchConfig, got {type(config).__name__}.")
    if config.predictor != "auto" and config.predictor not in predictor_names():
        raise HFMixtureError(f"Field 'predictor' is {config.predictor!r}; use 'auto' or a "
                             f"registered predictor: {', '.join(predictor_names())}.")
    if isinstance(store, (str, os.PathLike)):
        store = TokenStore(store)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise HFMixtureError(f"Output '{output_dir}' exists and is not a folder.")
    pool, tokens = build_pool(store, config)
    names = pool.component_names
    counts = np.array([tokens[n] for n in names], dtype=np.float64)
    prior = token_prior(counts, config.prior_temperature) if config.prior == "natural" \
        else np.full(len(names), 1.0 / len(names))
    caps = repetition_caps(counts, config.run_tokens or config.proxy_tokens, config.max_epochs)
    _check_models(config)
    output_dir.mkdir(parents=True, exist_ok=True)
    spec = prepare_target(target, store, output_dir, seq_len=config.proxy_seq_len,
                          max_tokens=config.target_max_tokens,
                          text_column=config.target_text_column, split=config.target_split,
                          tokenizer=config.tokenizer,
                          greater_is_better=config.target_greater_is_better, seed=config.seed)
    if write:
        _check_or_write_identity(output_dir, _identity(config, store, pool, spec), config.rounds)
        (output_dir / "rounds").mkdir(exist_ok=True)
    base_spec = {"store": str(Path(store.path).resolve()), "pool": pool.to_dict(),
                 "proxy": settings_dict(config.proxy_settings()), "target": spec.to_dict(),
                 "seed": config.seed}
    return _Search(output_dir, config, store, pool, names, counts, prior, caps, spec, base_spec)


def _round_folders(ctx: _Search, k: int) -> list[Path]:
    """Round ``k``'s plan (written once: a resumed search keeps its mixtures) and run folders."""
    config, output_dir = ctx.config, ctx.output_dir
    plan_path = output_dir / "rounds" / f"round_{k}.json"
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
    else:
        runs = load_runs(output_dir)
        waiting = [r["run"] for r in runs if r["status"] == "pending"]
        if waiting:
            raise HFMixtureError(f"Planning round {k}: proxy run {waiting[0]} of an earlier "
                                 "round has not run; rerun the search to run it first.")
        plan = _plan_round(k, config.rounds[k - 1], config, ctx.names, ctx.prior, ctx.caps, runs,
                           ctx.spec.greater_is_better)
        atomic_write_json(plan_path, plan)
    folders = []
    for i, (w, predicted) in enumerate(zip(plan["weights"], plan["predicted"])):
        weights = {n: float(x) for n, x in zip(ctx.names, w)}
        run_dir = output_dir / "runs" / f"r{k}-{i:03d}"
        write_run_folder(run_dir, {**ctx.base_spec, "round": k, "index": i, "weights": weights,
                                   "predicted": predicted},
                         _mixture_for(ctx.pool, weights, config.seed))
        folders.append(run_dir)
    return folders


def search_step(store: str, target: Any, output_dir: str, config: SearchConfig, phase: str,
                k: int | None = None) -> None:
    """One step of the search chain, as a task runs it (see :mod:`hf_mixture.search.stages`)."""
    ctx = _setup(store, target, output_dir, config, write=False)
    if phase == "round":
        _round_folders(ctx, int(k))
        _write_runs_jsonl(ctx.output_dir)
    elif phase == "final":
        _write_runs_jsonl(ctx.output_dir)
        _plan_final(ctx)
    elif phase == "finish":
        _finish(ctx)
    else:  # pragma: no cover - the stages are built here
        raise ValueError(f"unknown search phase {phase!r}")


def _final_bound(config: SearchConfig) -> int:
    """Tasks of the final proxy stage: at most every candidate x seed, plus the transfer runs."""
    transfer = min(config.transfer_runs, config.rounds[0]) if config.transfer_check else 0
    return len(CANDIDATES) * config.verify_seeds + transfer


def _final_key(config: SearchConfig) -> str:
    """What the final stages depend on besides the runs: a change plans them afresh."""
    keys = ("rounds", "final", "final_top_k", "cv_folds", "verify_seeds", "transfer_check",
            "transfer_model", "transfer_runs", "predictor", "auto_margin")
    return short_hash({k: getattr(config, k) for k in keys})[:8]


def _stages(ctx: _Search, executor, target_fn: Callable | None, *, finish: bool) -> list:
    """The search as a chain of stages (the finish stage only when it runs elsewhere)."""
    from ..executors import Stage
    from .stages import PlanStep

    config, out = ctx.config, ctx.output_dir
    store = str(Path(ctx.store.path).resolve())
    target = ctx.spec

    def plan(name: str, phase: str, k: int | None = None) -> Stage:
        return Stage(name, [PlanStep(search_step, store, target, str(out), config, phase, k)], 1)

    stages = []
    for k, size in enumerate(config.rounds, start=1):
        stages.append(plan(f"plan-r{k}", "round", k))
        stages.append(_proxy_stage(f"proxies-r{k}", out, f"round_{k}", size,
                                   config.retry_failed, target_fn))
        if config.retry_failed and (out / "rounds" / f"round_{k}.json").is_file():
            _forget_failed(out, f"proxies-r{k}", listed_folders(out, f"round_{k}"))
    key = _final_key(config)
    final = []
    if _final_bound(config):
        final += [plan(f"plan-final-{key}", "final"),
                  _proxy_stage(f"proxies-final-{key}", out, FINAL_LISTING, _final_bound(config),
                               config.retry_failed, target_fn)]
    if finish:
        final.append(plan(f"finish-{key}", "finish"))
    if config.retry_failed:  # what follows a retried run is planned again from all the runs
        import shutil

        for stage in final:
            shutil.rmtree(out / "logs" / stage.name / "completions", ignore_errors=True)
    return stages + final


def _run_search(store: Any, target: Any, output_dir: str | os.PathLike,
                config: SearchConfig | None, executor, lock: Path, *,
                progress: bool = True) -> SearchResult:
    import dataclasses as dc

    from ..executors import check_executor, run_stages, submit_locked

    check_executor(executor)  # a bad partition, env command or Ray address: before any work
    ctx = _setup(store, target, output_dir, config)
    config = ctx.config
    target_fn = getattr(ctx.spec, "_fn", None)
    if target_fn is not None and executor.executor == "local":
        executor = dc.replace(executor, workers=1)  # a callable object runs in this process
    elif target_fn is not None and ctx.spec.callable == "<in-process>":
        raise HFMixtureError("The target callable cannot be imported by name (a lambda or a "
                             "nested function), so it runs only in this process: use "
                             "--executor local, or pass 'module:function'.")
    else:
        target_fn = None  # imported by name in each task
    if executor.executor == "local" and executor.workers is None:
        executor = dc.replace(executor, workers=config.default_workers())
    output_dir = ctx.output_dir
    if executor.executor == "slurm":
        stages = _stages(ctx, executor, None, finish=True)
        jobs = submit_locked(executor, stages, output_dir, lock)
        if jobs:
            return _queued(output_dir, jobs, submitted=True)
        return _finish(ctx)  # every stage had finished: the result is on disk
    stages = _stages(ctx, executor, target_fn, finish=False)
    from .._progress import stage_progress

    for i, stage in enumerate(stages, start=1):
        runs = stage.name.startswith("proxies-")  # the bar counts proxy runs, else the time
        with stage_progress(f"search [{i}/{len(stages)}] {stage.name}", "run" if runs else None,
                            stage.tasks if runs else None, output_dir, stage.name, progress):
            run_stages(executor, [stage], output_dir)
    _write_runs_jsonl(output_dir)
    return _finish(ctx)


def _queued(output_dir: Path, jobs: list[str], *, submitted: bool) -> SearchResult:
    """Where a search on Slurm stands: its rounds, runs finished / failed / pending, its jobs."""
    from ..executors import slurm_job_states

    runs = load_runs(output_dir)
    verify = [read_result(d) for d in listed_folders(output_dir, FINAL_LISTING)] \
        if (output_dir / FINAL_LISTING).is_file() else []
    planned = len(list((output_dir / "rounds").glob("round_*.json")))
    try:
        rounds = json.loads((output_dir / SEARCH_FILE).read_text(encoding="utf-8"))["rounds"]
    except (OSError, json.JSONDecodeError, KeyError):
        rounds = []
    count = {s: sum(r["status"] == s for r in runs) for s in ("finished", "failed", "pending")}
    states = slurm_job_states(jobs)
    alive = ", ".join(f"{j} {states[j].lower()}" for j in jobs if j in states) or "none"
    where = (f"round {planned} of {len(rounds) or '?'} planned; proxy runs {count['finished']} "
             f"finished, {count['failed']} failed, {count['pending']} pending")
    if verify:
        where += (f"; final runs {sum(bool(r) and r.get('status') == 'finished' for r in verify)}"
                  f" of {len(verify)} finished")
    what = "submitted" if submitted else "already queued; nothing submitted"
    state = f"Search '{output_dir}' {what} on Slurm (jobs: {alive}): {where}."
    return SearchResult(output_dir, "queued", runs_path=output_dir / "runs.jsonl", runs=runs,
                        pending=[r["run"] for r in runs if r["status"] == "pending"],
                        jobs=list(jobs), state=state)


def _digest(weights: np.ndarray) -> str:
    """A short name for a mixture's weights (rounded like the run folders' mixtures)."""
    text = json.dumps([round(float(v), 8) for v in weights])
    return short_hash(text)[:8]


def _same_weights(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.max(np.abs(np.asarray(a) - np.asarray(b))) < 1e-7)


def _final_candidates(config: SearchConfig, model, X: np.ndarray, names: list[str], prior, caps,
                      best_run: dict[str, Any], greater_is_better: bool) -> dict[str, np.ndarray]:
    """The mixtures the search could return, each within the repetition caps."""
    rng = np.random.default_rng([config.seed, len(config.rounds) + 1])
    C = dirichlet_candidates(config.candidates, prior, concentration=config.dirichlet_concentration,
                             caps=caps, rng=rng)
    C = np.vstack([C, X])  # the mixtures actually trained compete too
    order = np.argsort(_score(model.predict(C), greater_is_better), kind="stable")
    found = {"predicted_best": C[order[0]],
             "top_k_average": C[order[:config.final_top_k]].mean(axis=0),
             "best_run": np.array([best_run["weights"][n] for n in names])}
    return {label: project_to_caps(w[None, :], caps)[0] for label, w in found.items()}


def _plan_verification(output_dir: Path, config: SearchConfig, pool, names: list[str],
                       found: dict[str, np.ndarray], runs: list[dict[str, Any]],
                       base_spec: dict[str, Any]) -> dict[str, list[Path]]:
    """Run folders per candidate and seed; a finished proxy run of the same weights and seed
    (the best run, or a predicted best that was trained in a round) is used as it is.

    Folder names carry a digest of the weights, so a resumed search finds its finished
    verification runs, and a search whose rounds were extended (other candidates) does
    not mistake old ones for new.
    """
    seeds = [config.seed + i for i in range(config.verify_seeds)]
    trained = [r for r in runs if r["status"] == "finished" and r.get("target") is not None]
    folders: dict[str, list[Path]] = {}
    for label, w in found.items():
        for seed in seeds:
            same = [r for r in trained if seed == config.seed
                    and _same_weights([r["weights"][n] for n in names], w)]
            if same:
                folders.setdefault(label, []).append(output_dir / "runs" / same[0]["run"])
                continue
            run_dir = output_dir / "verify" / f"{label}-{_digest(w)}-seed{seed}"
            weights = {n: float(x) for n, x in zip(names, w)}
            write_run_folder(run_dir, {**base_spec, "round": None, "index": None, "seed": seed,
                                       "label": label, "predicted": None, "weights": weights},
                             _mixture_for(pool, weights, seed))
            folders.setdefault(label, []).append(run_dir)
    return folders


def _plan_transfer(output_dir: Path, config: SearchConfig, pool, base_spec: dict[str, Any]
                   ) -> list[Path]:
    """The first ``transfer_runs`` round-1 mixtures again, with the larger ``transfer_model``."""
    first = [p for p in run_folders(output_dir) if p.name.startswith("r1-")][:config.transfer_runs]
    proxy = {**base_spec["proxy"], "model": config.transfer_model, "init_from": None}
    folders = []
    for small in first:
        spec = json.loads((small / SPEC).read_text(encoding="utf-8"))
        run_dir = output_dir / "transfer" / small.name
        write_run_folder(run_dir, {**spec, "proxy": proxy, "label": "transfer",
                                   "small_run": small.name},
                         _mixture_for(pool, spec["weights"], int(spec["seed"])))
        folders.append(run_dir)
    return folders


def _transfer_quality(folders: list[Path], X: np.ndarray, y: np.ndarray, runs, names,
                      config: SearchConfig) -> dict[str, Any]:
    """How well predictors fitted on every small proxy rank the larger runs (Spearman)."""
    rows = [(p, read_result(p)) for p in folders]
    ok = [(p, r) for p, r in rows if r and r.get("status") == "finished"]
    small = {r["run"]: r for r in runs}
    W = np.array([[r["weights"][n] for n in names] for _, r in ok]).reshape(-1, len(names))
    large = np.array([r["target"] for _, r in ok], dtype=np.float64)
    observed = [small.get(p.name, {}).get("target") for p, _ in ok]
    out: dict[str, Any] = {
        "model": config.transfer_model, "runs": [p.name for p, _ in ok],
        "failed": [p.name for p, r in rows if not r or r.get("status") != "finished"],
        "num_params": ok[0][1].get("num_params") if ok else None,
        "small_num_params": next((r.get("num_params") for r in runs if r.get("num_params")), None),
        "large_targets": large.tolist(),
        # The small runs' own losses: how much of the ranking survives the change of scale.
        "observed_spearman": (spearman(np.array(observed, dtype=np.float64), large)
                              if ok and None not in observed else None),
        "spearman": {}, "errors": {}}
    if len(ok) < 3:
        out["errors"]["all"] = f"only {len(ok)} transfer run(s) finished; 3 are needed"
        return out
    # Each larger run is predicted by a fit that never saw its mixture at the small scale:
    # the question is whether unseen mixtures are ranked right at the larger scale.
    trained = [r for r in runs if r["status"] == "finished" and r.get("target") is not None]
    for name in predictor_names():
        try:
            pred = []
            for p, _ in ok:
                keep = np.array([r["run"] != p.name for r in trained])
                pred.append(float(make_predictor(name).fit(X[keep], y[keep])
                                  .predict(W[len(pred)][None, :])[0]))
            out["spearman"][name] = spearman(np.array(pred), large)
        except HFMixtureError as err:
            out["errors"][name] = str(err)
    return out


def _plan_final(ctx: _Search) -> dict[str, Any]:
    """Fit on every finished run, pick the final candidates, write their run folders and
    :data:`FINAL_LISTING` (deterministic: the finish step recomputes the same plan)."""
    config, output_dir = ctx.config, ctx.output_dir
    runs = load_runs(output_dir)
    X, y = _finished_xy(runs, ctx.names)
    quality = _quality(X, y, config)
    model, used = _fit(config, X, y, runs, "Choosing the final mixture", quality)
    ok = [r for r in runs if r["status"] == "finished" and r.get("target") is not None]
    best_run = min(ok, key=lambda r: _score(np.array([r["target"]]),
                                            ctx.spec.greater_is_better)[0])
    found = _final_candidates(config, model, X, ctx.names, ctx.prior, ctx.caps, best_run,
                              ctx.spec.greater_is_better)
    verify = (_plan_verification(output_dir, config, ctx.pool, ctx.names, found, runs,
                                 ctx.base_spec) if config.verify_seeds else {})
    transfer_dirs = _plan_transfer(output_dir, config, ctx.pool, ctx.base_spec) \
        if config.transfer_check else []
    listing = sorted({d for ds in verify.values() for d in ds} | set(transfer_dirs))
    atomic_write_json(output_dir / FINAL_LISTING,
                      [d.relative_to(output_dir).as_posix() for d in listing])
    return {"runs": runs, "X": X, "y": y, "quality": quality, "model": model, "used": used,
            "ok": ok, "best_run": best_run, "found": found, "verify": verify,
            "transfer_dirs": transfer_dirs, "listing": listing}


def _finish(ctx: _Search) -> SearchResult:
    from .report import write_report

    config, output_dir, names, spec = ctx.config, ctx.output_dir, ctx.names, ctx.spec
    final = _plan_final(ctx)
    runs, X, y, quality, model, used, ok, best_run, found, verify, transfer_dirs = (
        final[k] for k in ("runs", "X", "y", "quality", "model", "used", "ok", "best_run",
                           "found", "verify", "transfer_dirs"))
    waiting = [d.name for d in final["listing"] if run_status(d) == "pending"]
    if waiting:
        raise HFMixtureError(f"Final proxy run {waiting[0]} has not run ({len(waiting)} "
                             "waiting); rerun the search to run it.")
    predicted_of = {label: float(model.predict(w[None, :])[0]) for label, w in found.items()}
    verification = None
    if verify:
        candidates: dict[str, dict[str, Any]] = {}
        for label, folders in verify.items():
            results = [read_result(d) or {} for d in folders]
            values = [r["target"] for r in results
                      if r.get("status") == "finished" and r.get("target") is not None]
            observed = float(np.mean(values)) if values else None
            candidates[label] = {
                "what": CANDIDATES[label], "weights": dict(zip(names, found[label].tolist())),
                "predicted": predicted_of[label], "observed": observed,
                "observed_per_seed": values,
                "error": None if observed is None else predicted_of[label] - observed,
                "runs": [str(d.relative_to(output_dir)) for d in folders]}
        measured = [lb for lb in CANDIDATES if candidates[lb]["observed"] is not None]
        if not measured:
            raise HFMixtureError(f"Every verification run of the final candidates failed (see "
                                 f"'{output_dir / 'verify'}'); fix the cause and rerun with "
                                 "--retry-failed.")
        winner = min(measured, key=lambda lb: _score(np.array([candidates[lb]["observed"]]),
                                                     spec.greater_is_better)[0])
        verification = {"winner": winner, "seeds": config.verify_seeds, "candidates": candidates}
    else:
        winner = config.final
    w = found[winner]
    predicted = predicted_of[winner]
    observed = verification["candidates"][winner]["observed"] if verification else None
    weights = {n: float(x) for n, x in zip(names, w)}
    if verification:
        seeds = config.verify_seeds
        description = (
            f"Found by a CLIMB search (hf-mixture search): target '{spec.name}', predictor "
            f"{used}, {len(ok)} proxy runs. Verified: of the predicted best, the top-"
            f"{config.final_top_k} average and the best run, each trained as a proxy "
            f"({seeds} seed{'s' if seeds > 1 else ''}), {winner} won with observed target "
            f"{observed:.4f} (predicted {predicted:.4f}, the predictor off by "
            f"{predicted - observed:+.4f}).")
    else:
        description = (f"Found by a CLIMB search (hf-mixture search): target '{spec.name}', "
                       f"predictor {used}, {len(ok)} proxy runs, final = {config.final}: a "
                       f"prediction ({predicted:.4f}), not trained (verify_seeds 0).")
    mixture = _mixture_for(ctx.pool, weights, config.seed, name=named_after("search", output_dir),
                           description=description, max_epochs=config.max_epochs)
    mixture_path = mixture.save(output_dir / MIXTURE_FILE)
    transfer = (_transfer_quality(transfer_dirs, X, y, runs, names, config)
                if transfer_dirs else None)
    result = SearchResult(output_dir, "complete", mixture=mixture, mixture_path=mixture_path,
                          runs_path=output_dir / "runs.jsonl", runs=runs, quality=quality,
                          predicted_target=predicted, best_run=best_run, predictor=used,
                          verification=verification, transfer=transfer,
                          observed_target=observed)
    natural = ctx.counts / ctx.counts.sum()
    result.report_path = write_report(output_dir, config, names, natural, runs, quality, spec,
                                      weights, predicted, best_run, used,
                                      verification=verification, transfer=transfer,
                                      labels={c.name: c.label for c in ctx.pool.components})
    atomic_write_json(output_dir / "result.json", {
        "mixture": str(mixture_path.name), "weights": weights, "predicted_target": predicted,
        "observed_target": observed, "winner": winner,
        "target": spec.name, "greater_is_better": spec.greater_is_better, "predictor": used,
        "best_run": {"run": best_run["run"], "target": best_run["target"],
                     "weights": best_run["weights"]},
        "verification": verification, "transfer": transfer,
        "quality": {k: ({kk: vv for kk, vv in v.items() if kk not in ("predicted", "actual")}
                        if v else None) for k, v in quality.items()},
        "runs": {"finished": len(ok), "failed": sum(r["status"] == "failed" for r in runs)},
    })
    return result


def retrain(search_dir: str | os.PathLike, mixtures: dict[str, dict[str, float]], *,
            seeds: tuple[int, ...] = (0,), eval_points: int | None = None, executor: Any = None,
            progress: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Train named mixtures like the search's proxies (same store, pool, target, model, tokens).

    For comparisons at equal tokens: e.g. the winner against uniform and natural
    weights over several seeds.  Runs go to ``search_dir/retrain/<name>-seed<s>/``
    and, like every proxy run, are never redone once finished; they run as one stage on
    ``executor`` (an :class:`~hf_mixture.executors.ExecutorConfig`; default local, one run
    per core or GPU).

    >>> retrain("search_out", {"winner": w, "uniform": u}, seeds=(0, 1, 2))   # doctest: +SKIP
    {'winner': [{'status': 'finished', 'target': 5.1, ...}, ...], 'uniform': [...]}
    """
    from ..mixture import Mixture

    search_dir = Path(search_dir)
    runs = run_folders(search_dir)
    if not runs:
        raise HFMixtureError(f"'{search_dir}' holds no proxy runs to copy settings from; run "
                             "the search first.")
    base = json.loads((runs[0] / SPEC).read_text(encoding="utf-8"))
    pool = Mixture.from_dict(base["pool"])
    if eval_points is not None:
        base["proxy"] = {**base["proxy"], "eval_points": int(eval_points)}
    folders: dict[str, list[Path]] = {}
    for name, weights in mixtures.items():
        missing = [n for n in pool.component_names if n not in weights]
        if missing:
            raise HFMixtureError(f"Mixture {name!r} gives no weight to pool component "
                                 f"{missing[0]!r}.")
        for seed in seeds:
            run_dir = search_dir / "retrain" / f"{name}-seed{seed}"
            spec = {**base, "round": None, "index": None, "seed": int(seed), "label": name,
                    "predicted": None, "weights": {n: float(weights[n]) for n in pool.component_names}}
            write_run_folder(run_dir, spec, _mixture_for(pool, spec["weights"], int(seed)))
            folders.setdefault(name, []).append(run_dir)
    todo = [d for ds in folders.values() for d in ds if run_status(d) == "pending"]
    if todo:
        import dataclasses as dc

        from ..executors import ExecutorConfig, check_executor, run_stages, submit_stages

        executor = executor if executor is not None else ExecutorConfig()
        if executor.executor == "local" and executor.workers is None:
            settings = base["proxy"]
            executor = dc.replace(executor, workers=SearchConfig(
                proxy_threads=int(settings.get("threads", 1)),
                proxy_device=settings.get("device", "auto")).default_workers())
        check_executor(executor)
        rel = [d.relative_to(search_dir).as_posix() for d in todo]
        listing = f"retrain/todo-{short_hash(rel)[:8]}.json"
        atomic_write_json(search_dir / listing, rel)
        stage = _proxy_stage(f"retrain-{short_hash(rel)[:8]}", search_dir, listing, len(todo),
                             False, None)
        if executor.executor == "slurm":
            jobs = submit_stages(executor, [stage], search_dir)
            logger.warning("retrain: %d proxy runs submitted to Slurm (jobs %s); call retrain "
                           "again once they finished to read them", len(todo), ", ".join(jobs))
        else:
            with progress_bar(1, "retrain", "stage", progress) as bar:
                run_stages(executor, [stage], search_dir)
                bar.update(1)
    return {name: [read_result(d) or {} for d in ds] for name, ds in folders.items()}
