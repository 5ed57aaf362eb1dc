"""Live mixture weights: the one object through which weights change during training.

:class:`LiveMixture` holds the weights in force, the stage of the curriculum and
the full history of changes.  Every change — a user's, a callback's, a stage
boundary's — goes through one method, :meth:`LiveMixture.set_weights` (stages
through the same recording path), and is recorded as a :class:`WeightChange`
with the global sample index it applies from, so a run is reproducible from
``(seed, history)`` and resumable from its sampler state.

When a :class:`~hf_mixture.mixture.sampler.MixtureSampler` is attached (a
:class:`~hf_mixture.mixture.dataset.MixtureDataset` does this), a change applies
from the first sample *not yet handed to the training loop*: samples the
DataLoader prefetched under the old weights are re-decided (see
``docs/sampler.md``).  Stage boundaries are crossed automatically at the exact
sample whose first token reaches the stage's start (``tokens_seen = samples x
seq_len``).

A sampler drives a LiveMixture through a small public protocol, and nothing else:

- the sampler calls :meth:`LiveMixture.attach` once with itself, then, before
  deciding sample ``n``, :meth:`~LiveMixture.weights_from` ``(n)`` (crosses the stage
  boundaries reached and returns the weights in force) and
  :meth:`~LiveMixture.next_stage_sample` (where the weights change next);
  :meth:`~LiveMixture.mark` / :meth:`~LiveMixture.restore` roll the history back
  with a snapshot, and :meth:`~LiveMixture.history_state` /
  :meth:`~LiveMixture.load_history_state` carry it in the sampler's state;
- :meth:`~LiveMixture.set_weights` calls the attached :class:`LiveSampler`'s
  ``rewind_for_change()`` (forget what was decided ahead; return the first sample
  not yet handed to the training loop) and, once the change is recorded,
  ``replay()`` (decide those samples again under the new weights).

Under ``torch.distributed`` :meth:`~LiveMixture.set_weights` is a collective: call
it on every rank (Trainer callbacks run on every rank); the weights of rank 0
are broadcast so every rank draws the same components.

>>> live = LiveMixture(["code", "prose"], [0.5, 0.5], seq_len=4)
>>> live.set_weights({"code": 3, "prose": 1}, reason="more code").weights
(0.75, 0.25)
>>> [(c.sample, c.reason) for c in live.history]
[(0, 'initial'), (0, 'more code')]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .._checks import as_number, check_int
from ..errors import HFMixtureError


@dataclass(frozen=True)
class WeightChange:
    """One entry of the weights history.

    ``sample`` is the first global sample index drawn with ``weights``;
    ``tokens = sample * seq_len`` is how many tokens the run had handed out
    before it.  ``stage`` is the curriculum stage index in force from then on.
    """

    sample: int
    tokens: int
    weights: tuple[float, ...]
    reason: str
    stage: int

    def to_dict(self) -> dict[str, Any]:
        return {"sample": self.sample, "tokens": self.tokens, "weights": list(self.weights),
                "reason": self.reason, "stage": self.stage}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], num_components: int, where: str
                  ) -> WeightChange:
        try:
            weights = tuple(float(x) for x in data["weights"])
            change = cls(int(data["sample"]), int(data["tokens"]), weights,
                         str(data.get("reason", "")), int(data.get("stage", 0)))
        except (KeyError, TypeError, ValueError) as err:
            raise HFMixtureError(f"{where} is malformed ({type(err).__name__}: {err}).") from None
        if len(weights) != num_components or change.sample < 0:
            raise HFMixtureError(f"{where} holds {len(weights)} weights at sample "
                                 f"{change.sample}; expected {num_components} weights at a "
                                 "sample >= 0.")
        return change


@dataclass(frozen=True)
class StageBoundary:
    """A curriculum stage begins at global sample ``sample`` with ``weights``."""

    sample: int
    stage: int
    weights: np.ndarray
    name: str | None = None


class LiveSampler(Protocol):
    """What :meth:`LiveMixture.set_weights` asks of the sampler attached to it."""

    def rewind_for_change(self) -> int:
        """Drop what was decided ahead; return the first sample not yet handed to training."""

    def replay(self) -> None:
        """Decide the dropped samples again, under the weights now in force."""


class LiveMixture:
    """The weights in force, the curriculum stage, and the history of changes.

    ``stages`` are :class:`StageBoundary` s after the first (sorted by sample);
    :meth:`from_mixture` builds them from a :class:`~hf_mixture.mixture.Mixture`.
    """

    def __init__(self, component_names: Sequence[str], weights: Mapping[str, float] | Sequence[float],
                 *, seq_len: int, stages: Sequence[StageBoundary] = (), stage: int = 0):
        self.names = list(component_names)
        if len(set(self.names)) != len(self.names) or not self.names:
            raise HFMixtureError(f"Component names must be unique and non-empty, got {self.names}.")
        self.seq_len = check_int(seq_len, "seq_len", 1)
        self.stages = list(stages)
        initial = self.normalize(weights)
        self._stage = int(stage)            # index of the stage in force
        self._next_boundary = 0             # how many of self.stages have been applied
        self._current = initial
        self.history: list[WeightChange] = [
            WeightChange(0, 0, tuple(initial.tolist()), "initial", self._stage)]
        self._sampler: LiveSampler | None = None  # see attach()
        self._position = 0                  # next sample, when no sampler is attached

    # -- construction from a Mixture -------------------------------------------------------
    @classmethod
    def from_mixture(cls, mixture: Any, *, seq_len: int, total_tokens: int | None = None
                     ) -> LiveMixture:
        """Initial weights and stage boundaries (in samples) of ``mixture``.

        A stage starting at token ``T`` applies from sample ``ceil(T / seq_len)``,
        the first sample whose first token is at or after ``T``.

        >>> from hf_mixture.mixture import Mixture, Component, Stage
        >>> m = Mixture([Component("a"), Component("b")],
        ...             stages=[Stage(0, {"a": 1, "b": 0}), Stage(100, {"a": 0, "b": 1})])
        >>> [s.sample for s in LiveMixture.from_mixture(m, seq_len=8).stages]
        [13]
        """
        names = list(mixture.component_names)
        if not mixture.stages:
            return cls(names, mixture.weights(), seq_len=seq_len)
        starts = mixture.stage_boundaries(total_tokens)
        boundaries = []
        for i in range(1, len(starts)):
            w = mixture.stage_weights(i)
            boundaries.append(StageBoundary(-(-int(starts[i]) // int(seq_len)), i,
                                            np.array([w[n] for n in names], dtype=np.float64),
                                            mixture.stages[i].name))
        # Two stages that start inside the same sample: the later one wins from that sample.
        dedup: dict[int, StageBoundary] = {}
        for b in boundaries:
            dedup[b.sample] = b
        first = mixture.stage_weights(0)
        live = cls(names, [first[n] for n in names], seq_len=seq_len,
                   stages=sorted(dedup.values(), key=lambda b: b.sample))
        live.weights_from(0)  # a stage whose start rounds to sample 0 is in force at once
        live.history[:] = [WeightChange(0, 0, tuple(live._current.tolist()), "initial",
                                        live._stage)]
        return live

    # -- reading -------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """The weights in force now, by component name (they sum to 1)."""
        return {n: float(w) for n, w in zip(self.names, self._current)}

    @property
    def weights_array(self) -> np.ndarray:
        return self._current.copy()

    @property
    def stage(self) -> int:
        """Index of the curriculum stage in force (0 without stages)."""
        return self._stage

    def normalize(self, weights: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
        """Validate ``weights`` and scale them to sum to 1 (component order).

        A mapping names components (an unknown name is an error; a component it
        leaves out gets weight 0); a sequence gives one weight per component.
        """
        if isinstance(weights, Mapping):
            unknown = [k for k in weights if k not in self.names]
            if unknown:
                raise HFMixtureError(f"set_weights names the unknown component {unknown[0]!r}; "
                                     f"the components are {', '.join(self.names)}.")
            raw = [weights.get(n, 0.0) for n in self.names]
        else:
            raw = list(np.asarray(weights, dtype=object).reshape(-1)) \
                if not isinstance(weights, (str, bytes)) else [weights]
            if len(raw) != len(self.names):
                raise HFMixtureError(f"set_weights got {len(raw)} weights for "
                                     f"{len(self.names)} components ({', '.join(self.names)}).")
        values = []
        for name, value in zip(self.names, raw):
            v = as_number(value)
            if v is None:
                raise HFMixtureError(f"The weight of component {name!r} is {value!r}, not a "
                                     "number.")
            if not math.isfinite(v) or v < 0:
                raise HFMixtureError(f"The weight of component {name!r} is {value!r}; weights "
                                     "must be finite and >= 0.")
            values.append(v)
        w = np.asarray(values, dtype=np.float64)
        total = w.sum()
        if not total > 0:
            raise HFMixtureError(f"The weights {dict(zip(self.names, values))} are all zero; at "
                                 "least one must be positive.")
        out = w / total
        # a positive weight stays positive: one far below the others (5e-324 beside 2) would
        # underflow to 0, and the component would end when the others' caps run out
        out[(w > 0) & (out == 0)] = np.finfo(np.float64).smallest_subnormal
        return out

    # -- changing --------------------------------------------------------------------------
    def set_weights(self, weights: Mapping[str, float] | Sequence[float] | np.ndarray, *,
                    reason: str = "") -> WeightChange:
        """Set new weights from the next sample not yet handed to the training loop.

        ``weights``: a mapping by component name (left-out components get 0) or
        one number per component; they are normalized.  NaN, negative, all-zero
        weights and unknown names raise :class:`~hf_mixture.errors.HFMixtureError`.
        Under ``torch.distributed`` this is a collective and rank 0's weights win.

        >>> LiveMixture(["a", "b"], [1, 1], seq_len=2).set_weights([0, 2]).weights
        (0.0, 1.0)
        """
        w = _broadcast_from_rank0(self.normalize(weights))
        sampler = self._sampler
        n = sampler.rewind_for_change() if sampler is not None else self._position
        self.weights_from(n)
        change = self._record(n, w, reason or "set_weights")
        if sampler is not None:
            sampler.replay()
        return change

    def advance(self, tokens_seen: int) -> None:
        """Apply the stage boundaries reached after ``tokens_seen`` tokens.

        Only for a LiveMixture used on its own: with a sampler attached, stages
        advance automatically from ``samples x seq_len``.
        """
        if self._sampler is not None:
            raise HFMixtureError("This LiveMixture belongs to a sampler, which crosses stage "
                                 "boundaries itself; advance() is for a LiveMixture used alone.")
        check_int(tokens_seen, "tokens_seen", 0)
        self._position = max(self._position, -(-int(tokens_seen) // self.seq_len))
        self.weights_from(self._position)

    # -- the sampler protocol (see the module docstring) ------------------------------------
    def attach(self, sampler: LiveSampler) -> None:
        """Make ``sampler`` the one that draws with these weights (it is told of every change)."""
        self._sampler = sampler

    def weights_from(self, sample: int) -> np.ndarray:
        """The weights that decide sample ``sample``, after recording every stage boundary at
        or before it (at its own sample index).  Read-only: change weights with set_weights."""
        while self._next_boundary < len(self.stages) and \
                self.stages[self._next_boundary].sample <= sample:
            b = self.stages[self._next_boundary]
            self._next_boundary += 1
            self._stage = b.stage
            label = f"stage {b.stage}" + (f" ({b.name})" if b.name else "")
            self._record(b.sample, b.weights / b.weights.sum(), label)
        view = self._current.view()
        view.flags.writeable = False
        return view

    def next_stage_sample(self) -> int | None:
        """The sample at which the next stage boundary applies (None after the last)."""
        if self._next_boundary < len(self.stages):
            return self.stages[self._next_boundary].sample
        return None

    def mark(self) -> tuple[int, int, int]:
        """A snapshot of the history's position, for :meth:`restore` and :meth:`history_state`."""
        return len(self.history), self._next_boundary, self._stage

    def restore(self, mark: tuple[int, int, int]) -> None:
        """Roll the history back to ``mark`` (changes recorded since are dropped)."""
        length, next_boundary, stage = mark
        del self.history[length:]
        self._next_boundary, self._stage = next_boundary, stage
        self._current = np.asarray(self.history[-1].weights, dtype=np.float64)

    def history_state(self, mark: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """The fields ``stage``, ``stages_applied`` and ``history`` of a sampler state, as of
        ``mark`` (now by default)."""
        length, next_boundary, stage = self.mark() if mark is None else mark
        return {"stage": stage, "stages_applied": next_boundary,
                "history": [c.to_dict() for c in self.history[:length]]}

    def load_history_state(self, state: Mapping[str, Any], where: str) -> None:
        """Restore :meth:`history_state`'s fields from ``state``; ``where`` names it in errors."""
        entries = state.get("history")
        if not isinstance(entries, list) or not entries:
            raise HFMixtureError(f"{where}: field 'history' must be a non-empty list of weight "
                                 "changes.")
        history = [WeightChange.from_dict(e, len(self.names), f"{where}: history[{i}]")
                   for i, e in enumerate(entries)]
        applied = int(state.get("stages_applied", 0))
        if not 0 <= applied <= len(self.stages):
            raise HFMixtureError(f"{where}: field 'stages_applied' is {applied}; this mixture has "
                                 f"{len(self.stages)} stage boundaries.")
        self.history[:] = history
        self._next_boundary = applied
        self._stage = int(state.get("stage", 0))
        self._current = np.asarray(history[-1].weights, dtype=np.float64)

    def _record(self, sample: int, weights: np.ndarray, reason: str) -> WeightChange:
        change = WeightChange(int(sample), int(sample) * self.seq_len,
                              tuple(float(x) for x in weights), reason, self._stage)
        self._current = np.asarray(weights, dtype=np.float64)
        self.history.append(change)
        return change

    def __repr__(self) -> str:
        w = ", ".join(f"{n}={x:.3f}" for n, x in zip(self.names, self._current))
        return f"LiveMixture({w}, stage={self._stage}, changes={len(self.history) - 1})"


def check_same_run(state: Mapping[str, Any], mine: Mapping[str, Any], where: str,
                   holder: str) -> None:
    """Refuse a saved state whose identity fields differ from ``mine`` (another run's state)."""
    for field, value in mine.items():
        if state.get(field) != value:
            raise HFMixtureError(
                f"{where} was saved with {field}={state.get(field)!r}, but this {holder} has "
                f"{field}={value!r}; it belongs to another run and cannot be resumed here.")


def _broadcast_from_rank0(weights: np.ndarray) -> np.ndarray:
    """Rank 0's weights on every rank when torch.distributed runs; ``weights`` otherwise."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return weights
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return weights
    import torch

    device = "cpu"
    if "nccl" in str(dist.get_backend()).lower():  # NCCL only moves CUDA tensors
        device = f"cuda:{torch.cuda.current_device()}"
    tensor = torch.as_tensor(weights, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.cpu().numpy().astype(np.float64)
