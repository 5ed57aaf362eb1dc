"""The run: a recipe -> model, mixture data, callbacks -> Trainer -> saved model (and a push).

:func:`train` builds the model from its config (no weights are downloaded), the
mixture dataset over the token store (the resumable sampler), the per-domain
validation sets and the named callbacks, trains with ``transformers.Trainer``
under whatever ``accelerate launch`` set up (DDP, DeepSpeed), evaluates per
domain, saves, and pushes the model with a card when ``hub.push`` is set (main
process only, :func:`hf_mixture.hub.push_trained_model`).  The recipe is read and
checked by :mod:`hf_mixture.recipe`; throughput and MFU are :mod:`hf_mixture.throughput`.

>>> cfg = load_train_config("recipes/tiny_cpu.yaml", ["data.store=store", "training.max_steps=5"])  # doctest: +SKIP
>>> result = train(cfg)                                                                        # doctest: +SKIP
>>> sorted(result.metrics)                                                                     # doctest: +SKIP
['eval_cluster_0_loss', ...]

The launch line of every recipe is the first line of its file, e.g.::

    accelerate launch --config_file recipes/accelerate/1gpu.yaml -m hf_mixture train \\
        recipes/pretrain_1b.yaml --store STORE --mixture MIXTURE
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HFMixtureError
from .models import build_model, count_parameters
from .recipe import TrainConfig, global_batch_size, load_train_config, training_arguments  # noqa: F401  (load_train_config: the docstring's first call)
from .throughput import (
    TimedIterator,
    model_flops_per_token,
    peak_flops_for_device,
    throughput_callback_class,
)

logger = logging.getLogger(__name__)


# -- callbacks by name ------------------------------------------------------------------------
def build_callbacks(entries: Sequence[Mapping[str, Any]], live: Any, *, where: str = "the recipe"
                    ) -> list[Any]:
    """Instantiate ``[{name: ado, <config>}, ...]`` against the run's live mixture."""
    if not entries:
        return []
    from .callbacks import callback_class

    out = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        name = entry.pop("name")
        try:
            cls = callback_class(name)
            out.append(cls(live, config=entry))
        except HFMixtureError as err:
            raise HFMixtureError(f"{where}: callbacks[{i}]: {err}") from None
    return out


# -- the run -----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` leaves behind (also written into ``output_dir``)."""

    output_dir: str
    metrics: dict[str, float]
    num_parameters: int
    global_step: int
    weights_history: list[dict[str, Any]]
    throughput: dict[str, Any]
    optimizer: str = ""
    world_size: int = 1
    pushed: str | None = None


def _trainer_class():
    """The sampler-aware Trainer: ours from hf_mixture.mixture, with a timed batch iterator."""
    from .mixture.trainer import MixtureTrainer

    class RecipeTrainer(MixtureTrainer):
        throughput: Any = None

        def get_batch_samples(self, epoch_iterator, num_batches, device):
            if self.throughput is not None:
                epoch_iterator = TimedIterator(epoch_iterator, self.throughput)
            return super().get_batch_samples(epoch_iterator, num_batches, device)

    return RecipeTrainer


def resolve_mixture(cfg: TrainConfig, store: Any):
    """The run's mixture: ``data.mixture`` (file, folder or Hub id) or natural store weights."""
    from .mixture import Mixture

    if cfg.data.mixture is None:
        return Mixture.from_store(store, "natural", seed=cfg.data.seed or 0)
    from .hub import load_mixture

    return load_mixture(cfg.data.mixture, revision=cfg.data.mixture_revision)


def train(cfg: TrainConfig, *, extra_callbacks: Sequence[Callable[[Any], Any]] = ()
          ) -> TrainResult:
    """Run a recipe (call it under ``accelerate launch`` or ``torchrun`` for several processes).

    ``extra_callbacks``: functions of the run's :class:`~hf_mixture.mixture.LiveMixture`
    that return a ``TrainerCallback``, added after the recipe's callbacks — for code
    that steers or watches a recipe run from Python (the live mixture exists only once
    the run has built its dataset).

    >>> train(load_train_config("recipes/tiny_cpu.yaml", ["data.store=store"]))  # doctest: +SKIP
    """
    from .formats.token_store import TokenStore
    from .mixture import MixtureDataset

    where = cfg.source or "the recipe"
    if not cfg.data.store:
        raise HFMixtureError(f"{where}: data.store is not set; pass --store STORE (a token store "
                             "made by `hf-mixture tokenize`).")
    args = training_arguments(cfg)     # before the model: DeepSpeed ZeRO-3 builds it sharded
    store = TokenStore(cfg.data.store)
    if cfg.data.tokenizer:  # checked before training, not after: see _save_tokenizer
        from .formats.tokenizers import check_tokenizer_matches, load_tokenizer

        check_tokenizer_matches(load_tokenizer(cfg.data.tokenizer), store,
                                "saved beside the model")
    mixture = resolve_mixture(cfg, store)
    seq_len = cfg.data.seq_len
    tokens_per_step = global_batch_size(args) * seq_len
    total_tokens = cfg.data.total_tokens or args.max_steps * tokens_per_step
    seed = mixture.seed if cfg.data.seed is None else cfg.data.seed
    train_data = MixtureDataset(store, mixture, seq_len=seq_len, total_tokens=total_tokens,
                                seed=seed)
    eval_data = {}
    if cfg.data.eval_sequences:
        from .callbacks import domain_eval_datasets

        # One held-out set per mixture component: Trainer.evaluate then reports
        # eval_<component>_loss, which the mixture callbacks read.
        eval_data = domain_eval_datasets(store, mixture, seq_len=seq_len,
                                         max_sequences=cfg.data.eval_sequences)
    model = build_model(cfg.model, vocab_size=store.vocab_size, eos_token_id=store.eos_token_id,
                        seed=args.seed, where=where)
    num_parameters = count_parameters(model)
    if args.process_index == 0:
        logger.info("Model: %s parameters; mixture %s over %s; %d tokens per optimizer step.",
                    f"{num_parameters:,}", mixture.fingerprint, store.path, tokens_per_step)

    throughput = throughput_callback_class()(
        flops_per_token=model_flops_per_token(model.config, seq_len),
        tokens_per_step=tokens_per_step, peak_flops=peak_flops_for_device(),
        output_dir=args.output_dir)
    trainer_cls = _trainer_class()
    trainer = trainer_cls(model=model, args=args, train_dataset=train_data,
                          eval_dataset=eval_data or None, callbacks=[throughput])
    trainer.throughput = throughput
    # The dataset, not only its live weights: a text target is tokenized with the store's
    # tokenizer when its callback is created (before training), and attach() adds its eval set.
    callbacks = build_callbacks(cfg.callbacks, train_data, where=where)
    if callbacks and not eval_data and any(getattr(c, "target_kind", "mean") != "mean"
                                           for c in callbacks):
        raise HFMixtureError(f"{where}: a callback has a target but data.eval_sequences is 0, "
                             "so nothing would be evaluated; set data.eval_sequences.")
    for callback in callbacks:
        callback.attach(trainer)
    for make in extra_callbacks:
        trainer.add_callback(make(train_data.live))

    resume = args.resume_from_checkpoint
    if resume in ("latest", "last", "true", "True"):
        from .mixture.trainer import last_complete_checkpoint

        resume = last_complete_checkpoint(args.output_dir)
        if resume is None:
            raise HFMixtureError(f"resume_from_checkpoint is 'latest' but {args.output_dir} holds "
                                 "no checkpoint-<step> folder.")
    trainer.train(resume_from_checkpoint=resume)

    metrics: dict[str, float] = {}
    if eval_data:
        metrics = {k: float(v) for k, v in trainer.evaluate().items()}
        for name in eval_data:
            loss = metrics.get(f"eval_{name}_loss")
            if loss is not None and math.isfinite(loss):
                metrics[f"eval_{name}_perplexity"] = float(math.exp(min(loss, 50.0)))
        metrics.update(_target_metrics(callbacks, metrics, eval_data, trainer, store))
    trainer.save_model(args.output_dir)   # every rank: DeepSpeed ZeRO-3 gathers the weights
    history = [c.to_dict() for c in train_data.live.history]
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # unwrap accelerate's
    bits = getattr(getattr(optimizer, "args", None), "optim_bits", None)   # bitsandbytes' setting
    result = TrainResult(output_dir=args.output_dir, metrics=metrics,
                         num_parameters=num_parameters, global_step=trainer.state.global_step,
                         weights_history=history, throughput=dict(throughput.summary),
                         optimizer=f"{type(optimizer).__module__}.{type(optimizer).__name__}"
                                   + (f" ({bits}-bit states)" if bits else ""),
                         world_size=int(args.world_size))
    if trainer.is_world_process_zero():
        _write_run_files(cfg, result, mixture, store)
    trainer.accelerator.wait_for_everyone()
    if cfg.hub.push:
        from .hub import push_trained_model

        result.pushed = push_trained_model(cfg, result, mixture)
    trainer.accelerator.wait_for_everyone()
    return result


def _target_metrics(callbacks: Sequence[Any], metrics: Mapping[str, float], eval_data: Any,
                    trainer: Any, store: Any) -> dict[str, float]:
    """``eval_target_loss`` (and its perplexity) of the first adaptive callback's target.

    A text target was evaluated by the Trainer (its eval set is ``target``); ``mean`` and
    ``worst`` come from the per-domain losses; a callable is called once more on the model.
    """
    adaptive = [c for c in callbacks if hasattr(c, "target_kind")]
    if not adaptive:
        return {}
    cb = adaptive[0]
    out: dict[str, float] = {}
    if cb.target_kind == "text":
        value = metrics.get("eval_target_loss")
    elif cb.target_kind == "callable":
        from .mixture.target import store_tokenizer

        try:
            tok = store_tokenizer(store, None)
        except HFMixtureError:
            tok = None
        value = cb._call_target(trainer.model, tok)
    else:
        losses = [metrics.get(f"eval_{name}_loss") for name in eval_data if name != "target"]
        losses = [v for v in losses if v is not None]
        value = (max(losses) if cb.target_kind == "worst" else sum(losses) / len(losses)) \
            if losses else None
    if value is not None and math.isfinite(value):
        out["eval_target_loss"] = float(value)
        out["eval_target_perplexity"] = float(math.exp(min(value, 50.0)))
    return out


def _write_run_files(cfg: TrainConfig, result: TrainResult, mixture: Any, store: Any) -> None:
    """Beside the weights: the mixture, its weights history, the recipe and the metrics."""
    import yaml

    from ._io import atomic_write_json, atomic_write_text

    out = Path(result.output_dir)
    mixture.save(out / "mixture.yaml")
    atomic_write_json(out / "mixture_history.json", result.weights_history)
    atomic_write_json(out / "eval_results.json", result.metrics)
    recipe = cfg.to_dict()
    header = f"# Recipe as run (from {Path(cfg.source).name})\n" if cfg.source else ""
    atomic_write_text(out / "recipe.yaml", header + yaml.safe_dump(recipe, sort_keys=False))
    facts = {"num_parameters": result.num_parameters, "global_step": result.global_step,
             "optimizer": result.optimizer, "world_size": result.world_size,
             "mixture_fingerprint": mixture.fingerprint, "store_fingerprint": store.fingerprint,
             "store_source": store.manifest.get("source"),
             "tokenizer": store.manifest.get("tokenizer")}
    atomic_write_json(out / "run_info.json", facts)
    _save_tokenizer(cfg, store, out)


def _save_tokenizer(cfg: TrainConfig, store: Any, out: Path) -> None:
    name = cfg.data.tokenizer or store.tokenizer_name
    if not name:
        logger.warning("The token store names no tokenizer; %s holds none.", out)
        return
    from .formats.tokenizers import check_tokenizer_matches, load_tokenizer

    try:
        tokenizer = load_tokenizer(name)
    except HFMixtureError as err:
        if cfg.data.tokenizer:  # asked for explicitly: not loadable is the user's error
            raise
        logger.warning("The model folder %s holds no tokenizer (%s); set data.tokenizer to "
                       "save one beside the weights.", out, err)
        return
    # a model trained on one vocabulary shipped with another tokenizer is silently broken
    check_tokenizer_matches(tokenizer, store, "saved beside the model")
    tokenizer.save_pretrained(str(out))
