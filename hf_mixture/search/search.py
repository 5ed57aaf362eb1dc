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
    FAILED,
    MIXTURE_FILE,
    SPEC,
    STARTED,
    read_result,
    run_proxy,
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

    ``status`` is ``"complete"``, or ``"pending"`` when the external executor left
    ``pending`` run folders for someone else (a Slurm array) to run.
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


# -- executing runs ---------------------------------------------------------------------------
def _gpu_worker_init(queue) -> None:  # pragma: no cover - runs in GPU worker processes
    os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())


def _run_in_worker(run_dir: str, retry_failed: bool) -> dict[str, Any]:
    return run_proxy(run_dir, retry_failed=retry_failed)


def _execute(run_dirs: list[Path], config: SearchConfig, target_fn: Callable | None,
             on_done: Callable[[Path, dict[str, Any]], None]) -> None:
    """Run the pending folders: in this process (one worker) or a spawned process pool."""
    workers = 1 if target_fn is not None else config.resolved_workers()
    if workers == 1 or len(run_dirs) <= 1:
        for run_dir in run_dirs:
            on_done(run_dir, run_proxy(run_dir, target_fn=target_fn,
                                       retry_failed=config.retry_failed))
        return
    import concurrent.futures as cf
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
    initializer, initargs = None, ()
    gpus = 0
    if config.proxy_device in ("auto", "cuda"):
        import torch

        gpus = torch.cuda.device_count()
    if gpus:
        queue = ctx.Queue()
        for i in range(workers):
            queue.put(i % gpus)
        initializer, initargs = _gpu_worker_init, (queue,)
    todo = list(run_dirs)
    while todo:
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                    initializer=initializer, initargs=initargs) as pool:
            futures = {pool.submit(_run_in_worker, str(d), config.retry_failed): d for d in todo}
            todo = []
            for fut in cf.as_completed(futures):
                run_dir = futures[fut]
                try:
                    result = fut.result()
                except cf.process.BrokenProcessPool:
                    # A worker died (out of memory, a segfault).  Runs it had started are
                    # recorded failed; runs still queued go to a fresh pool.
                    if run_status(run_dir) != "pending":
                        result = read_result(run_dir) or {}
                    elif (run_dir / STARTED).is_file():
                        result = {"status": "failed", "run": run_dir.name,
                                  "error": "a proxy worker process died while this run was "
                                           "in flight (out of memory?)"}
                        atomic_write_json(run_dir / FAILED, result)
                        (run_dir / STARTED).unlink(missing_ok=True)
                    else:
                        todo.append(run_dir)
                        continue
                on_done(run_dir, result)


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


def run_search(store: Any, target: Any, output_dir: str | os.PathLike,
               config: SearchConfig | None = None, *, progress: bool = True) -> SearchResult:
    """Run (or resume) a CLIMB mixture search; see the module docstring for the outputs.

    ``store``: a :class:`~hf_mixture.formats.TokenStore` or its path.  ``target``:
    ``"mean"``, ``"worst"``, a text file/folder/dataset id, ``"module:function"`` or a
    callable ``fn(model, tokenizer) -> float`` (see :mod:`hf_mixture.search.target`).
    One search at a time writes a folder (a second one is one sentence: it would train every
    proxy twice).

    >>> run_search("store/", "held_out.jsonl", "out/", SearchConfig(rounds=[8, 4]))  # doctest: +SKIP
    """
    from .._io import output_lock

    with output_lock(output_dir):
        return _run_search(store, target, output_dir, config, progress=progress)


def _run_search(store: Any, target: Any, output_dir: str | os.PathLike,
                config: SearchConfig | None = None, *, progress: bool = True) -> SearchResult:
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
    output_dir.mkdir(parents=True, exist_ok=True)
    spec = prepare_target(target, store, output_dir, seq_len=config.proxy_seq_len,
                          max_tokens=config.target_max_tokens,
                          text_column=config.target_text_column, split=config.target_split,
                          tokenizer=config.tokenizer,
                          greater_is_better=config.target_greater_is_better, seed=config.seed)
    target_fn = getattr(spec, "_fn", None)
    # A callable object is called in this process: proxies then run here one at a time.
    if spec.callable == "<in-process>" and (config.workers > 1 or config.executor != "local"):
        raise HFMixtureError("The target callable cannot be imported by name (a lambda or a "
                             "nested function), so it runs only in-process: set workers to 1 "
                             "and executor to 'local', or pass 'module:function'.")
    _check_or_write_identity(output_dir, _identity(config, store, pool, spec), config.rounds)
    base_spec = {"store": str(Path(store.path).resolve()), "pool": pool.to_dict(),
                 "proxy": settings_dict(config.proxy_settings()), "target": spec.to_dict(),
                 "seed": config.seed}
    rounds_dir = output_dir / "rounds"
    rounds_dir.mkdir(exist_ok=True)
    bar = progress_bar(sum(config.rounds), "proxy runs", "run", progress)
    pending_external: list[str] = []
    for k, size in enumerate(config.rounds, start=1):
        plan_path = rounds_dir / f"round_{k}.json"
        runs = load_runs(output_dir)
        if plan_path.is_file():
            plan = json.loads(plan_path.read_text(encoding="utf-8"))
        else:
            if any(r["status"] == "pending" for r in runs):
                break  # runs of an earlier round are still out (external executor)
            plan = _plan_round(k, size, config, names, prior, caps, runs,
                               spec.greater_is_better)
            atomic_write_json(plan_path, plan)
        folders = []
        for i, (w, predicted) in enumerate(zip(plan["weights"], plan["predicted"])):
            weights = {n: float(x) for n, x in zip(names, w)}
            run_dir = output_dir / "runs" / f"r{k}-{i:03d}"
            run_spec = {**base_spec, "round": k, "index": i, "weights": weights,
                        "predicted": predicted}
            write_run_folder(run_dir, run_spec, _mixture_for(pool, weights, config.seed))
            folders.append(run_dir)
        todo = [d for d in folders if run_status(d) == "pending"
                or (config.retry_failed and run_status(d) == "failed")]
        bar.update(len(folders) - len(todo))
        bar.set_postfix_str(f"round {k}/{len(config.rounds)}")
        if config.executor == "external":
            pending_external = [d.name for d in todo]
            if todo:
                break
            continue

        def done(run_dir: Path, result: dict[str, Any], k: int = k) -> None:
            value = result.get("target")
            bar.set_postfix_str(f"round {k}: {run_dir.name} "
                                + (f"target {value:.4f}" if value is not None else "failed"))
            bar.update(1)
            _write_runs_jsonl(output_dir)

        _execute(todo, config, target_fn, done)
    bar.close()
    runs_path = _write_runs_jsonl(output_dir)
    runs = load_runs(output_dir)
    if pending_external or any(r["status"] == "pending" for r in runs):
        pending = pending_external or [r["run"] for r in runs if r["status"] == "pending"]
        return SearchResult(output_dir, "pending", runs_path=runs_path, runs=runs, pending=pending)
    return _finish(output_dir, config, pool, names, prior, caps, runs, spec, counts, base_spec,
                   target_fn, progress)


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


def _finish(output_dir: Path, config: SearchConfig, pool, names, prior, caps, runs, spec,
            counts, base_spec: dict[str, Any], target_fn: Callable | None = None,
            progress: bool = True) -> SearchResult:
    from .report import write_report

    X, y = _finished_xy(runs, names)
    quality = _quality(X, y, config)
    model, used = _fit(config, X, y, runs, "Choosing the final mixture", quality)
    ok = [r for r in runs if r["status"] == "finished" and r.get("target") is not None]
    best_run = min(ok, key=lambda r: _score(np.array([r["target"]]), spec.greater_is_better)[0])
    found = _final_candidates(config, model, X, names, prior, caps, best_run,
                              spec.greater_is_better)
    verify = (_plan_verification(output_dir, config, pool, names, found, runs, base_spec)
              if config.verify_seeds else {})
    transfer_dirs = _plan_transfer(output_dir, config, pool, base_spec) \
        if config.transfer_check else []
    todo = sorted({d for ds in verify.values() for d in ds} | set(transfer_dirs))
    todo = [d for d in todo if run_status(d) == "pending"
            or (config.retry_failed and run_status(d) == "failed")]
    if todo:
        bar = progress_bar(len(todo), "verification and transfer runs", "run", progress)
        _execute(todo, config, target_fn, lambda d, r: bar.update(1))
        bar.close()
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
    mixture = _mixture_for(pool, weights, config.seed, name=named_after("search", output_dir),
                           description=description, max_epochs=config.max_epochs)
    mixture_path = mixture.save(output_dir / MIXTURE_FILE)
    transfer = (_transfer_quality(transfer_dirs, X, y, runs, names, config)
                if transfer_dirs else None)
    result = SearchResult(output_dir, "complete", mixture=mixture, mixture_path=mixture_path,
                          runs_path=output_dir / "runs.jsonl", runs=runs, quality=quality,
                          predicted_target=predicted, best_run=best_run, predictor=used,
                          verification=verification, transfer=transfer,
                          observed_target=observed)
    natural = counts / counts.sum()
    result.report_path = write_report(output_dir, config, names, natural, runs, quality, spec,
                                      weights, predicted, best_run, used,
                                      verification=verification, transfer=transfer,
                                      labels={c.name: c.label for c in pool.components})
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
            seeds: tuple[int, ...] = (0,), eval_points: int | None = None, workers: int = 0,
            progress: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Train named mixtures like the search's proxies (same store, pool, target, model, tokens).

    For comparisons at equal tokens: e.g. the winner against uniform and natural
    weights over several seeds.  Runs go to ``search_dir/retrain/<name>-seed<s>/``
    and, like every proxy run, are never redone once finished.

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
    bar = progress_bar(len(todo), "retrain", "run", progress)
    config = SearchConfig(workers=workers)
    _execute(todo, config, None, lambda d, r: bar.update(1))
    bar.close()
    return {name: [read_result(d) or {} for d in ds] for name, ds in folders.items()}
