"""The shared base of the mixture callbacks: live weights, logging, checkpoints, faults.

A :class:`MixtureCallback` is a ``transformers.TrainerCallback`` linked to the
run's :class:`~hf_mixture.mixture.LiveMixture` (the one object through which
weights change).  The base owns everything the adaptive rules share, so each
rule is one method, :meth:`MixtureCallback.compute_weights`, from per-domain eval
losses to new weights:

- **eval losses**: ``Trainer.evaluate`` with a dict ``eval_dataset`` (see
  :func:`hf_mixture.callbacks.domain_eval_datasets`) reports
  ``eval_<domain>_loss`` once per domain, each in its own ``on_evaluate`` call;
  the base collects them and calls the rule once all domains are in.
- **faults**: a NaN/inf or missing loss for a domain is a warning and the weights
  in force are kept (the rule is not called).  transformers drops non-finite eval
  batches before averaging (``logging_nan_inf_filter``), so a half-diverged
  evaluation still reports a finite mean; ``MixtureTrainer`` counts them and
  reports ``<prefix>_<domain>_nonfinite_batches``, which the base treats as a
  non-finite loss for that domain.
- **training losses**: a rule that reads per-domain *training* losses sets
  :attr:`MixtureCallback.wants_token_losses`; ``MixtureTrainer`` then puts the
  component of every sample into the batch and hands each micro-batch's
  per-token losses to :meth:`MixtureCallback.on_token_losses`; the per-domain
  sums are reduced over ranks at the end of the optimizer step.
- **logging**: at every log step the weights in force go into the Trainer's logs
  as ``mixture/<component>`` (and into ``state.log_history``); call
  :meth:`MixtureCallback.attach` so ``report_to`` backends (TensorBoard, W&B)
  receive them too — a callback passed in ``callbacks=[...]`` runs after them.
- **checkpoints**: at every save the process that saves the checkpoint
  (``args.should_save``: the global main process, or each node's local main
  process with ``save_on_each_node=True``, needed without a shared filesystem)
  writes the callback's state (``<checkpoint>/hf_mixture_<name>.json``); a resumed run reads it back, so
  it continues with identical weights and identical decisions.  A checkpoint of
  another set of domains is refused with :class:`~hf_mixture.errors.HFMixtureError`.
- **several processes**: eval losses are gathered by the Trainer, so every
  rank computes the same weights; ``LiveMixture.set_weights`` is a collective
  that broadcasts rank 0's weights; only the saving processes write files and
  only the global main process warns.

>>> from hf_mixture.callbacks import ADOCallback                # doctest: +SKIP
>>> trainer = MixtureTrainer(model, args, train_dataset=data,
...                          eval_dataset=domain_eval_datasets(store, seq_len=256))  # doctest: +SKIP
>>> ADOCallback(data.live).attach(trainer)                     # doctest: +SKIP
>>> trainer.train()                                            # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback

from hf_mixture._checks import check_int
from hf_mixture._io import atomic_write_json
from hf_mixture.config import dataclass_from_dict
from hf_mixture.errors import HFMixtureError

logger = logging.getLogger(__name__)

STATE_FORMAT = "hf_mixture.callback_state"
STATE_VERSION = 1
LOG_PREFIX = "mixture/"


@dataclass
class MixtureCallbackConfig:
    """What every mixture callback shares (each callback's config extends it)."""

    metric_prefix: str = field(default="eval", metadata={
        "help": "Prefix of the eval metrics: the loss of domain D is read from "
                "'<metric_prefix>_<D>_loss' (Trainer.evaluate's metric_key_prefix)."})
    start_step: int = field(default=0, metadata={
        "help": "No weight update before this optimizer step (earlier evals are still "
                "recorded in eval_history, which ADO's fits use)."})
    log_weights: bool = field(default=True, metadata={
        "help": "Add the weights in force to every Trainer log as 'mixture/<component>'."})

    def __post_init__(self) -> None:
        if not isinstance(self.metric_prefix, str) or not self.metric_prefix:
            raise HFMixtureError(f"Config field 'metric_prefix' must be a non-empty string, got "
                                 f"{self.metric_prefix!r}.")
        check_int(self.start_step, "Config field 'start_step'", 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AdaptiveConfig(MixtureCallbackConfig):
    """What the adaptive callbacks (those that read eval losses) share: the target."""

    target: str = field(default="mean", metadata={
        "help": "What the rule optimizes, in the forms of `hf-mixture search --target`: 'mean' "
                "(mean per-domain eval loss), 'worst' (the largest), a text file / folder / "
                "dataset id (its loss is evaluated beside the domains as eval_target_loss) or "
                "'module:function' (fn(model, tokenizer) -> float, called at each evaluation; "
                "in Python also a callable). Each rule takes the forms it can use "
                "(docs/callbacks.md)."})
    target_tokens: int = field(default=16384, metadata={
        "help": "Tokens of a text target kept for its eval set (documents in a seeded order)."})
    target_text_column: str = field(default="text", metadata={
        "help": "Column of a text target's rows that holds the text."})
    target_split: str = field(default="train", metadata={
        "help": "Split of a text target dataset to read."})

    def __post_init__(self) -> None:
        super().__post_init__()
        from hf_mixture.mixture.target import target_kind

        target_kind(self.target)    # one sentence for a value of no known form
        check_int(self.target_tokens, "Config field 'target_tokens'", 2)


def _live_of(target: Any) -> Any:
    """The LiveMixture of ``target``: a LiveMixture, or anything with a ``.live`` (dataset, loader)."""
    from hf_mixture.mixture.live import LiveMixture

    if isinstance(target, LiveMixture):
        return target
    live = getattr(target, "live", None)
    if isinstance(live, LiveMixture):
        return live
    raise HFMixtureError(f"A mixture callback needs a LiveMixture (or a MixtureDataset / "
                         f"MixtureDataLoader holding one), got {type(target).__name__}.")


def timed(method: Callable) -> Callable:
    """Add the time spent in a hook to ``self.seconds`` (the callback's wall-clock overhead)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    return wrapper


def samples_per_step(args: Any) -> int:
    """Sequences one optimizer step consumes over all ranks (TrainingArguments)."""
    return (int(args.per_device_train_batch_size) * int(args.gradient_accumulation_steps)
            * max(1, int(getattr(args, "world_size", 1))))


def samples_seen(args: Any, state: Any) -> int:
    """Sequences the run consumed after ``state.global_step`` optimizer steps (all ranks)."""
    return int(state.global_step) * samples_per_step(args)


def expected_counts(history: Sequence[Any], num_components: int, upto_sample: int) -> np.ndarray:
    """Expected samples of each component among the first ``upto_sample``, from a weights history.

    ``history`` holds :class:`~hf_mixture.mixture.WeightChange` s (``sample``,
    ``weights``); each segment contributes ``length x weights``.  A pure
    function of the live state: identical on every rank, and close to the
    sampler's realized counts (binomial noise only).

    >>> from hf_mixture.mixture import WeightChange
    >>> h = [WeightChange(0, 0, (1.0, 0.0), "initial", 0), WeightChange(10, 10, (0.5, 0.5), "x", 0)]
    >>> expected_counts(h, 2, 30).tolist()
    [20.0, 10.0]
    """
    counts = np.zeros(num_components, dtype=np.float64)
    entries = sorted(history, key=lambda c: c.sample)  # stable: the last change at a sample wins
    for i, change in enumerate(entries):
        start = min(change.sample, upto_sample)
        end = upto_sample if i + 1 == len(entries) else min(entries[i + 1].sample, upto_sample)
        if end > start:
            counts += (end - start) * np.asarray(change.weights, dtype=np.float64)
    return counts


class MixtureCallback(TrainerCallback):
    """Base of the callbacks that change a mixture's weights during training.

    Args:
        live: the run's :class:`~hf_mixture.mixture.LiveMixture`, or a
            ``MixtureDataset`` / ``MixtureDataLoader`` holding it.
        config: the callback's config dataclass (``config_class``), a mapping of
            its fields, or ``None`` for the defaults; keyword arguments override
            single fields.

    Subclasses implement :meth:`compute_weights` (or other hooks) and
    :meth:`_state` / :meth:`_load_state` for their own state.
    """

    # MixtureTrainer writes this state into a checkpoint before the checkpoint is complete
    # (crash-safe resume, see hf_mixture.mixture.trainer); on_save writes it again, unchanged.
    writes_checkpoint_state = True

    config_class: type = MixtureCallbackConfig
    name: str = "mixture"

    def __init__(self, live: Any, config: Any = None, **overrides: Any):
        self.live = _live_of(live)
        if config is None:
            config = {}
        if isinstance(config, Mapping):
            config = dict(config)
            for source in (config, overrides):   # a Python callable as the target
                fn = source.get("target")
                if callable(fn) and not isinstance(fn, (str, os.PathLike)):
                    from hf_mixture.mixture.target import callable_name

                    self._callable_target = fn
                    source["target"] = callable_name(fn)
        if isinstance(config, Mapping):
            config = dataclass_from_dict(self.config_class, {**config, **overrides},
                                         where=f"{type(self).__name__} config")
        elif isinstance(config, self.config_class):
            if overrides:
                config = dataclass_from_dict(self.config_class, {**config.to_dict(), **overrides},
                                             where=f"{type(self).__name__} config")
        else:
            raise HFMixtureError(f"{type(self).__name__} takes a {self.config_class.__name__} or "
                                 f"a mapping as config, got {type(config).__name__}.")
        self.config = config
        self.domains: list[str] = list(self.live.names)
        self.updates = 0                 # weight changes this callback made
        self.skipped = 0                 # evaluations whose losses were unusable
        self.last_update_step: int | None = None
        self.eval_history: list[dict[str, Any]] = []   # {"step", "samples", "losses"}
        self.seconds = 0.0               # wall-clock time spent inside this callback's hooks
        self._pending: dict[str, float] = {}
        self._pending_step: int | None = None
        self._attached = False
        self._training = False           # evaluations outside trainer.train() change nothing
        self._loaded_from: str | None = None
        self._warned_report_to = False
        # per-domain (value sum, tokens, samples) of the training losses not yet used
        self._accumulated = np.zeros((3, len(self.domains)), dtype=np.float64)
        self._setup_target(live)

    # -- the target ------------------------------------------------------------------------------
    #: The target forms the rule can use ('mean', 'worst', 'text', 'callable'), and why not others.
    supported_targets: tuple[str, ...] = ("mean",)
    target_note: str = ""
    target_fn: Callable | None = None          # a callable target's function
    target_rows: np.ndarray | None = None      # a text target's token rows, once tokenized
    last_target: float | None = None           # the target's value at the last evaluation

    def _setup_target(self, owner: Any) -> None:
        from hf_mixture.mixture.target import TARGET_KEY, resolve_target_callable, target_kind

        target = getattr(self.config, "target", None)
        self.target_kind = "mean" if target is None else target_kind(target)
        if self.target_kind not in self.supported_targets:
            raise HFMixtureError(f"{type(self).__name__} cannot optimize the target {target!r} "
                                 f"(a {self.target_kind} target): {self.target_note}")
        if TARGET_KEY in self.domains and self.target_kind == "text":
            raise HFMixtureError(f"A mixture component is named {TARGET_KEY!r}, which is the "
                                 "name of the target's eval set; rename the component.")
        if self.target_kind == "callable":
            self.target_fn = self._callable_target or resolve_target_callable(target)
        elif self.target_kind == "text" and getattr(owner, "store_path", None) is not None:
            self.prepare_target(owner.store_path, seq_len=int(owner.seq_len))

    _callable_target: Callable | None = None

    def prepare_target(self, store: Any, *, seq_len: int) -> np.ndarray:
        """Tokenize a text target with ``store``'s tokenizer into ``seq_len`` rows (once).

        Done by itself when the callback is given a ``MixtureDataset``; a target that
        is missing, empty or does not tokenize is one sentence, before training starts.
        """
        from hf_mixture.mixture.target import tokenize_target

        if self.target_rows is None:
            if isinstance(store, (str, os.PathLike)):
                from hf_mixture.formats.token_store import TokenStore

                store = TokenStore(store)
            self.target_rows = tokenize_target(
                self.config.target, store, seq_len=seq_len, max_tokens=self.config.target_tokens,
                text_column=self.config.target_text_column, split=self.config.target_split)
        return self.target_rows

    def target_eval_dataset(self) -> Any:
        """A text target's rows as a ``datasets.Dataset`` (``input_ids``, ``labels``)."""
        import datasets

        if self.target_rows is None:
            raise HFMixtureError(f"{type(self).__name__}: the text target {self.config.target!r} "
                                 "is not tokenized yet; create the callback with the "
                                 "MixtureDataset (or call prepare_target(store, seq_len=...)).")
        rows = self.target_rows.tolist()
        features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int64")),
                                      "labels": datasets.Sequence(datasets.Value("int64"))})
        return datasets.Dataset.from_dict({"input_ids": rows, "labels": rows}, features=features)

    def target_value(self, losses: np.ndarray) -> float | None:
        """The target at the evaluation whose per-domain ``losses`` these are (lower is better)."""
        if self.target_kind == "mean":
            return float(np.mean(losses))
        if self.target_kind == "worst":
            return float(np.max(losses))
        return self.last_target

    # -- the rule ----------------------------------------------------------------------------
    def compute_weights(self, losses: np.ndarray, *, step: int, samples: int
                        ) -> np.ndarray | None:
        """New weights (component order) from this eval's per-domain ``losses``, or ``None``.

        ``losses`` are finite and in :attr:`domains` order; ``step`` is the
        optimizer step, ``samples`` the sequences consumed so far.  The losses are
        already appended to :attr:`eval_history`.
        """
        return None

    def observe(self, losses: Mapping[str, float], *, step: int, samples: int = 0
                ) -> dict[str, float]:
        """Feed one evaluation's per-domain ``losses`` without a Trainer; returns the weights.

        ``samples``: sequences consumed so far (ADO's power laws read it).
        """
        vector = np.asarray([float(losses[d]) for d in self.domains], dtype=np.float64)
        self._update(vector, step=int(step), samples=int(samples))
        return self.weights

    def _update(self, losses: np.ndarray, *, step: int, samples: int) -> None:
        """Record ``losses`` in :attr:`eval_history`; run the rule from ``start_step`` on."""
        entry = {"step": int(step), "samples": int(samples), "losses": [float(x) for x in losses]}
        target = self.target_value(np.asarray(losses, dtype=np.float64)) \
            if self.target_kind != "mean" else None
        if target is not None:
            entry["target"] = float(target)
        self.eval_history.append(entry)
        if step < self.config.start_step:
            return
        new = self.compute_weights(losses, step=int(step), samples=int(samples))
        if new is not None:
            self.apply(new, step=int(step), reason=f"step {step}")

    # -- per-domain training losses (MixtureTrainer) ---------------------------------------
    #: True when the rule reads training losses: MixtureTrainer then adds ``component_ids``
    #: to the training batches and calls :meth:`on_token_losses` for every micro-batch.
    wants_token_losses: bool = False

    @timed
    def on_token_losses(self, token_losses: Any, mask: Any, component_ids: Any, *,
                        inputs: Mapping[str, Any], model: Any) -> None:
        """One training micro-batch: per-token losses ``(B, T)``, their mask, sample components.

        Called by ``MixtureTrainer.compute_loss`` (detached tensors).  The default
        adds the loss of every domain's tokens to :meth:`accumulate`.
        """
        self.accumulate(token_losses, mask, component_ids)

    def accumulate(self, values: Any, mask: Any, component_ids: Any) -> None:
        """Add per-token ``values`` ``(B, T)`` (where ``mask``) to their sample's domain.

        Sums this rank's token values, token counts and sample counts per domain
        until :meth:`take_accumulated` reduces them over ranks.
        """
        import torch

        K = len(self.domains)
        ids = component_ids.reshape(-1).long().to(values.device)
        m = mask.to(values.dtype)
        per_sample = (values.detach() * m).sum(dim=1).double()
        tokens = m.sum(dim=1).double()
        acc = torch.zeros((3, K), dtype=torch.float64, device=values.device)
        acc[0].index_add_(0, ids, per_sample)
        acc[1].index_add_(0, ids, tokens)
        acc[2].index_add_(0, ids, torch.ones_like(tokens))
        self._accumulated = self._accumulated + acc.cpu().numpy()

    def take_accumulated(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(value sums, token counts, sample counts)`` per domain over all ranks; resets.

        A collective under torch.distributed: every rank calls it at the same step.
        """
        total = all_reduce_sum(self._accumulated)
        self._accumulated = np.zeros_like(self._accumulated)
        return total[0], total[1], total[2]

    def on_train_losses(self, sums: np.ndarray, tokens: np.ndarray, samples_per_domain: np.ndarray,
                        *, step: int, samples: int) -> None:
        """The rule's use of one window of reduced training losses (``train_every`` steps)."""

    @property
    def train_every(self) -> int:
        """Optimizer steps per window of training losses handed to :meth:`on_train_losses`."""
        return int(getattr(self.config, "train_every", 1))

    # -- state -------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: Mapping[str, Any], where: str) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """The callback's state: JSON-able, small, enough to continue identically."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "callback": type(self).__name__,
            "domains": list(self.domains),
            "config": self.config.to_dict(),
            "weights": [float(x) for x in self.live.weights_array],
            "updates": self.updates,
            "skipped": self.skipped,
            "last_update_step": self.last_update_step,
            "eval_history": self.eval_history,
            "accumulated": self._accumulated.tolist(),
            "rule": self._state(),
        }

    def load_state_dict(self, state: Mapping[str, Any], where: str = "the callback state") -> None:
        """Restore :meth:`state_dict`'s output; another set of domains is refused."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise HFMixtureError(f"{where} is not a hf_mixture callback state (field 'format' "
                                 f"should be {STATE_FORMAT!r}).")
        if state.get("version") != STATE_VERSION:
            raise HFMixtureError(f"{where}: field 'version' is {state.get('version')!r}; this "
                                 f"hf_mixture reads version {STATE_VERSION}.")
        if state.get("callback") != type(self).__name__:
            raise HFMixtureError(f"{where} belongs to a {state.get('callback')}, not to a "
                                 f"{type(self).__name__}.")
        if list(state.get("domains") or []) != self.domains:
            raise HFMixtureError(
                f"{where} was saved for the domains {state.get('domains')}, but this run's "
                f"mixture has {self.domains}; resume with the same components (same names, same "
                "order) or start a new run.")
        try:
            self.updates = int(state["updates"])
            self.skipped = int(state["skipped"])
            step = state["last_update_step"]
            self.last_update_step = None if step is None else int(step)
            history = state["eval_history"]
            self.eval_history = [{"step": int(e["step"]), "samples": int(e["samples"]),
                                  "losses": [float(x) for x in e["losses"]],
                                  **({"target": float(e["target"])} if "target" in e else {})}
                                 for e in history]
            weights = np.asarray([float(x) for x in state["weights"]], dtype=np.float64)
            accumulated = np.asarray(state.get("accumulated", np.zeros((3, len(self.domains)))),
                                     dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise HFMixtureError(f"{where} is malformed ({type(err).__name__}: {err}).") from None
        if len(weights) != len(self.domains):
            raise HFMixtureError(f"{where}: field 'weights' holds {len(weights)} values for "
                                 f"{len(self.domains)} domains.")
        if accumulated.shape != (3, len(self.domains)):
            raise HFMixtureError(f"{where}: field 'accumulated' has the shape "
                                 f"{list(accumulated.shape)}, not [3, {len(self.domains)}].")
        self._accumulated = accumulated
        self._load_state(state.get("rule") or {}, where)
        # The sampler state (restored by the Trainer's checkpoint) already brings the weights
        # back; a LiveMixture used on its own learns them here.
        if not np.allclose(self.live.weights_array, weights, rtol=0, atol=1e-12):
            self.live.set_weights(weights, reason=f"{self.name}: resumed")
        self._pending.clear()
        self._pending_step = None

    def state_file(self, checkpoint_dir: str | os.PathLike) -> Path:
        """Where this callback's state lives inside a Trainer checkpoint folder."""
        return Path(checkpoint_dir) / f"hf_mixture_{self.name}.json"

    def save_checkpoint(self, checkpoint_dir: str | os.PathLike) -> Path:
        """Write :meth:`state_dict` into ``checkpoint_dir`` (atomically)."""
        return atomic_write_json(self.state_file(checkpoint_dir), self.state_dict())

    def load_checkpoint(self, checkpoint_dir: str | os.PathLike) -> None:
        """Restore the state saved in ``checkpoint_dir`` (done by itself on ``train(resume_...)``)."""
        path = self.state_file(checkpoint_dir)
        if not path.is_file():
            raise HFMixtureError(f"Checkpoint '{checkpoint_dir}' holds no {path.name}: it was "
                                 f"saved without this {type(self).__name__}.")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HFMixtureError(f"{path} is not valid JSON ({err}).") from None
        self.load_state_dict(state, where=str(path))
        self._loaded_from = str(checkpoint_dir)

    # -- wiring --------------------------------------------------------------------------------
    def attach(self, trainer: Any) -> Any:
        """Add this callback to ``trainer`` ahead of the ``report_to`` integrations; returns it.

        Callbacks passed as ``Trainer(callbacks=[...])`` run after TensorBoard/W&B,
        which would then log each step before the ``mixture/*`` keys are added.
        """
        handler = trainer.callback_handler
        if self in handler.callbacks:
            handler.callbacks.remove(self)
        at = next((i + 1 for i, cb in enumerate(handler.callbacks)
                   if type(cb).__name__ == "DefaultFlowCallback"), 0)
        handler.callbacks.insert(at, self)
        self._attached = True
        if self.target_kind == "text":
            self._add_target_eval_set(trainer)
        return trainer

    def _add_target_eval_set(self, trainer: Any) -> None:
        """Put a text target's eval set beside the per-domain ones (``eval_target_loss``)."""
        from hf_mixture.mixture.target import TARGET_KEY

        evals = getattr(trainer, "eval_dataset", None)
        if not isinstance(evals, Mapping):
            raise HFMixtureError(f"{type(self).__name__} with the text target "
                                 f"{self.config.target!r} needs the Trainer's eval_dataset to be "
                                 "the dict of per-domain sets (domain_eval_datasets).")
        mine = self.target_eval_dataset()
        if TARGET_KEY in evals:
            theirs = evals[TARGET_KEY]
            if list(theirs["input_ids"]) != list(mine["input_ids"]):
                raise HFMixtureError(f"The Trainer already evaluates another target as "
                                     f"{TARGET_KEY!r}; one run has one target (this callback's "
                                     f"is {self.config.target!r}).")
            return
        evals = dict(evals)
        evals[TARGET_KEY] = mine
        trainer.eval_dataset = evals

    @property
    def weights(self) -> dict[str, float]:
        """The weights in force (from the live mixture)."""
        return self.live.weights

    def _warn(self, state: Any, message: str, *args: Any) -> None:
        if getattr(state, "is_world_process_zero", True):
            logger.warning(message, *args)

    # -- collecting eval losses ------------------------------------------------------------------
    def _domain_losses(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        prefix = self.config.metric_prefix
        found = {}
        for d in self.domains:
            key = f"{prefix}_{d}_loss"
            if key in metrics:
                try:
                    found[d] = float(metrics[key])
                except (TypeError, ValueError):
                    found[d] = float("nan")
                # MixtureTrainer counts the eval batches transformers' logging_nan_inf_filter
                # left out of the mean: any such batch makes the domain's loss unusable.
                if metrics.get(f"{prefix}_{d}_nonfinite_batches"):
                    found[d] = float("nan")
        if self.target_kind == "text":
            from hf_mixture.mixture.target import TARGET_KEY

            key = f"{prefix}_{TARGET_KEY}_loss"
            if key in metrics:
                try:
                    found[TARGET_KEY] = float(metrics[key])
                except (TypeError, ValueError):
                    found[TARGET_KEY] = float("nan")
                if metrics.get(f"{prefix}_{TARGET_KEY}_nonfinite_batches"):
                    found[TARGET_KEY] = float("nan")
        return found

    @property
    def _wanted(self) -> list[str]:
        """The eval sets an evaluation must report: every domain (and a text target's)."""
        if self.target_kind == "text":
            from hf_mixture.mixture.target import TARGET_KEY

            return [*self.domains, TARGET_KEY]
        return list(self.domains)

    def _flush(self, args: Any, state: Any) -> None:
        """Run the rule on the collected losses (or warn and keep the weights)."""
        if not self._pending:
            return
        pending, step = self._pending, self._pending_step
        self._pending, self._pending_step = {}, None
        wanted = self._wanted
        missing = [d for d in wanted if d not in pending]
        bad = [d for d in wanted if d in pending and not math.isfinite(pending[d])]
        if missing or bad:
            self.skipped += 1
            what = []
            if missing:
                what.append(f"no eval loss for {', '.join(map(repr, missing))}")
            if bad:
                what.append("a non-finite eval loss for " + ", ".join(
                    f"{d!r} ({pending[d]})" for d in bad))
            self._warn(state, "%s at step %d: %s; the weights in force are kept.",
                       type(self).__name__, step, "; ".join(what))
            return
        losses = np.asarray([pending[d] for d in self.domains], dtype=np.float64)
        if self.target_kind == "text":
            from hf_mixture.mixture.target import TARGET_KEY

            self.last_target = float(pending[TARGET_KEY])
        self._update(losses, step=int(step), samples=samples_seen(args, state))

    def apply(self, weights: np.ndarray | Mapping[str, float], *, step: int, reason: str
              ) -> np.ndarray:
        """Set ``weights`` through the live mixture; returns the weights now in force.

        Under torch.distributed this is a collective (rank 0's weights win), so the
        returned array — not ``weights`` — is what the rule should remember.
        """
        self.live.set_weights(weights, reason=f"{self.name}: {reason}")
        self.updates += 1
        self.last_update_step = int(step)
        return self.live.weights_array

    # -- Trainer hooks ---------------------------------------------------------------------------
    @timed
    def on_train_begin(self, args, state, control, **kwargs):
        self._training = True
        report_to = getattr(args, "report_to", None) or []
        if isinstance(report_to, str):
            report_to = [report_to]
        if (self.config.log_weights and not self._attached and not self._warned_report_to
                and [r for r in report_to if r != "none"]):
            self._warned_report_to = True
            self._warn(state, "%s was passed in callbacks=[...], so the report_to integrations "
                       "(%s) run before it and do not receive the mixture/* keys; use "
                       "callback.attach(trainer) instead.", type(self).__name__,
                       ", ".join(report_to))
        if state.global_step > 0 and self._loaded_from is None:
            self._resume(args, state)

    def _resume(self, args: Any, state: Any) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        from hf_mixture.mixture.trainer import last_complete_checkpoint

        step = int(state.global_step)
        candidates: list[str] = []
        if isinstance(getattr(args, "resume_from_checkpoint", None), str):
            candidates.append(args.resume_from_checkpoint)
        candidates.append(os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}"))
        if os.path.isdir(args.output_dir):
            last = last_complete_checkpoint(args.output_dir)
            if last:
                candidates.append(last)
        for folder in candidates:
            path = self.state_file(folder)
            if not path.is_file():
                continue
            try:
                saved_step = json.loads(path.read_text(encoding="utf-8")).get("saved_at_step")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                saved_step = None
            if saved_step in (None, step):
                self.load_checkpoint(folder)
                return
        raise HFMixtureError(
            f"The run resumes at step {step}, but no checkpoint among "
            f"{', '.join(repr(c) for c in dict.fromkeys(candidates))} holds "
            f"hf_mixture_{self.name}.json; call {type(self).__name__}.load_checkpoint(<the "
            "checkpoint folder>) before trainer.train(). On several nodes without a shared "
            "filesystem, train with save_on_each_node=True so every node holds it.")

    @timed
    def on_step_begin(self, args, state, control, **kwargs):
        # Losses left incomplete by the last evaluation (a domain missing) are settled here.
        if self._pending:
            self._flush(args, state)

    @timed
    def on_step_end(self, args, state, control, **kwargs):
        if not self.wants_token_losses or not self._training:
            return
        if int(state.global_step) % self.train_every:
            return
        sums, tokens, counts = self.take_accumulated()
        self.on_train_losses(sums, tokens, counts, step=int(state.global_step),
                             samples=samples_seen(args, state))

    @timed
    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or not self._training:
            return
        found = self._domain_losses(metrics)
        if not found:
            return
        if self._pending_step is not None and self._pending_step != state.global_step:
            self._flush(args, state)
        self._pending.update(found)
        self._pending_step = int(state.global_step)
        if all(d in self._pending for d in self._wanted):
            if self.target_kind == "callable":
                self.last_target = self._call_target(kwargs.get("model"),
                                                     kwargs.get("processing_class"))
            self._flush(args, state)

    def _call_target(self, model: Any, tokenizer: Any) -> float:
        """A callable target's value, called on every rank (ZeRO-3 forwards are collective);
        rank 0's value is the one every rank keeps."""
        if model is None:
            raise HFMixtureError(f"{type(self).__name__}: the callable target needs the model, "
                                 "which this evaluation did not pass.")
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            value = float(self.target_fn(model, tokenizer))
        finally:
            if was_training:
                model.train()
        if not math.isfinite(value):
            raise HFMixtureError(f"The target callable returned {value!r}, not a finite number.")
        return float(broadcast_rank0(np.array([value]))[0])

    @timed
    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.config.log_weights or logs is None:
            return
        extra = self.log_values()
        logs.update(extra)
        # Trainer.log appended a copy of the logs to log_history just before on_log.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)

    def log_values(self) -> dict[str, float]:
        """The ``mixture/*`` entries added to each log."""
        return {f"{LOG_PREFIX}{d}": float(w) for d, w in zip(self.domains,
                                                              self.live.weights_array)}

    @timed
    def on_save(self, args, state, control, **kwargs):
        self._flush(args, state)
        # The processes that write the Trainer's checkpoint write ours: the global main
        # process, or with save_on_each_node=True each node's local main process (a
        # multi-node run without a shared filesystem needs that to resume).
        if not getattr(args, "should_save", getattr(state, "is_world_process_zero", True)):
            return
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if not os.path.isdir(folder):  # e.g. hyper-parameter search runs save elsewhere
            self._warn(state, "%s: checkpoint folder %s not found; its state was not saved.",
                       type(self).__name__, folder)
            return
        payload = self.state_dict()
        payload["saved_at_step"] = int(state.global_step)
        atomic_write_json(self.state_file(folder), payload)

    @timed
    def on_train_end(self, args, state, control, **kwargs):
        self._flush(args, state)
        self._training = False


def all_reduce_sum(array: np.ndarray) -> np.ndarray:
    """The element-wise sum of ``array`` over all ranks (``array`` itself without torch.distributed)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return np.asarray(array, dtype=np.float64)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return np.asarray(array, dtype=np.float64)
    import torch

    device = "cpu"
    if "nccl" in str(dist.get_backend()).lower():  # NCCL only reduces CUDA tensors
        device = f"cuda:{torch.cuda.current_device()}"
    tensor = torch.as_tensor(np.asarray(array, dtype=np.float64), device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy().astype(np.float64)


def broadcast_rank0(array: np.ndarray) -> np.ndarray:
    """Rank 0's ``array`` on every rank (``array`` itself without torch.distributed)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return np.asarray(array, dtype=np.float64)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return np.asarray(array, dtype=np.float64)
    mine = np.asarray(array, dtype=np.float64)
    return all_reduce_sum(mine if dist.get_rank() == 0 else np.zeros_like(mine))


def safe_name(name: str) -> str:
    """A file-name-safe form of a callback name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# -- callbacks by name (configs, recipes, the CLI: `callbacks: [{name: ado}]`) --------------------
_REGISTRY: dict[str, type[MixtureCallback]] = {}


def register_callback(cls: type[MixtureCallback]) -> type[MixtureCallback]:
    """Class decorator: make a :class:`MixtureCallback` available under its ``name`` attribute.

    A second class with a name already registered is refused, as predictors are.

    >>> @register_callback                                   # doctest: +SKIP
    ... class MyCallback(MixtureCallback):
    ...     name = "mine"
    """
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name.strip():
        raise HFMixtureError(f"{cls.__name__} needs its own non-empty class attribute 'name' to be "
                             f"registered, got {name!r}.")
    if name in _REGISTRY:
        raise HFMixtureError(f"A mixture callback named {name!r} is already registered "
                             f"({_REGISTRY[name].__name__}); choose another name.")
    _REGISTRY[name] = cls
    return cls


def registered_callback(name: str) -> type[MixtureCallback]:
    """The callback class registered as ``name``."""
    if name not in _REGISTRY:
        raise HFMixtureError(f"Unknown mixture callback {name!r}; the callbacks are "
                             f"{', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def callback_names() -> list[str]:
    """The registered callback names, sorted."""
    return sorted(_REGISTRY)
