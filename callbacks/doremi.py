"""DoReMi domain reweighting (Xie et al., 2023) as a Trainer callback.

**The paper's rule** (``reference_model=...``): at every optimizer step the
per-token excess loss of the model being trained (the proxy) over a fixed
reference model, on the training batch itself, is clipped at 0 *per token* and
averaged per domain (over all ranks); it drives an exponentiated-gradient step
on the domain weights, mixed with the uniform distribution::

    lambda_k = mean over domain k's tokens of max(loss_proxy - loss_ref, 0)
    a'       = a * exp(eta * lambda)            (in log space)
    a        = (1 - eps) * a' / sum(a') + eps / K

A domain absent from a step's batch keeps its last ``lambda`` (as the reference
implementation does).  The weights of every step are averaged; the average is
DoReMi's output mixture (:meth:`DoReMiCallback.export_mixture`), the one to
train the large model on.  The paper trains the proxy on uniformly sampled
batches whose loss is re-weighted by ``a``; here the batches are *resampled*
with ``a`` (same expected gradient, and the training run itself uses the
mixture).

**The eval-loss variant** (``reference_losses=...``): at each evaluation,
``lambda_k = max(eval loss_k - reference eval loss_k, 0)`` from one number per
domain, recorded by a reference run on the same eval sets.  Cheaper (no
reference forward pass), but it clips the *average*: a proxy 0.05 nats better
on average gives 0 where the per-token rule can give 0.5.  Reference losses: a
dict ``{domain: loss}``, or a file — one written by :func:`save_reference_losses`
(which records :func:`~hf_mixture.callbacks.eval_fingerprint` of the eval sets,
checked against this run's), a metrics JSON (``{"eval_<domain>_loss": ...}``)
or a ``trainer_state.json`` (the last ``eval_<domain>_loss`` of its
``log_history``).

>>> doremi_step(np.array([0.5, 0.5]), np.array([0.4, 0.0]), eta=1.0, smoothing=0.0).round(3).tolist()
[0.599, 0.401]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_mixture._checks import as_number, check_float, check_int
from hf_mixture.errors import HFMixtureError

from .base import (
    AdaptiveConfig,
    MixtureCallback,
    logger,
    register_callback,
    timed,
)

REFERENCE_FORMAT = "hf_mixture.reference_losses"


# -- the math (pure functions) -------------------------------------------------------------------
@contextlib.contextmanager
def _whole_on_every_rank():
    """Build models whole on this rank, even inside a DeepSpeed ZeRO-3 run.

    Under ZeRO-3, transformers' ``from_pretrained`` builds every model inside
    ``deepspeed.zero.Init`` (its parameters partitioned across the ranks), which a plain
    forward pass cannot use ("'weight' must be 2-D").  DoReMi's reference model only
    runs forwards, once per step: a whole copy on each rank costs its size in memory and
    no communication, where a sharded one would all-gather every layer at every step
    (docs/callbacks.md).  transformers decides through the HfDeepSpeedConfig it holds
    by weak reference; it is unset here and put back afterwards.
    """
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:  # pragma: no cover - transformers always has the module
        yield
        return
    if not hf_deepspeed.is_deepspeed_zero3_enabled():
        yield
        return
    held = hf_deepspeed._hf_deepspeed_config_weak_ref   # the one handle transformers keeps
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = held


def _parameter_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def doremi_step(weights: np.ndarray, excess: np.ndarray, *, eta: float, smoothing: float
                ) -> np.ndarray:
    """One exponentiated-gradient step on clipped ``excess`` losses, then uniform smoothing.

    ``weights`` are the current domain weights (> 0 where a domain may grow);
    ``excess`` is clipped at 0 here.  Computed in log space (no overflow for a
    large ``eta * excess``).
    """
    w = np.asarray(weights, dtype=np.float64)
    lam = np.maximum(np.asarray(excess, dtype=np.float64), 0.0)
    with np.errstate(divide="ignore"):
        logits = np.log(w / w.sum()) + eta * lam
    logits -= logits[np.isfinite(logits)].max()
    a = np.exp(logits)
    a /= a.sum()
    K = len(a)
    return (1.0 - smoothing) * a + smoothing / K


def doremi_token_scores(proxy_losses: Any, reference_losses: Any, mask: Any, component_ids: Any,
                        num_domains: int, previous: np.ndarray | None = None) -> np.ndarray:
    """DoReMi's ``lambda``: per-token ``max(proxy - reference, 0)``, then each domain's mean.

    ``proxy_losses``, ``reference_losses``, ``mask``: ``(B, T)`` per-token losses
    and which tokens count; ``component_ids``: ``(B,)`` each sequence's domain.
    A domain with no token here keeps ``previous`` (0 without it).

    >>> doremi_token_scores([[1.08, -1.18 + 2]], [[0.0, 2.0]], [[1, 1]], [0], 1).round(2).tolist()
    [0.54]
    """
    proxy = np.asarray(proxy_losses, dtype=np.float64)
    ref = np.asarray(reference_losses, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    ids = np.asarray(component_ids, dtype=np.int64).reshape(-1)
    excess = np.where(m, np.maximum(proxy - ref, 0.0), 0.0)
    sums = np.zeros(num_domains)
    tokens = np.zeros(num_domains)
    np.add.at(sums, ids, excess.sum(axis=1))
    np.add.at(tokens, ids, m.sum(axis=1))
    prev = np.zeros(num_domains) if previous is None else np.asarray(previous, dtype=np.float64)
    return np.where(tokens > 0, sums / np.maximum(tokens, 1.0), prev)


def save_reference_losses(path: str | os.PathLike, losses: Mapping[str, Any],
                          eval_datasets: Mapping[str, Any]) -> Path:
    """Write a reference run's per-domain eval ``losses`` with the fingerprint of its eval sets.

    ``losses``: ``{domain: loss}`` or the run's metrics (``eval_<domain>_loss``
    keys; other keys are kept out).  :class:`DoReMiCallback` refuses the file
    in a run whose eval sets differ.

    >>> save_reference_losses("ref.json", trainer.evaluate(), evals)   # doctest: +SKIP
    """
    from hf_mixture._io import atomic_write_json

    from .eval import eval_fingerprint

    kept = {}
    for key, value in losses.items():
        if isinstance(value, bool):
            continue
        if key in eval_datasets or (str(key).endswith("_loss") and isinstance(value, (int, float))):
            kept[str(key)] = float(value)
    if not kept:
        raise HFMixtureError("save_reference_losses found no per-domain loss in 'losses' (keys "
                             "'<domain>' or '<prefix>_<domain>_loss').")
    return atomic_write_json(Path(path), {"format": REFERENCE_FORMAT, "losses": kept,
                                          "eval_fingerprint": eval_fingerprint(eval_datasets)})


def _load_reference(source: Any, domains: list[str], prefix: str
                    ) -> tuple[np.ndarray, str | None]:
    fingerprint = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                data = None
            if isinstance(data, dict) and data.get("format") == REFERENCE_FORMAT:
                fingerprint = data.get("eval_fingerprint")
                if not isinstance(data.get("losses"), dict):
                    raise HFMixtureError(f"The reference losses file '{path}' has no 'losses' "
                                         "mapping.")
                return (read_reference_losses(data["losses"], domains, prefix=prefix,
                                              where=f"reference losses file '{path}'"),
                        None if fingerprint is None else str(fingerprint))
    return read_reference_losses(source, domains, prefix=prefix), None


def read_reference_losses(source: Mapping[str, float] | str | os.PathLike, domains: list[str],
                          *, prefix: str = "eval", where: str = "the reference losses"
                          ) -> np.ndarray:
    """Reference loss of each domain (in ``domains`` order) from a dict or a file.

    A mapping may be keyed by domain name or by metric name
    (``<prefix>_<domain>_loss``); a file is a metrics JSON of such keys, a
    ``trainer_state.json`` (the last logged value of each key wins) or a file of
    :func:`save_reference_losses`.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = f"reference losses file '{path}'"
        if not path.is_file():
            raise HFMixtureError(f"The {where} does not exist.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HFMixtureError(f"The {where} is not valid JSON ({err}).") from None
        if isinstance(data, dict) and data.get("format") == REFERENCE_FORMAT:
            data = data.get("losses")
        if isinstance(data, dict) and isinstance(data.get("log_history"), list):
            merged: dict[str, Any] = {}
            for entry in data["log_history"]:
                if isinstance(entry, dict):
                    merged.update(entry)
            data = merged
        source = data
    if not isinstance(source, Mapping):
        raise HFMixtureError(f"The reference losses must be a mapping of domain to loss or a "
                             f"file path, got {type(source).__name__}.")
    out = []
    for d in domains:
        key = f"{prefix}_{d}_loss"
        value = source.get(d, source.get(key))
        if value is None:
            raise HFMixtureError(f"The {where} have no loss for domain {d!r} (looked for keys "
                                 f"{d!r} and {key!r}).")
        v = as_number(value)
        if v is None:
            raise HFMixtureError(f"The {where} give domain {d!r} the loss {value!r}, not a "
                                 "number.")
        if not math.isfinite(v):
            raise HFMixtureError(f"The {where} give domain {d!r} the non-finite loss {value!r}.")
        out.append(v)
    return np.asarray(out, dtype=np.float64)


# -- config --------------------------------------------------------------------------------------
@dataclass
class DoReMiConfig(AdaptiveConfig):
    """Configuration of :class:`DoReMiCallback` (every field is also a CLI flag)."""

    reference_model: str | None = field(default=None, metadata={
        "help": "The paper's rule: a reference model (local folder or Hub id, loaded with "
                "AutoModelForCausalLM; in Python also a model) whose per-token losses on each "
                "training batch give the excess loss. Needs MixtureTrainer."})
    reference_losses: str | None = field(default=None, metadata={
        "help": "The eval-loss variant: a reference run's per-domain eval losses, a file of "
                "save_reference_losses (checked against this run's eval sets), a metrics JSON "
                "or trainer_state.json (in Python also a dict {domain: loss})."})
    train_every: int = field(default=1, metadata={
        "help": "With reference_model: optimizer steps per update (DoReMi: 1)."})
    eta: float = field(default=1.0, metadata={
        "help": "Step size of the exponentiated-gradient update (DoReMi: 1)."})
    smoothing: float = field(default=1e-3, metadata={
        "help": "Uniform smoothing eps: weights = (1-eps) * a + eps/K (DoReMi: 1e-3)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.eta = check_float(self.eta, "Config field 'eta'", 0.0, 1e6, low_open=True)
        self.smoothing = check_float(self.smoothing, "Config field 'smoothing'", 0.0, 1.0)
        check_int(self.train_every, "Config field 'train_every'", 1)


# -- the callback --------------------------------------------------------------------------------
@register_callback
class DoReMiCallback(MixtureCallback):
    """Exponentiated-gradient reweighting on clipped excess loss over a reference.

    Args:
        live: the LiveMixture (or a MixtureDataset / MixtureDataLoader).
        reference_losses: the eval-loss variant: ``{domain: loss}`` or a file
            (see the module doc); also the config field of the same name.
        reference_model: the paper's rule: a model or its folder / Hub id.
        eval_datasets: this run's per-domain eval sets, for the fingerprint check
            of the eval variant (:meth:`attach` reads them from the trainer).

    >>> from hf_mixture.mixture import LiveMixture
    >>> cb = DoReMiCallback(LiveMixture(["a", "b"], [1, 1], seq_len=8), {"a": 2.0, "b": 2.0})
    >>> cb.observe({"a": 3.0, "b": 2.1}, step=10)["a"] > 0.5
    True
    """

    config_class = DoReMiConfig
    supported_targets = ("mean",)
    target_note = ("DoReMi's step needs each domain's excess loss over a reference, per domain; a single target loss has no per-domain excess, so only 'mean' applies; use the 'aioli' callback, which measures each domain's effect on the target by interventions.")
    name = "doremi"

    def __init__(self, live: Any, reference_losses: Mapping[str, float] | str | os.PathLike
                 | None = None, config: DoReMiConfig | Mapping[str, Any] | None = None, *,
                 reference_model: Any = None, eval_datasets: Mapping[str, Any] | None = None,
                 **overrides: Any):
        if isinstance(reference_losses, Mapping):
            self._reference_source: Any = dict(reference_losses)
        else:
            self._reference_source = reference_losses
        if isinstance(reference_losses, (str, os.PathLike)):
            overrides.setdefault("reference_losses", os.fspath(reference_losses))
        self._reference_model: Any = None
        if isinstance(reference_model, (str, os.PathLike)):
            overrides.setdefault("reference_model", os.fspath(reference_model))
        elif reference_model is not None:
            self._reference_model = reference_model
        super().__init__(live, config, **overrides)
        source = self._reference_source if self._reference_source is not None \
            else self.config.reference_losses
        has_model = self._reference_model is not None or self.config.reference_model is not None
        if source is not None and has_model:
            raise HFMixtureError("DoReMiCallback takes reference_losses (the eval variant) or "
                                 "reference_model (the paper's rule), not both.")
        if source is None and not has_model:
            raise HFMixtureError("DoReMiCallback needs reference losses (a dict {domain: loss} or "
                                 "a reference run's losses file: the eval variant) or a "
                                 "reference_model (a model or its folder: the paper's per-token "
                                 "rule).")
        self.rule = "tokens" if has_model else "eval"
        self._checked = False                      # the eval-set fingerprint was checked
        K = len(self.domains)
        if self.rule == "eval":
            self.reference, self.reference_fingerprint = _load_reference(
                source, self.domains, self.config.metric_prefix)
        else:
            self.reference, self.reference_fingerprint = np.zeros(K), None
        self.eval_fingerprint: str | None = None
        if eval_datasets is not None:
            from .eval import eval_fingerprint

            self.eval_fingerprint = eval_fingerprint(eval_datasets)
            self._check_fingerprint()
        self.scores = np.zeros(K)                   # lambda of the last step (the paper's rule)
        self.current = self.live.weights_array       # alpha_t (smoothed)
        self.weight_sum = np.zeros(K)
        self.steps = 0

    # -- the reference -----------------------------------------------------------------------
    @property
    def wants_token_losses(self) -> bool:
        return self.rule == "tokens"

    def _domain_losses(self, metrics):
        # The paper's rule reads the training batches; eval losses are for reading only.
        return {} if self.rule == "tokens" else super()._domain_losses(metrics)

    def attach(self, trainer: Any) -> Any:
        if self.eval_fingerprint is None and isinstance(getattr(trainer, "eval_dataset", None),
                                                        Mapping):
            from .eval import eval_fingerprint

            self.eval_fingerprint = eval_fingerprint(trainer.eval_dataset)
        if self.rule == "eval":
            self._check_fingerprint()
        return super().attach(trainer)

    def _check_fingerprint(self) -> None:
        if self.rule != "eval" or self._checked:
            return
        ref, now = self.reference_fingerprint, self.eval_fingerprint
        if ref is None:
            logger.warning("DoReMiCallback: the reference losses carry no eval-set fingerprint, "
                           "so whether they were measured on this run's eval sets is not "
                           "checked; write them with save_reference_losses.")
        elif now is None:
            raise HFMixtureError(
                f"The reference losses were measured on the eval sets {ref}, but this "
                "DoReMiCallback does not know this run's eval sets; pass eval_datasets=... or "
                "use callback.attach(trainer).")
        elif now != ref:
            raise HFMixtureError(
                f"The reference losses were measured on the eval sets {ref}, but this run "
                f"evaluates on {now}; build both with the same domain_eval_datasets(store, "
                "mixture, seq_len, max_sequences, seed) or record new reference losses.")
        self._checked = True

    def on_train_begin(self, args, state, control, **kwargs):
        self._check_fingerprint()
        return super().on_train_begin(args, state, control, **kwargs)

    def reference_model(self, device: Any = None) -> Any:
        """The reference model (loaded on first use, in eval mode, on ``device``)."""
        if self._reference_model is None:
            from transformers import AutoModelForCausalLM

            try:
                with _whole_on_every_rank():
                    self._reference_model = AutoModelForCausalLM.from_pretrained(
                        self.config.reference_model)
            except (OSError, ValueError) as err:
                raise HFMixtureError(f"DoReMiConfig field 'reference_model': cannot load "
                                     f"{self.config.reference_model!r} ({err}).") from None
            logger.info("DoReMi reference model: %s parameters, %.1f MB on every rank (a whole "
                        "copy: ZeRO-3 shards only the trained model).",
                        f"{sum(p.numel() for p in self._reference_model.parameters()):,}",
                        _parameter_bytes(self._reference_model) / 2**20)
        model = self._reference_model
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        if device is not None and next(model.parameters()).device != device:
            model.to(device)
        return model

    @timed
    def on_token_losses(self, token_losses, mask, component_ids, *, inputs, model):
        import torch

        from hf_mixture.mixture.trainer import token_losses as per_token

        ref = self.reference_model(token_losses.device)
        with torch.no_grad():
            kwargs = {"input_ids": inputs["input_ids"]}
            if inputs.get("attention_mask") is not None:
                kwargs["attention_mask"] = inputs["attention_mask"]
            logits = ref(**kwargs).logits
            ref_losses, _ = per_token(logits, inputs["labels"])
            # Clipped per token, before any averaging: the paper's excess loss.
            excess = (token_losses - ref_losses.to(token_losses.dtype)).clamp(min=0)
        self.accumulate(excess, mask, component_ids)

    def on_train_losses(self, sums, tokens, samples_per_domain, *, step, samples):
        self.scores = np.where(tokens > 0, sums / np.maximum(tokens, 1.0), self.scores)
        if step < self.config.start_step:
            return
        new = doremi_step(self.current, self.scores, eta=self.config.eta,
                          smoothing=self.config.smoothing)
        applied = self.apply(new, step=step, reason=f"step {step}")
        self.weight_sum += applied
        self.steps += 1

    @property
    def average_weights(self) -> dict[str, float]:
        """The mean of the weights of every step so far (DoReMi's output)."""
        avg = self.weight_sum / self.steps if self.steps else self.current
        return {d: float(w) for d, w in zip(self.domains, avg)}

    def excess_losses(self, losses: np.ndarray) -> np.ndarray:
        """``max(loss - reference, 0)`` per domain."""
        return np.maximum(np.asarray(losses, dtype=np.float64) - self.reference, 0.0)

    def compute_weights(self, losses: np.ndarray, *, step: int, samples: int
                        ) -> np.ndarray | None:
        new = doremi_step(self.current, self.excess_losses(losses), eta=self.config.eta,
                          smoothing=self.config.smoothing)
        self.current = new
        self.weight_sum += new
        self.steps += 1
        return new

    def apply(self, weights, *, step, reason):
        applied = super().apply(weights, step=step, reason=reason)
        self.current = applied   # rank 0's weights under torch.distributed
        return applied

    def export_mixture(self, base: Any = None) -> Any:
        """A :class:`~hf_mixture.mixture.Mixture` with the averaged weights.

        ``base``: a Mixture whose components (queries, caps), seed and name are
        kept — only the weights change and stages are dropped; without it, one
        component per domain.
        """
        from hf_mixture.mixture import Component, Mixture

        avg = self.average_weights
        if base is None:
            return Mixture([Component(d, weight=w) for d, w in avg.items()],
                           description="DoReMi averaged weights")
        if list(base.component_names) != self.domains:
            raise HFMixtureError(f"export_mixture's base mixture has the components "
                                 f"{base.component_names}, not this run's {self.domains}.")
        comps = [Component(c.name, c.query, weight=avg[c.name], max_epochs=c.max_epochs)
                 for c in base.components]
        return Mixture(comps, seed=base.seed, name=base.name,
                       description=f"DoReMi averaged weights over {self.steps} updates")

    def _state(self) -> dict[str, Any]:
        return {"rule": self.rule, "reference": self.reference.tolist(),
                "reference_fingerprint": self.reference_fingerprint,
                "scores": self.scores.tolist(), "current": self.current.tolist(),
                "weight_sum": self.weight_sum.tolist(), "steps": self.steps}

    def _load_state(self, state: Mapping[str, Any], where: str) -> None:
        try:
            current = np.asarray([float(x) for x in state["current"]], dtype=np.float64)
            total = np.asarray([float(x) for x in state["weight_sum"]], dtype=np.float64)
            reference = np.asarray([float(x) for x in state["reference"]], dtype=np.float64)
            steps = int(state["steps"])
            scores = np.asarray([float(x) for x in state.get("scores", [0.0] * len(current))],
                                dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise HFMixtureError(f"{where}: field 'rule' is malformed ({type(err).__name__}: "
                                 f"{err}).") from None
        K = len(self.domains)
        if state.get("rule", "eval") != self.rule:
            raise HFMixtureError(f"{where} was saved by DoReMi's {state.get('rule', 'eval')!r} "
                                 f"rule, but this callback runs the {self.rule!r} rule.")
        if len(current) != K or len(total) != K or len(reference) != K or len(scores) != K:
            raise HFMixtureError(f"{where}: field 'rule' holds vectors of another length than "
                                 f"the {K} domains.")
        if not np.allclose(reference, self.reference):
            raise HFMixtureError(f"{where} was saved with the reference losses "
                                 f"{reference.tolist()}, but this run has "
                                 f"{self.reference.tolist()}.")
        self.current, self.weight_sum, self.steps = current, total, steps
        self.scores = scores
