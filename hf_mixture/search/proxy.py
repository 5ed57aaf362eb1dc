"""Proxy runs: a small Llama trained on one mixture, measured on every domain and the target.

A proxy run is a folder::

    RUN/
      spec.json      what to train: store, pool, weights, model, tokens, seed, target
      mixture.yaml   the mixture trained on (a Mixture file)
      log.jsonl      the Trainer's log history (loss, learning rate, ...)
      metrics.json   written last, atomically: status "finished", final and per-step
                     losses (field ``curve``), parameters, tokens, timing
      failed.json    instead of metrics.json when the run raised: status "failed", error

:func:`run_proxy` trains from scratch (or from ``init_from``) with
:class:`~hf_mixture.mixture.MixtureTrainer` over a
:class:`~hf_mixture.mixture.MixtureDataset` — the same sampler and Trainer a user
trains with.  At ``eval_points`` steps (geometrically spaced, the last one at
the end) it records each domain's validation loss (the pool components'
held-out slices of the store) and the target, so one run gives a loss-vs-steps
curve for :mod:`hf_mixture.search.laws`.  A folder with ``metrics.json`` is
finished and never run again.

One folder runs on its own (a Slurm array task, say) with::

    hf-mixture search-run SEARCH_DIR --index $SLURM_ARRAY_TASK_ID

>>> run_proxy("search_out/runs/r1-000")        # doctest: +SKIP
{'status': 'finished', 'target': 4.87, ...}
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_json, atomic_write_text
from ..errors import HFMixtureError
from ..models import SHAPES, build_model, count_parameters

logger = logging.getLogger(__name__)

SPEC, METRICS, FAILED, LOG, MIXTURE_FILE = ("spec.json", "metrics.json", "failed.json",
                                            "log.jsonl", "mixture.yaml")
STARTED = ".started"  # present while a process trains the run (tells a crash from a queue)

# Where SearchConfig.gpu() reads CLIMB's GPU proxy training (a repository file, like every
# recipe: pass another recipe to use a different one).
PROXY_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "proxy.yaml"
# Model keys of a proxy recipe that the search sets itself: the vocabulary is the token
# store's, the context is proxy seq_len, and the attention is transformers' default (sdpa).
_PROXY_SET_KEYS = ("vocab_size", "max_position_embeddings", "attn_implementation")


@dataclass
class ProxySettings:
    """How every proxy of a search trains (a slice of :class:`~hf_mixture.search.SearchConfig`,
    whose ``proxy_*`` fields take their defaults from here)."""

    model: str = "cpu-1m"
    init_from: str | None = None
    tokens: int = 150_000
    seq_len: int = 128
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    # 5e-3 with 10% warm-up: at 1e-2 two near-identical mixtures ended 0.4 nats apart (a tiny
    # model escapes the unigram plateau or not, by chance); at 5e-3 they end 0.02 apart.
    learning_rate: float = 5e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 0.0
    eval_points: int = 5
    eval_tokens: int = 2048
    threads: int = 1
    device: str = "auto"
    bf16: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxySettings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def recipe_fields(cls, path: str | os.PathLike = PROXY_RECIPE) -> dict[str, Any]:
        """The proxy training of a ``hf-mixture train`` recipe (``recipes/proxy.yaml``).

        Read from it: the shape (``model.shape``), ``data.seq_len``, the per-device batch
        and ``global_batch_size`` (one process: accumulation = global / per device), the
        length (``max_steps`` x global batch x seq_len tokens), learning rate, warm-up
        (as a fraction of the steps), weight decay and bf16.

        >>> ProxySettings.recipe_fields()["model"]          # doctest: +SKIP
        '62m'
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            raise HFMixtureError(f"The proxy recipe '{path}' does not exist (SearchConfig.gpu() "
                                 "reads recipes/proxy.yaml of the hf_mixture repository; pass "
                                 "recipe=PATH).")
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        model = dict(recipe.get("model") or {})
        train = dict(recipe.get("training") or {})
        name = model.pop("shape", None)
        extra = sorted(set(model) - set(_PROXY_SET_KEYS))
        if not isinstance(name, str) or extra:
            raise HFMixtureError(f"{path}: a search proxy is a registered shape: the model section "
                                 f"needs model.shape and no other shape fields (has "
                                 f"{', '.join(extra) or 'no shape'}).")
        missing = [k for k in ("per_device_train_batch_size", "global_batch_size", "max_steps",
                               "learning_rate") if k not in train]
        if missing or "seq_len" not in (recipe.get("data") or {}):
            raise HFMixtureError(f"{path}: a proxy recipe states data.seq_len and training."
                                 f"{', training.'.join(missing or ['max_steps'])}.")
        per_device, global_batch = int(train["per_device_train_batch_size"]), \
            int(train["global_batch_size"])
        if global_batch % per_device:
            raise HFMixtureError(f"{path}: training.global_batch_size {global_batch} is not a "
                                 f"multiple of per_device_train_batch_size {per_device}.")
        seq_len, steps = int(recipe["data"]["seq_len"]), int(train["max_steps"])
        return {"model": name, "seq_len": seq_len, "batch_size": per_device,
                "gradient_accumulation_steps": global_batch // per_device,
                "tokens": steps * global_batch * seq_len,
                "learning_rate": float(train["learning_rate"]),
                "warmup_fraction": float(train.get("warmup_steps", 0)) / steps,
                "weight_decay": float(train.get("weight_decay", 0.0)),
                "bf16": bool(train.get("bf16", False))}

    @property
    def sequences_per_step(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.tokens / (self.sequences_per_step * self.seq_len)))


def eval_steps(total_steps: int, points: int) -> list[int]:
    """``points`` distinct steps, geometric from ~10% of the run to its end (last = total).

    >>> eval_steps(100, 4)
    [10, 22, 46, 100]
    """
    if points <= 1 or total_steps <= 1:
        return [total_steps]
    start = max(1, round(total_steps * 0.1))
    steps = np.unique(np.round(np.geomspace(start, total_steps, points)).astype(int))
    return [int(s) for s in steps]


def proxy_model(settings: ProxySettings, vocab_size: int, seed: int):
    """The proxy model: a registered shape, a config file/folder, or ``init_from`` weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if settings.init_from:
        path = Path(settings.init_from)
        if not path.is_dir():
            raise HFMixtureError(f"proxy_init_from '{path}' is not a model folder.")
        model = AutoModelForCausalLM.from_pretrained(str(path))
    elif settings.model in SHAPES:
        model = build_model({"shape": settings.model, "vocab_size": vocab_size,
                             "max_position_embeddings": settings.seq_len}, seed=seed,
                            where=f"proxy_model {settings.model!r}")
    else:
        path = Path(settings.model)
        if not path.exists():
            raise HFMixtureError(
                f"proxy_model {settings.model!r} is neither a registered shape "
                f"({', '.join(SHAPES)}) nor a config file/folder.")
        try:
            config = AutoConfig.from_pretrained(str(path))
        except (OSError, ValueError) as err:
            raise HFMixtureError(f"proxy_model '{path}' is not a readable model config "
                                 f"({str(err).splitlines()[0]}).") from None
        config.vocab_size = max(int(getattr(config, "vocab_size", 0) or 0), vocab_size)
        model = build_model(config, seed=seed)
    if model.get_input_embeddings().num_embeddings < vocab_size:
        raise HFMixtureError(f"The proxy model's vocabulary ({model.get_input_embeddings().num_embeddings}) "
                             f"is smaller than the token store's ({vocab_size}).")
    return model


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HFMixtureError(f"proxy_device {name!r} was asked for but CUDA is not available.")
    return name


def loss_on_rows(model, rows: np.ndarray, device: str, batch_size: int = 16) -> float | None:
    """Mean next-token cross-entropy over packed rows (None when there are no tokens)."""
    import torch

    if rows.size == 0 or rows.shape[1] < 2:
        return None
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            ids = torch.from_numpy(np.ascontiguousarray(rows[i:i + batch_size])).to(device)
            n = ids.numel() - ids.shape[0]  # predicted tokens: every position but the first
            total += float(model(input_ids=ids, labels=ids).loss) * n
            count += n
    return total / count


def domain_rows(store, resolved, seq_len: int, max_tokens: int) -> np.ndarray:
    """A component's validation documents packed into rows (in store order: deterministic)."""
    from .target import pack_documents

    def docs() -> Iterator[np.ndarray]:
        for part, idx in resolved.parts:
            toks, off = store.tokens(part, "validation"), store.offsets(part, "validation")
            for i in idx:
                yield toks[off[i]:off[i + 1]]

    return pack_documents(docs(), seq_len, max_tokens, store.eos_token_id)


class _Evaluator:
    """Per-domain validation losses and the target, at chosen steps."""

    def __init__(self, spec: dict[str, Any], store, pool, settings: ProxySettings, device: str,
                 target_fn=None):
        from .target import TargetSpec, load_target_rows, resolve_callable

        self.device = device
        self.settings = settings
        self.target = TargetSpec.from_dict(spec["target"])
        resolved = pool.resolve(store, "validation", allow_empty=True)
        self.domains = {r.name: domain_rows(store, r, settings.seq_len, settings.eval_tokens)
                        for r in resolved}
        self.target_rows = load_target_rows(self.target) if self.target.kind == "text" else None
        self.target_fn = None
        if self.target.kind == "callable":
            if target_fn is not None:
                self.target_fn = target_fn
            elif self.target.callable == "<in-process>":
                raise HFMixtureError("The target is a Python object that cannot be imported by "
                                     "name; run proxies in-process (workers = 1) or give "
                                     "'module:function'.")
            else:
                self.target_fn = resolve_callable(self.target.callable)
        self.store = store

    def domain_losses(self, model) -> dict[str, float | None]:
        return {name: loss_on_rows(model, rows, self.device) for name, rows in self.domains.items()}

    def target_value(self, model, losses: dict[str, float | None], final: bool) -> float | None:
        kind = self.target.kind
        vals = [v for v in losses.values() if v is not None]
        if kind == "mean":
            return float(np.mean(vals)) if vals else None
        if kind == "worst":
            return float(np.max(vals)) if vals else None
        if kind == "text":
            return loss_on_rows(model, self.target_rows, self.device)
        if not final:
            return None
        from .target import store_tokenizer

        try:
            tok = store_tokenizer(self.store, None)
        except HFMixtureError:
            tok = None
        value = self.target_fn(model, tok)
        value = float(value)
        if not math.isfinite(value):
            raise HFMixtureError(f"The target callable returned {value!r}, not a finite number.")
        return value

    def measure(self, model, final: bool) -> dict[str, Any]:
        was_training = model.training
        model.eval()
        try:
            losses = self.domain_losses(model)
            return {"domains": losses, "target": self.target_value(model, losses, final)}
        finally:
            if was_training:
                model.train()


def _make_eval_callback(evaluator: _Evaluator, steps: list[int], curve: list, tokens_per_step,
                        started: float):
    from transformers import TrainerCallback

    wanted = set(steps)

    class ProxyEvalCallback(TrainerCallback):
        """Measure domains and target at the chosen steps (the curve for scaling laws)."""

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step in wanted:
                point = evaluator.measure(model, final=state.global_step == steps[-1])
                point.update(step=int(state.global_step),
                             tokens=int(state.global_step * tokens_per_step),
                             seconds=round(time.perf_counter() - started, 3))
                curve.append(point)

    return ProxyEvalCallback()


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if n and n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(run_dir: Path, spec: dict[str, Any], target_fn=None) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import TrainingArguments

    from ..formats.token_store import TokenStore
    from ..mixture import Mixture, MixtureDataset, MixtureTrainer

    settings = ProxySettings.from_dict(spec["proxy"])
    store = TokenStore(spec["store"])
    mixture = Mixture.load(run_dir / MIXTURE_FILE)
    pool = Mixture.from_dict(spec["pool"])
    device = resolve_device(settings.device)
    seed = int(spec["seed"])
    steps = settings.steps
    tokens_per_step = settings.sequences_per_step * settings.seq_len
    total_tokens = steps * tokens_per_step
    with _torch_threads(settings.threads), torch.random.fork_rng(devices=[]):
        dataset = MixtureDataset(store, mixture, seq_len=settings.seq_len,
                                 total_tokens=total_tokens, seed=seed)
        model = proxy_model(settings, store.vocab_size, seed)
        num_params = count_parameters(model)
        non_embedding = count_parameters(model, embeddings=False)
        evaluator = _Evaluator(spec, store, pool, settings, device, target_fn)
        curve: list[dict[str, Any]] = []
        started = time.perf_counter()
        at = eval_steps(steps, settings.eval_points)
        args = TrainingArguments(
            output_dir=str(run_dir / "trainer"), max_steps=steps,
            per_device_train_batch_size=settings.batch_size,
            gradient_accumulation_steps=settings.gradient_accumulation_steps,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="cosine", warmup_steps=max(0, round(settings.warmup_fraction * steps)),
            weight_decay=settings.weight_decay, logging_steps=max(1, steps // 20),
            save_strategy="no", report_to=[], disable_tqdm=True, seed=seed, data_seed=seed,
            use_cpu=device == "cpu", bf16=bool(settings.bf16), dataloader_num_workers=0,
        )
        trainer = MixtureTrainer(
            model=model, args=args, train_dataset=dataset,
            callbacks=[_make_eval_callback(evaluator, at, curve, tokens_per_step, started)])
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        # The run's log goes to log.jsonl; printing every step would drown the search's bars.
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        result = trainer.train()
        seconds = time.perf_counter() - started
    try:  # the Trainer's output_dir stays empty (no checkpoints for a proxy): tidy it away
        (run_dir / "trainer").rmdir()
    except OSError:
        pass
    lines = "".join(json.dumps(entry) + "\n" for entry in trainer.state.log_history)
    atomic_write_text(run_dir / LOG, lines)
    if not curve or curve[-1]["step"] != steps:
        raise HFMixtureError(f"Proxy run '{run_dir}' stopped at step {trainer.state.global_step} "
                             f"of {steps}: the mixture ran out of data.")
    final = curve[-1]
    values = [v for v in final["domains"].values() if v is not None]
    return {
        "status": "finished",
        "run": run_dir.name,
        "round": spec.get("round"),
        "index": spec.get("index"),
        "seed": seed,
        "weights": spec["weights"],
        "mixture_fingerprint": mixture.fingerprint,
        "target_name": evaluator.target.name,
        "target": final["target"],
        "domains": final["domains"],
        "mean_domain_loss": float(np.mean(values)) if values else None,
        "worst_domain_loss": float(np.max(values)) if values else None,
        "curve": curve,
        "steps": steps,
        "tokens": total_tokens,
        "train_loss": float(result.training_loss),
        "num_params": num_params,
        "num_nonembedding_params": non_embedding,
        "model": settings.init_from or settings.model,
        "device": device,
        "threads": settings.threads,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(total_tokens / seconds, 1) if seconds > 0 else None,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
    }


def run_status(run_dir: str | os.PathLike) -> str:
    """``"finished"``, ``"failed"`` or ``"pending"``."""
    run_dir = Path(run_dir)
    if (run_dir / METRICS).is_file():
        return "finished"
    if (run_dir / FAILED).is_file():
        return "failed"
    return "pending"


def read_result(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's metrics.json or failed.json, or None while it is pending."""
    run_dir = Path(run_dir)
    for name in (METRICS, FAILED):
        path = run_dir / name
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def run_proxy(run_dir: str | os.PathLike, *, target_fn=None, retry_failed: bool = False
              ) -> dict[str, Any]:
    """Train the proxy described by ``run_dir/spec.json``; never redo a finished run.

    Returns the metrics (status ``"finished"``) or, when training raised, the
    failure record (status ``"failed"``, ``error``), which is also written to
    ``failed.json`` so that the search goes on and a rerun does not retry it
    (unless ``retry_failed``).  ``KeyboardInterrupt`` is not recorded: the run
    is simply redone next time.
    """
    run_dir = Path(run_dir)
    done = read_result(run_dir)
    if done is not None and (done.get("status") == "finished" or not retry_failed):
        return done
    spec_path = run_dir / SPEC
    if not spec_path.is_file():
        raise HFMixtureError(f"'{run_dir}' is not a proxy run folder: it has no {SPEC}.")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    (run_dir / FAILED).unlink(missing_ok=True)
    (run_dir / STARTED).write_text(str(os.getpid()))
    try:
        metrics = _train(run_dir, spec, target_fn)
    except Exception as err:  # noqa: BLE001 - a crashed proxy is recorded, the search goes on
        failure = {"status": "failed", "run": run_dir.name, "round": spec.get("round"),
                   "index": spec.get("index"), "seed": spec.get("seed"),
                   "weights": spec.get("weights"),
                   "error": f"{type(err).__name__}: {err}".splitlines()[0][:500],
                   "traceback": traceback.format_exc()[-4000:]}
        atomic_write_json(run_dir / FAILED, failure)
        (run_dir / STARTED).unlink(missing_ok=True)
        logger.warning("proxy run %s failed: %s", run_dir.name, failure["error"])
        return failure
    atomic_write_json(run_dir / METRICS, metrics)
    (run_dir / STARTED).unlink(missing_ok=True)
    return metrics


def write_run_folder(run_dir: Path, spec: dict[str, Any], mixture) -> None:
    """Create a pending run folder (spec + mixture), unless it already exists."""
    if (run_dir / SPEC).is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    mixture.save(run_dir / MIXTURE_FILE)
    atomic_write_json(run_dir / SPEC, spec)


def settings_dict(settings: ProxySettings) -> dict[str, Any]:
    return asdict(settings)
