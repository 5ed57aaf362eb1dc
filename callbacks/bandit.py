"""Online data mixing as a multi-armed bandit (EXP3; Albalak et al., 2023, "ODM").

Each domain is an arm; its reward is its loss (a domain with more loss left
has more to teach).  The reward estimate of arm ``i`` is an importance-weighted
moving average, and the mixture is EXP3's exploration-mixed softmax::

    R_i  = beta * R_i + (1 - beta) * r_i / pi_i
    eps_t = min(1/K, sqrt(ln K / (K t)))       t: the optimizer step
    pi_i = (1 - K eps_t) * softmax(eps_{t-1} * R)_i + eps_t

ODM sees one arm's training loss per step; here every evaluation reports every
domain's held-out loss, so all arms are updated, each divided by the probability
it was played with.  Rewards are losses divided by the mean loss of the first
evaluation (``normalize_rewards``), so ``eps * R`` stays of order 1 whatever the
tokenizer's loss scale.

>>> exp3_probabilities(np.zeros(4), t=1).tolist()
[0.25, 0.25, 0.25, 0.25]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hf_mixture.errors import HFMixtureError

from .base import MixtureCallback, MixtureCallbackConfig, _check_float


# -- the math (pure functions) -------------------------------------------------------------------
def exp3_epsilon(t: int, num_arms: int) -> float:
    """EXP3's exploration rate ``min(1/K, sqrt(ln K / (K t)))`` at round ``t >= 1``.

    >>> round(exp3_epsilon(100, 4), 4)
    0.0589
    """
    K = int(num_arms)
    if K < 2:
        return 0.0
    return min(1.0 / K, math.sqrt(math.log(K) / (K * max(int(t), 1))))


def exp3_probabilities(rewards: np.ndarray, *, t: int) -> np.ndarray:
    """Arm probabilities at round ``t >= 1`` from the reward estimates ``rewards``.

    ``(1 - K eps_t) * softmax(eps_{t-1} * R) + eps_t`` (with ``eps_0 = eps_1``):
    every arm keeps at least ``eps_t``; they sum to 1.
    """
    R = np.asarray(rewards, dtype=np.float64)
    K = len(R)
    eps_t = exp3_epsilon(t, K)
    eps_prev = exp3_epsilon(max(t - 1, 1), K)
    z = eps_prev * R
    z -= z.max()
    soft = np.exp(z)
    soft /= soft.sum()
    return (1.0 - K * eps_t) * soft + eps_t


def exp3_update(rewards: np.ndarray, observed: np.ndarray, probabilities: np.ndarray, *,
                decay: float) -> np.ndarray:
    """Importance-weighted moving average ``R = decay * R + (1 - decay) * r / pi``.

    >>> exp3_update(np.zeros(2), np.array([1.0, 1.0]), np.array([0.5, 0.25]), decay=0.5).tolist()
    [1.0, 2.0]
    """
    pi = np.maximum(np.asarray(probabilities, dtype=np.float64), 1e-12)
    return decay * np.asarray(rewards, dtype=np.float64) + (1.0 - decay) * observed / pi


# -- config --------------------------------------------------------------------------------------
@dataclass
class BanditConfig(MixtureCallbackConfig):
    """Configuration of :class:`BanditCallback` (every field is also a CLI flag)."""

    decay: float = field(default=0.9, metadata={
        "help": "beta: weight of the old reward estimate in its moving average (ODM: 0.9)."})
    normalize_rewards: bool = field(default=True, metadata={
        "help": "Divide the losses by the mean loss of the first evaluation, so rewards are of "
                "order 1 whatever the loss scale."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.decay = _check_float(self.decay, "decay", 0.0, 1.0, high_open=True)


# -- the callback --------------------------------------------------------------------------------
class BanditCallback(MixtureCallback):
    """EXP3 online data mixing with the per-domain eval loss as reward.

    >>> from hf_mixture.mixture import LiveMixture
    >>> cb = BanditCallback(LiveMixture(["a", "b", "c"], [1, 1, 1], seq_len=8))
    >>> w = cb.observe({"a": 5.0, "b": 3.0, "c": 3.0}, step=10)
    >>> w["a"] > w["b"]
    True
    """

    config_class = BanditConfig
    name = "bandit"

    def __init__(self, live: Any, config: BanditConfig | Mapping[str, Any] | None = None,
                 **overrides: Any):
        super().__init__(live, config, **overrides)
        K = len(self.domains)
        if K < 2:
            raise HFMixtureError("BanditCallback needs at least 2 domains (arms).")
        self.rewards = np.zeros(K)
        self.probabilities = self.live.weights_array
        self.rounds = 0
        self.reward_scale: float | None = None

    def compute_weights(self, losses: np.ndarray, *, step: int, samples: int
                        ) -> np.ndarray | None:
        if self.reward_scale is None:
            self.reward_scale = float(np.mean(losses)) if self.config.normalize_rewards else 1.0
            if not self.reward_scale > 0:
                self.reward_scale = 1.0
        observed = np.asarray(losses, dtype=np.float64) / self.reward_scale
        self.rewards = exp3_update(self.rewards, observed, self.probabilities,
                                   decay=self.config.decay)
        self.rounds += 1
        # t is the training step, as in ODM (one round per step there): evaluations are
        # rarer, and counting them would keep eps_t at its 1/K cap (uniform) for long.
        return exp3_probabilities(self.rewards, t=max(int(step), 1))

    def observe(self, losses: Mapping[str, float], *, step: int) -> dict[str, float]:
        """Apply one evaluation's ``losses`` without a Trainer; returns the new weights."""
        vector = np.asarray([float(losses[d]) for d in self.domains], dtype=np.float64)
        self.apply(self.compute_weights(vector, step=step, samples=0), step=step,
                   reason=f"step {step}")
        return self.weights

    def apply(self, weights, *, step, reason):
        applied = super().apply(weights, step=step, reason=reason)
        self.probabilities = applied
        return applied

    def _state(self) -> dict[str, Any]:
        return {"rewards": self.rewards.tolist(), "probabilities": self.probabilities.tolist(),
                "rounds": self.rounds, "reward_scale": self.reward_scale}

    def _load_state(self, state: Mapping[str, Any], where: str) -> None:
        try:
            rewards = np.asarray([float(x) for x in state["rewards"]], dtype=np.float64)
            probs = np.asarray([float(x) for x in state["probabilities"]], dtype=np.float64)
            rounds = int(state["rounds"])
            scale = state["reward_scale"]
            scale = None if scale is None else float(scale)
        except (KeyError, TypeError, ValueError) as err:
            raise HFMixtureError(f"{where}: field 'rule' is malformed ({type(err).__name__}: "
                                 f"{err}).") from None
        if len(rewards) != len(self.domains) or len(probs) != len(self.domains):
            raise HFMixtureError(f"{where}: field 'rule' holds vectors of another length than "
                                 f"the {len(self.domains)} domains.")
        self.rewards, self.probabilities, self.rounds = rewards, probs, rounds
        self.reward_scale = scale
