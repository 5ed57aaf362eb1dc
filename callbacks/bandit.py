"""Online data mixing as a multi-armed bandit (EXP3; Albalak et al., 2023, "ODM").

Each domain is an arm; its reward is its loss (a domain with more loss left
has more to teach).  The reward estimate of arm ``i`` is a moving average, and
the mixture is an exponential-weights distribution tilted from the starting
mixture ``mu`` (the prior) and mixed with it, as ODM mixes with uniform
exploration::

    R_i   = beta * R_i + (1 - beta) * r_i                 (feedback="eval")
    eps_t = min(1/K, sqrt(ln K / (K t)))                   t: the optimizer step
    pi    = (1 - K eps_t) * softmax(log mu + lr * eps_{t-1} * R) + K eps_t * mu

With ``feedback="eval"`` (the default) every evaluation observes every domain's
held-out loss: full information, so no importance weighting (ODM's own
validation-based updater does not divide by pi either; dividing would hand the
rarely drawn domains the largest rewards).  On equal losses the tilt is equal
and ``pi == mu``: the prior's order is kept, and a higher loss moves weight
toward its domain.  ``feedback="train"`` is ODM's original signal: each
optimizer step's per-domain training loss, observed only for the domains drawn
in the batch, importance-weighted by the expected number of draws
(``r_i = sum of domain i's sample losses / (B * pi_i)``, unbiased for the
domain's mean loss) and left unchanged for the domains not drawn.

``mu`` is the starting mixture floored at ``min_prior`` (a domain that starts at
0 or almost 0 is still explored, and nothing is divided by ~0).  Rewards are
losses divided by the mean loss of the first observation
(``normalize_rewards``), so ``eps * R`` is of the same order whatever the
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

from hf_mixture._checks import check_float, check_int
from hf_mixture.errors import HFMixtureError

from .ado import floor_weights
from .base import AdaptiveConfig, MixtureCallback, register_callback


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


def exp3_probabilities(rewards: np.ndarray, *, t: int, prior: np.ndarray | None = None,
                       lr: float = 1.0) -> np.ndarray:
    """Arm probabilities at round ``t >= 1`` from the reward estimates ``rewards``.

    ``(1 - K eps_t) * softmax(log mu + lr * eps_{t-1} * R) + K eps_t * mu``
    (``eps_0 = eps_1``; ``mu`` uniform by default, which is ODM's
    ``(1 - K eps_t) * softmax(eps_{t-1} R) + eps_t``).  Every arm keeps at least
    ``K eps_t mu_i``; they sum to 1.

    >>> exp3_probabilities(np.ones(3), t=50, prior=np.array([.7, .2, .1])).round(3).tolist()
    [0.7, 0.2, 0.1]
    """
    R = np.asarray(rewards, dtype=np.float64)
    K = len(R)
    mu = np.full(K, 1.0 / K) if prior is None else np.asarray(prior, dtype=np.float64)
    mu = mu / mu.sum()
    eps_t = exp3_epsilon(t, K)
    eps_prev = exp3_epsilon(max(t - 1, 1), K)
    with np.errstate(divide="ignore"):
        z = np.log(mu) + float(lr) * eps_prev * R
    z -= z[np.isfinite(z)].max()
    soft = np.exp(z)
    soft /= soft.sum()
    return (1.0 - K * eps_t) * soft + K * eps_t * mu


def exp3_update(rewards: np.ndarray, observed: np.ndarray, *, decay: float,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Moving average ``R = decay * R + (1 - decay) * r`` of the arms in ``mask`` (all by default).

    Importance weighting, when the feedback needs it, is the caller's (see
    :class:`BanditCallback`): with every arm observed there is none.

    >>> exp3_update(np.zeros(2), np.array([1.0, 2.0]), decay=0.5).tolist()
    [0.5, 1.0]
    >>> exp3_update(np.zeros(2), np.array([1.0, 2.0]), decay=0.5, mask=np.array([True, False])).tolist()
    [0.5, 0.0]
    """
    R = np.asarray(rewards, dtype=np.float64)
    new = decay * R + (1.0 - decay) * np.asarray(observed, dtype=np.float64)
    if mask is None:
        return new
    return np.where(np.asarray(mask, dtype=bool), new, R)


# -- config --------------------------------------------------------------------------------------
@dataclass
class BanditConfig(AdaptiveConfig):
    """Configuration of :class:`BanditCallback` (every field is also a CLI flag)."""

    feedback: str = field(default="eval", metadata={
        "help": "'eval': every domain's held-out loss at each evaluation (full information, no "
                "importance weighting); 'train': ODM's per-batch training loss of the domains "
                "drawn, importance-weighted (needs MixtureTrainer)."})
    decay: float = field(default=0.9, metadata={
        "help": "beta: weight of the old reward estimate in its moving average (ODM: 0.9)."})
    lr: float = field(default=1.0, metadata={
        "help": "Multiplier of EXP3's step size eps_{t-1} on the rewards (1 = ODM)."})
    min_prior: float = field(default=0.01, metadata={
        "help": "Floor of the prior (the starting mixture) before it is used, so a domain "
                "starting at 0 is still explored (K * min_prior must be < 1)."})
    normalize_rewards: bool = field(default=True, metadata={
        "help": "Divide the losses by the mean loss of the first observation, so rewards are "
                "of order 1 whatever the loss scale."})
    train_every: int = field(default=1, metadata={
        "help": "With feedback='train': optimizer steps per update (ODM: 1)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.feedback not in ("eval", "train"):
            raise HFMixtureError(f"BanditConfig field 'feedback' must be 'eval' or 'train', got "
                                 f"{self.feedback!r}.")
        self.decay = check_float(self.decay, "Config field 'decay'", 0.0, 1.0, high_open=True)
        self.lr = check_float(self.lr, "Config field 'lr'", 0.0, 1e6)
        self.min_prior = check_float(self.min_prior, "Config field 'min_prior'", 0.0, 1.0, high_open=True)
        check_int(self.train_every, "Config field 'train_every'", 1)


# -- the callback --------------------------------------------------------------------------------
@register_callback
class BanditCallback(MixtureCallback):
    """EXP3 online data mixing (ODM) anchored at the starting mixture.

    >>> from hf_mixture.mixture import LiveMixture
    >>> cb = BanditCallback(LiveMixture(["a", "b", "c"], [1, 1, 1], seq_len=8))
    >>> w = cb.observe({"a": 5.0, "b": 3.0, "c": 3.0}, step=10)
    >>> w["a"] > w["b"]
    True
    """

    config_class = BanditConfig
    supported_targets = ("mean",)
    target_note = ("EXP3's reward of each arm is that domain's own loss; a single target loss gives every arm the same reward, so only 'mean' applies; use the 'aioli' callback, which measures each domain's effect on the target by interventions.")
    name = "bandit"

    def __init__(self, live: Any, config: BanditConfig | Mapping[str, Any] | None = None,
                 **overrides: Any):
        super().__init__(live, config, **overrides)
        K = len(self.domains)
        if K < 2:
            raise HFMixtureError("BanditCallback needs at least 2 domains (arms).")
        if self.config.min_prior * K >= 1:
            raise HFMixtureError(f"BanditConfig field 'min_prior' is {self.config.min_prior}; "
                                 f"with {K} domains it must be < {1 / K:.4g}.")
        self.prior = floor_weights(self.live.weights_array, self.config.min_prior)
        self.rewards = np.zeros(K)
        self.probabilities = self.live.weights_array
        self.rounds = 0
        self.reward_scale: float | None = None

    @property
    def wants_token_losses(self) -> bool:
        return self.config.feedback == "train"

    def _domain_losses(self, metrics):
        # With training-loss feedback the eval losses are for reading only.
        return {} if self.config.feedback == "train" else super()._domain_losses(metrics)

    def _scale(self, losses: np.ndarray) -> float:
        if self.reward_scale is None:
            finite = losses[np.isfinite(losses)]
            scale = float(np.mean(finite)) if self.config.normalize_rewards and len(finite) \
                else 1.0
            self.reward_scale = scale if scale > 0 else 1.0
        return self.reward_scale

    def _next(self, step: int) -> np.ndarray:
        self.rounds += 1
        # t is the training step, as in ODM (one round per step there): evaluations are
        # rarer, and counting them would keep eps_t at its 1/K cap (the prior) for long.
        return exp3_probabilities(self.rewards, t=max(int(step), 1), prior=self.prior,
                                  lr=self.config.lr)

    def compute_weights(self, losses: np.ndarray, *, step: int, samples: int
                        ) -> np.ndarray | None:
        observed = np.asarray(losses, dtype=np.float64) / self._scale(np.asarray(losses))
        self.rewards = exp3_update(self.rewards, observed, decay=self.config.decay)
        return self._next(step)

    def on_train_losses(self, sums, tokens, samples_per_domain, *, step, samples):
        if step < self.config.start_step or not samples_per_domain.sum() > 0:
            return
        seen = tokens > 0
        mean = np.where(seen, sums / np.maximum(tokens, 1.0), np.nan)
        scale = self._scale(mean)
        # Importance weighting for partial feedback: domain i is drawn B * pi_i times in
        # expectation, so (its samples' loss sum) / (B * pi_i) estimates its mean loss
        # without bias; pi is floored at K eps mu_i >= the prior floor, never ~0.
        batch = float(samples_per_domain.sum())
        pi = np.maximum(self.probabilities, 1e-6)
        per_sample = np.where(seen, sums / np.maximum(tokens, 1.0) * samples_per_domain, 0.0)
        observed = per_sample / (batch * pi) / scale
        self.rewards = exp3_update(self.rewards, observed, decay=self.config.decay, mask=seen)
        self.apply(self._next(step), step=step, reason=f"step {step}")

    def apply(self, weights, *, step, reason):
        applied = super().apply(weights, step=step, reason=reason)
        self.probabilities = applied
        return applied

    def _state(self) -> dict[str, Any]:
        return {"rewards": self.rewards.tolist(), "probabilities": self.probabilities.tolist(),
                "prior": self.prior.tolist(), "rounds": self.rounds,
                "reward_scale": self.reward_scale}

    def _load_state(self, state: Mapping[str, Any], where: str) -> None:
        try:
            rewards = np.asarray([float(x) for x in state["rewards"]], dtype=np.float64)
            probs = np.asarray([float(x) for x in state["probabilities"]], dtype=np.float64)
            prior = np.asarray([float(x) for x in state["prior"]], dtype=np.float64)
            rounds = int(state["rounds"])
            scale = state["reward_scale"]
            scale = None if scale is None else float(scale)
        except (KeyError, TypeError, ValueError) as err:
            raise HFMixtureError(f"{where}: field 'rule' is malformed ({type(err).__name__}: "
                                 f"{err}).") from None
        K = len(self.domains)
        if len(rewards) != K or len(probs) != K or len(prior) != K:
            raise HFMixtureError(f"{where}: field 'rule' holds vectors of another length than "
                                 f"the {K} domains.")
        self.rewards, self.probabilities, self.rounds = rewards, probs, rounds
        self.prior, self.reward_scale = prior, scale
