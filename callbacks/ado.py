"""ADO — Adaptive Data Optimization (Jiang et al., 2024) as a Trainer callback.

Per domain ``k`` a power law of the loss in the samples seen,
``L_k(n) = eps_k + beta_k * n**(-alpha_k)``, is fitted to the losses so far.
Its slope ``-dL_k/dn = alpha_k * (L_k(n) - eps_k) / n`` — how much loss the next
sample is predicted to remove — is multiplied by a prior ``mu_k`` (the initial
mixture) and a credit term ``lambda_k = h_k ** s`` (``h`` an EMA of the policy:
a domain sampled more recently gets more of the credit for the progress) to
give the preference ``rho``; the policy applied is smoothed against the running
mean of past preferences, which starts at the prior and counts every
evaluation since the start of training (so the prior keeps the weight of the
warm-up), and floored::

    rho    ∝ mu * h**s * alpha * (L(n) - eps) / n
    pi     = gamma * rho + (1 - gamma) * rho_bar,  pi >= min_weight
    h      = gamma_h * pi + (1 - gamma_h) * h
    rho_bar = rho_bar + (rho - rho_bar) / (t + 1)     t: evaluations so far (rho_bar_0 = mu)

The paper fits every domain against the *total* samples seen (``count="total"``,
transfer between domains counts; the ``1/n`` is then common and cancels);
``count="domain"`` fits each domain against its own expected samples, and its
``1/n_k`` favours the domains seen least.  The losses are the per-domain eval
losses by default (``loss="eval"``), or, as in ADO, the per-domain *training*
losses of the batches (``loss="train"``, through ``MixtureTrainer``, reduced over
ranks, one point every ``train_every`` steps).  ADO measured ≈0.4% extra
wall-clock; the fits here run every ``refit_every`` points.  Where the defaults
differ from the reference implementation and why: ``docs/callbacks.md``.

>>> import numpy as np
>>> n = np.geomspace(100, 1e5, 20)
>>> law = fit_power_law(n, 2.0 + 5.0 * n ** -0.3)
>>> round(law.epsilon, 2), round(law.alpha, 2)
(2.0, 0.3)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hf_mixture._checks import check_float, check_int
from hf_mixture.errors import HFMixtureError
from hf_mixture.power_law import PowerLaw, fit_power_law

from .base import AdaptiveConfig, MixtureCallback, expected_counts, register_callback

# -- the math (pure functions) -------------------------------------------------------------------
# The law and its fit are shared with `hf-mixture fit-laws` (hf_mixture.power_law); ADO's bounds
# (E below the lowest loss, alpha <= max_alpha, a soft-L1 loss) are that fit's defaults.

def _law_from(saved: Any) -> PowerLaw:
    """The law of a saved state: ``[E, A, alpha]`` (a ValueError/TypeError when it is not)."""
    e, a, alpha = (float(v) for v in saved)
    return PowerLaw(e, a, alpha)


def ado_preference(prior: np.ndarray, credit: np.ndarray, speed: np.ndarray,
                   credit_exponent: float) -> np.ndarray:
    """``rho ∝ prior * credit**s * speed`` (normalized); the prior when every product is 0.

    >>> ado_preference(np.array([.5, .5]), np.array([.5, .5]), np.array([1., 3.]), .5).tolist()
    [0.25, 0.75]
    """
    rho = np.maximum(prior * np.power(np.maximum(credit, 0.0), credit_exponent)
                     * np.maximum(speed, 0.0), 0.0)
    total = rho.sum()
    if not (np.isfinite(total) and total > 0):
        return prior / prior.sum()
    return rho / total


def floor_weights(weights: np.ndarray, min_weight: float) -> np.ndarray:
    """Raise every weight to at least ``min_weight`` and renormalize (``min_weight * K < 1``).

    The result keeps the order of the input and every entry is ``>= min_weight``
    (up to rounding): the deficit is taken from the weights above the floor in
    proportion to their excess.

    >>> floor_weights(np.array([0.0, 0.2, 0.8]), 0.1).round(4).tolist()
    [0.1, 0.1875, 0.7125]
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if min_weight <= 0:
        return w
    low = w < min_weight
    if not low.any():
        return w
    excess = np.where(low, 0.0, w - min_weight)
    need = float(np.sum(min_weight - w[low]))
    out = np.where(low, min_weight, w - excess * (need / excess.sum()))
    return out / out.sum()


# -- config --------------------------------------------------------------------------------------
@dataclass
class ADOConfig(AdaptiveConfig):
    """Configuration of :class:`ADOCallback` (every field is also a CLI flag)."""

    prior: str = field(default="initial", metadata={
        "help": "Prior mu of the preference: 'initial' (the weights in force when the callback is "
                "created, e.g. the natural mixture) or 'uniform'."})
    count: str = field(default="total", metadata={
        "help": "x-axis of each domain's power law: 'total' (samples seen by the run, as in the "
                "paper: transfer between domains counts) or 'domain' (the domain's own expected "
                "samples, from the weights history)."})
    loss: str = field(default="eval", metadata={
        "help": "Losses the laws are fitted to: 'eval' (per-domain held-out loss at each "
                "evaluation) or 'train' (per-domain training loss of the batches, as in ADO; "
                "needs MixtureTrainer; one point every train_every steps)."})
    train_every: int = field(default=10, metadata={
        "help": "With loss='train': optimizer steps per point (ADO subsamples its per-step "
                "losses every 10 steps)."})
    min_points: int = field(default=5, metadata={
        "help": "Points needed before the first fit (the law has 3 parameters)."})
    refit_every: int = field(default=2, metadata={
        "help": "Refit the power laws every this many evaluations; the policy updates at every "
                "evaluation with the last fit (the paper, too, refits far less often than it "
                "updates the policy). A fit costs ~10 ms per domain."})
    fit_from_step: int = field(default=500, metadata={
        "help": "Points before this optimizer step are left out of the fits and no update is "
                "made before it (the first steps of training follow no power law; ADO ignores "
                "its first 500 steps)."})
    max_alpha: float = field(default=0.8, metadata={
        "help": "Upper bound of the fitted exponent alpha (ADO: 0.8)."})
    smoothing: float = field(default=0.5, metadata={
        "help": "gamma: weight of the new preference against the running mean of past "
                "preferences (1 = no smoothing). ADO uses 0.1 at every step; evaluations are "
                "far rarer than steps here."})
    credit_smoothing: float = field(default=0.5, metadata={
        "help": "gamma_h: EMA factor of the credit history h (weight of the newest policy)."})
    credit_exponent: float = field(default=0.5, metadata={
        "help": "s: the credit term is h**s (0 turns credit assignment off)."})
    min_weight: float = field(default=0.01, metadata={
        "help": "Floor of every domain's weight, so no domain stops being measured (K * "
                "min_weight must be < 1)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prior not in ("initial", "uniform"):
            raise HFMixtureError(f"ADOConfig field 'prior' must be 'initial' or 'uniform', got "
                                 f"{self.prior!r}.")
        if self.loss not in ("eval", "train"):
            raise HFMixtureError(f"ADOConfig field 'loss' must be 'eval' or 'train', got "
                                 f"{self.loss!r}.")
        check_int(self.train_every, "Config field 'train_every'", 1)
        if self.count not in ("total", "domain"):
            raise HFMixtureError(f"ADOConfig field 'count' must be 'total' or 'domain', got "
                                 f"{self.count!r}.")
        check_int(self.min_points, "Config field 'min_points'", 3)
        check_int(self.refit_every, "Config field 'refit_every'", 1)
        check_int(self.fit_from_step, "Config field 'fit_from_step'", 0)
        self.max_alpha = check_float(self.max_alpha, "Config field 'max_alpha'", 0.0, 100.0, low_open=True)
        self.smoothing = check_float(self.smoothing, "Config field 'smoothing'", 0.0, 1.0, low_open=True)
        self.credit_smoothing = check_float(self.credit_smoothing, "Config field 'credit_smoothing'", 0.0, 1.0)
        self.credit_exponent = check_float(self.credit_exponent, "Config field 'credit_exponent'", 0.0, 10.0)
        self.min_weight = check_float(self.min_weight, "Config field 'min_weight'", 0.0, 1.0, high_open=True)


# -- the callback --------------------------------------------------------------------------------
@register_callback
class ADOCallback(MixtureCallback):
    """Adaptive Data Optimization from per-domain eval (or training) losses.

    >>> from hf_mixture.mixture import LiveMixture
    >>> cb = ADOCallback(LiveMixture(["a", "b"], [0.5, 0.5], seq_len=8), min_points=3,
    ...                  fit_from_step=0)
    >>> for step, (la, lb) in enumerate([(4.0, 4.0), (3.0, 3.8), (2.6, 3.7), (2.4, 3.65)], 1):
    ...     _ = cb.observe({"a": la, "b": lb}, step=step * 10, samples=step * 80)
    >>> cb.weights["a"] > 0.5      # 'a' is learning faster
    True
    """

    config_class = ADOConfig
    supported_targets = ("mean",)
    target_note = ("ADO's preference multiplies each domain's own learning speed (the slope of its own loss curve); a single target loss says nothing about which domain's samples moved it, so only 'mean' (the rule's own sum over domains) applies; use the 'aioli' callback, which measures that by interventions.")
    name = "ado"

    def __init__(self, live: Any, config: ADOConfig | Mapping[str, Any] | None = None,
                 **overrides: Any):
        super().__init__(live, config, **overrides)
        K = len(self.domains)
        if self.config.min_weight * K >= 1:
            raise HFMixtureError(f"ADOConfig field 'min_weight' is {self.config.min_weight}; with "
                                 f"{K} domains it must be < {1 / K:.4g}.")
        self.prior = (np.full(K, 1.0 / K) if self.config.prior == "uniform"
                      else self.live.weights_array)
        self.credit = self.prior.copy()          # h
        self.mean_preference = self.prior.copy()  # running mean of rho, anchored at the prior
        self.laws: list[PowerLaw | None] = [None] * K
        self._evals_at_fit: int | None = None

    @property
    def wants_token_losses(self) -> bool:
        return self.config.loss == "train"

    def _domain_losses(self, metrics):
        # With loss='train' the eval losses are for reading only.
        return {} if self.config.loss == "train" else super()._domain_losses(metrics)

    def on_train_losses(self, sums, tokens, samples_per_domain, *, step, samples):
        if not tokens.sum() > 0:
            return
        # A domain not drawn in the window has no point (NaN): its fit uses the others.
        losses = np.where(tokens > 0, sums / np.maximum(tokens, 1.0), np.nan)
        self._update(losses, step=step, samples=samples)

    @property
    def counts_history(self) -> list[list[float]]:
        """The x of each domain's law at each recorded point (from ``samples`` and the history).

        Derived, not stored: points recorded before ``start_step`` have their counts too.
        """
        return [self._counts_now(int(e["samples"])).tolist() for e in self.eval_history]

    def _counts_now(self, samples: int) -> np.ndarray:
        if self.config.count == "total":
            return np.full(len(self.domains), float(samples))
        return expected_counts(self.live.history, len(self.domains), samples)

    def _usable(self) -> list[dict[str, Any]]:
        return [e for e in self.eval_history if e["step"] >= self.config.fit_from_step]

    def _fit(self) -> None:
        usable = self._usable()
        losses = np.asarray([e["losses"] for e in usable], dtype=np.float64)
        counts = np.asarray([self._counts_now(int(e["samples"])) for e in usable],
                            dtype=np.float64)
        for k in range(len(self.domains)):
            ok = (counts[:, k] > 0) & np.isfinite(losses[:, k]) & (losses[:, k] > 0)
            if ok.sum() >= 3:
                self.laws[k] = fit_power_law(counts[ok, k], losses[ok, k],
                                             max_alpha=self.config.max_alpha)
        self._evals_at_fit = len(self.eval_history)

    def compute_weights(self, losses: np.ndarray, *, step: int, samples: int
                        ) -> np.ndarray | None:
        if step < self.config.fit_from_step or len(self._usable()) < self.config.min_points:
            return None
        if (self._evals_at_fit is None
                or len(self.eval_history) - self._evals_at_fit >= self.config.refit_every):
            self._fit()
        n_now = self._counts_now(samples)
        slope = np.asarray([law.slope(max(n, 1.0)) if law is not None else 0.0
                            for law, n in zip(self.laws, n_now)], dtype=np.float64)
        rho = ado_preference(self.prior, self.credit, slope, self.config.credit_exponent)
        gamma = self.config.smoothing
        policy = gamma * rho + (1 - gamma) * self.mean_preference
        policy = floor_weights(policy / policy.sum(), self.config.min_weight)
        # The running mean counts every point since the start (warm-up included), as the
        # reference's 1/(total_steps + 1): the prior holds the weight of the warm-up.
        t = len(self.eval_history)
        self.mean_preference = self.mean_preference + (rho - self.mean_preference) / (t + 1)
        g = self.config.credit_smoothing
        self.credit = g * policy + (1 - g) * self.credit
        return policy

    def _state(self) -> dict[str, Any]:
        return {
            "prior": self.prior.tolist(),
            "credit": self.credit.tolist(),
            "mean_preference": self.mean_preference.tolist(),
            "laws": [None if law is None else [law.E, law.A, law.alpha] for law in self.laws],
            "evals_at_fit": self._evals_at_fit,
        }

    def _load_state(self, state: Mapping[str, Any], where: str) -> None:
        K = len(self.domains)
        try:
            vectors = {k: np.asarray([float(x) for x in state[k]], dtype=np.float64)
                       for k in ("prior", "credit", "mean_preference")}
            laws = [None if v is None else _law_from(v) for v in state["laws"]]
            at_fit = state["evals_at_fit"]
        except (KeyError, TypeError, ValueError) as err:
            raise HFMixtureError(f"{where}: field 'rule' is malformed ({type(err).__name__}: "
                                 f"{err}).") from None
        if any(len(v) != K for v in vectors.values()) or len(laws) != K:
            raise HFMixtureError(f"{where}: field 'rule' holds vectors of another length than "
                                 f"the {K} domains.")
        self.prior, self.credit = vectors["prior"], vectors["credit"]
        self.mean_preference = vectors["mean_preference"]
        self.laws = laws
        self._evals_at_fit = None if at_fit is None else int(at_fit)
