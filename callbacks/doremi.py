"""DoReMi-style domain reweighting (Xie et al., 2023) as a Trainer callback.

At each evaluation the per-domain *excess loss* of the model being trained over
a reference model, clipped at 0, drives an exponentiated-gradient step on the
domain weights, mixed with the uniform distribution::

    lambda = max(loss - reference_loss, 0)
    a'     = a * exp(eta * lambda)            (in log space)
    a      = (1 - eps) * a' / sum(a') + eps / K

The weights of every step are averaged; the average is DoReMi's output mixture
(:meth:`DoReMiCallback.export_mixture`), the one to train the large model on.

Reference losses come from a reference run: a dict ``{domain: loss}``, or a file
— a metrics JSON (``{"eval_<domain>_loss": ...}`` as written by
``trainer.save_metrics("eval", ...)``) or a ``trainer_state.json`` (the last
``eval_<domain>_loss`` of its ``log_history``).

>>> doremi_step(np.array([0.5, 0.5]), np.array([0.4, 0.0]), eta=1.0, smoothing=0.0).round(3).tolist()
[0.599, 0.401]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hf_mixture.errors import HFMixtureError

from .base import MixtureCallback, MixtureCallbackConfig, _check_float


# -- the math (pure functions) -------------------------------------------------------------------
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


def read_reference_losses(source: Mapping[str, float] | str | os.PathLike, domains: list[str],
                          *, prefix: str = "eval") -> np.ndarray:
    """Reference loss of each domain (in ``domains`` order) from a dict or a file.

    A mapping may be keyed by domain name or by metric name
    (``<prefix>_<domain>_loss``); a file is a metrics JSON of such keys or a
    ``trainer_state.json`` (the last logged value of each key wins).
    """
    where = "the reference losses"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = f"reference losses file '{path}'"
        if not path.is_file():
            raise HFMixtureError(f"The {where} does not exist.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HFMixtureError(f"The {where} is not valid JSON ({err}).") from None
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
        try:
            if isinstance(value, bool):
                raise TypeError
            v = float(value)
        except (TypeError, ValueError):
            raise HFMixtureError(f"The {where} give domain {d!r} the loss {value!r}, not a "
                                 "number.") from None
        if not math.isfinite(v):
            raise HFMixtureError(f"The {where} give domain {d!r} the non-finite loss {value!r}.")
        out.append(v)
    return np.asarray(out, dtype=np.float64)


# -- config --------------------------------------------------------------------------------------
@dataclass
class DoReMiConfig(MixtureCallbackConfig):
    """Configuration of :class:`DoReMiCallback` (every field is also a CLI flag)."""

    reference_losses: str | None = field(default=None, metadata={
        "help": "Reference run's per-domain eval losses: a metrics JSON or trainer_state.json "
                "path (in Python also a dict {domain: loss})."})
    eta: float = field(default=1.0, metadata={
        "help": "Step size of the exponentiated-gradient update (DoReMi: 1)."})
    smoothing: float = field(default=1e-3, metadata={
        "help": "Uniform smoothing eps: weights = (1-eps) * a + eps/K (DoReMi: 1e-3)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.eta = _check_float(self.eta, "eta", 0.0, 1e6, low_open=True)
        self.smoothing = _check_float(self.smoothing, "smoothing", 0.0, 1.0)


# -- the callback --------------------------------------------------------------------------------
class DoReMiCallback(MixtureCallback):
    """Exponentiated-gradient reweighting on clipped excess eval loss over a reference run.

    Args:
        live: the LiveMixture (or a MixtureDataset / MixtureDataLoader).
        reference_losses: ``{domain: loss}`` or a file (see the module doc); may
            instead be given as the config field of the same name.

    >>> from hf_mixture.mixture import LiveMixture
    >>> cb = DoReMiCallback(LiveMixture(["a", "b"], [1, 1], seq_len=8), {"a": 2.0, "b": 2.0})
    >>> cb.observe({"a": 3.0, "b": 2.1}, step=10)["a"] > 0.5
    True
    """

    config_class = DoReMiConfig
    name = "doremi"

    def __init__(self, live: Any, reference_losses: Mapping[str, float] | str | os.PathLike
                 | None = None, config: DoReMiConfig | Mapping[str, Any] | None = None,
                 **overrides: Any):
        if isinstance(reference_losses, Mapping):
            self._reference_source: Any = dict(reference_losses)
        else:
            self._reference_source = reference_losses
        if isinstance(reference_losses, (str, os.PathLike)):
            overrides.setdefault("reference_losses", os.fspath(reference_losses))
        super().__init__(live, config, **overrides)
        source = self._reference_source if self._reference_source is not None \
            else self.config.reference_losses
        if source is None:
            raise HFMixtureError("DoReMiCallback needs reference losses: a dict {domain: loss} "
                                 "or the path of a reference run's metrics / trainer_state.json.")
        self.reference = read_reference_losses(source, self.domains,
                                               prefix=self.config.metric_prefix)
        self.current = self.live.weights_array       # alpha_t (smoothed)
        self.weight_sum = np.zeros(len(self.domains))
        self.steps = 0

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

    def observe(self, losses: Mapping[str, float], *, step: int) -> dict[str, float]:
        """Apply one evaluation's ``losses`` without a Trainer; returns the new weights."""
        vector = np.asarray([float(losses[d]) for d in self.domains], dtype=np.float64)
        self.apply(self.compute_weights(vector, step=step, samples=0), step=step,
                   reason=f"step {step}")
        return self.weights

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
        return {"reference": self.reference.tolist(), "current": self.current.tolist(),
                "weight_sum": self.weight_sum.tolist(), "steps": self.steps}

    def _load_state(self, state: Mapping[str, Any], where: str) -> None:
        try:
            current = np.asarray([float(x) for x in state["current"]], dtype=np.float64)
            total = np.asarray([float(x) for x in state["weight_sum"]], dtype=np.float64)
            reference = np.asarray([float(x) for x in state["reference"]], dtype=np.float64)
            steps = int(state["steps"])
        except (KeyError, TypeError, ValueError) as err:
            raise HFMixtureError(f"{where}: field 'rule' is malformed ({type(err).__name__}: "
                                 f"{err}).") from None
        K = len(self.domains)
        if len(current) != K or len(total) != K or len(reference) != K:
            raise HFMixtureError(f"{where}: field 'rule' holds vectors of another length than "
                                 f"the {K} domains.")
        if not np.allclose(reference, self.reference):
            raise HFMixtureError(f"{where} was saved with the reference losses "
                                 f"{reference.tolist()}, but this run has "
                                 f"{self.reference.tolist()}.")
        self.current, self.weight_sum, self.steps = current, total, steps
