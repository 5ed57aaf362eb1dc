"""A staged curriculum: the mixture's weights switch at token or optimizer-step boundaries.

Two ways to use it:

- **the mixture's own stages** (``stages=None``, ``unit="tokens"``): a
  :class:`~hf_mixture.mixture.LiveMixture` built from a Mixture with stages
  crosses them itself at the exact sample when a sampler draws from it; used on
  its own, this callback advances it (``LiveMixture.advance``) after each step.
  Either way the stage in force is logged as ``mixture/stage``.
- **a schedule of its own** (``stages=[...]``): each stage's weights are set
  through ``LiveMixture.set_weights`` after the optimizer step at which it starts
  (``unit="steps"``) or at which the run has consumed its start in tokens
  (``unit="tokens"``); they apply from the next batch.  Starts below 1 are
  fractions of the run (``max_steps``).

>>> from hf_mixture.mixture import LiveMixture, Stage
>>> live = LiveMixture(["web", "code"], [1, 0], seq_len=8)
>>> cb = ScheduleCallback(live, [Stage(0, {"web": 1, "code": 0}),
...                              Stage(100, {"web": 1, "code": 1}, name="anneal")], unit="steps")
>>> cb.stage_at(99), cb.stage_at(100)
(0, 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hf_mixture.errors import HFMixtureError

from .base import (
    LOG_PREFIX,
    MixtureCallback,
    MixtureCallbackConfig,
    register_callback,
    samples_per_step,
    samples_seen,
    timed,
)


@dataclass
class ScheduleConfig(MixtureCallbackConfig):
    """Configuration of :class:`ScheduleCallback` (every field is also a CLI flag)."""

    unit: str = field(default="tokens", metadata={
        "help": "What stage starts count: 'tokens' (tokens consumed by the run, all ranks) or "
                "'steps' (optimizer steps). The mixture's own stages are in tokens."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.unit not in ("tokens", "steps"):
            raise HFMixtureError(f"ScheduleConfig field 'unit' must be 'tokens' or 'steps', got "
                                 f"{self.unit!r}.")


@register_callback
class ScheduleCallback(MixtureCallback):
    """Switch the weights at stage boundaries (see the module doc).

    Args:
        live: the LiveMixture (or a MixtureDataset / MixtureDataLoader).
        stages: ``None`` (the mixture's own stages), a Mixture (its stages), or a
            list of :class:`~hf_mixture.mixture.Stage` / ``{"start", "weights",
            "name"}`` dicts naming every component.
    """

    config_class = ScheduleConfig
    name = "schedule"

    def __init__(self, live: Any, stages: Any = None,
                 config: ScheduleConfig | Mapping[str, Any] | None = None, **overrides: Any):
        super().__init__(live, config, **overrides)
        from hf_mixture.mixture import Mixture, Stage

        if isinstance(stages, Mixture):
            stages = stages.stages
        self.own = stages is not None
        self.stages: list[Any] = []
        if self.own:
            if not isinstance(stages, Sequence) or not stages:
                raise HFMixtureError("ScheduleCallback's stages must be a non-empty list of "
                                     "stages (or None for the mixture's own).")
            for i, s in enumerate(stages):
                if isinstance(s, Mapping):
                    try:
                        s = Stage(**s)
                    except TypeError as err:
                        raise HFMixtureError(f"stages[{i}] is malformed ({err}).") from None
                if not isinstance(s, Stage):
                    raise HFMixtureError(f"stages[{i}] must be a Stage or a mapping, got "
                                         f"{type(s).__name__}.")
                unknown = [k for k in s.weights if k not in self.domains]
                missing = [d for d in self.domains if d not in s.weights]
                if unknown or missing:
                    raise HFMixtureError(
                        f"stages[{i}] weights " + (f"name the unknown component {unknown[0]!r}"
                                                   if unknown else
                                                   f"lack the component {missing[0]!r}")
                        + f"; the components are {', '.join(self.domains)}.")
                self.stages.append(s)
        elif self.config.unit != "tokens":
            raise HFMixtureError("The mixture's own stages start at token counts: use "
                                 "unit='tokens', or pass stages=[...] to count in steps.")
        self.next_stage = 0          # stages applied so far (own schedule)
        self.starts: list[int] | None = None
        self._alone: bool | None = None  # a LiveMixture without a sampler: advanced here

    # -- the schedule --------------------------------------------------------------------------
    def _resolve_starts(self, total: int | None) -> list[int]:
        starts = []
        for i, s in enumerate(self.stages):
            if s.is_fraction and s.start != 0:
                if not total:
                    raise HFMixtureError(f"stages[{i}] starts at the fraction {s.start} of the "
                                         "run; set max_steps so the run's length is known.")
                starts.append(round(s.start * total))
            else:
                starts.append(int(s.start))
        for i in range(1, len(starts)):
            if starts[i] <= starts[i - 1]:
                raise HFMixtureError(f"stages[{i}] starts at {self.config.unit} {starts[i]}, not "
                                     f"after stages[{i - 1}] at {starts[i - 1]}.")
        return starts

    def stage_at(self, position: int) -> int:
        """Index of the own stage in force at ``position`` (steps or tokens; fractions unresolved)."""
        starts = self.starts if self.starts is not None else self._resolve_starts(None)
        return int(np.searchsorted(np.asarray(starts), position, side="right") - 1)

    @property
    def stage(self) -> int:
        """The stage in force."""
        return max(self.next_stage - 1, 0) if self.own else self.live.stage

    def _position(self, args: Any, state: Any) -> int:
        if self.config.unit == "steps":
            return int(state.global_step)
        return samples_seen(args, state) * self.live.seq_len

    def _advance(self, args: Any, state: Any) -> None:
        position = self._position(args, state)
        if not self.own:
            if self._alone is None or self._alone:
                try:
                    self.live.advance(position)
                    self._alone = True
                except HFMixtureError:
                    self._alone = False   # a sampler crosses the stages itself
            return
        if self.starts is None:
            return
        target = None
        while self.next_stage < len(self.stages) and self.starts[self.next_stage] <= position:
            target = self.next_stage
            self.next_stage += 1
        if target is not None:
            s = self.stages[target]
            label = f"stage {target}" + (f" ({s.name})" if s.name else "")
            self.apply({d: s.weights[d] for d in self.domains}, step=int(state.global_step),
                       reason=f"{label} at {self.config.unit} {self.starts[target]}")

    # -- hooks ---------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self._begin(args, state)

    @timed
    def _begin(self, args: Any, state: Any) -> None:
        if self.own:
            total = state.max_steps if state.max_steps and state.max_steps > 0 else None
            if total is not None and self.config.unit == "tokens":
                total = total * samples_per_step(args) * self.live.seq_len
            self.starts = self._resolve_starts(total)
        self._advance(args, state)

    @timed
    def on_step_end(self, args, state, control, **kwargs):
        self._advance(args, state)

    def log_values(self) -> dict[str, float]:
        values = super().log_values()
        values[f"{LOG_PREFIX}stage"] = float(self.stage)
        return values

    def _state(self) -> dict[str, Any]:
        return {"next_stage": self.next_stage, "starts": self.starts}

    def _load_state(self, state: Mapping[str, Any], where: str) -> None:
        try:
            self.next_stage = int(state["next_stage"])
            starts = state["starts"]
            self.starts = None if starts is None else [int(x) for x in starts]
        except (KeyError, TypeError, ValueError) as err:
            raise HFMixtureError(f"{where}: field 'rule' is malformed ({type(err).__name__}: "
                                 f"{err}).") from None
        if not 0 <= self.next_stage <= len(self.stages):
            raise HFMixtureError(f"{where}: field 'rule.next_stage' is {self.next_stage}; this "
                                 f"schedule has {len(self.stages)} stages.")
