"""Candidate mixtures: Dirichlet draws around a token-share prior, capped by available tokens.

Pure functions over arrays.  A candidate is a row of ``D`` non-negative weights
summing to 1 (one per pool component, in pool order).

* :func:`token_prior` — the prior mean: each component's share of the pool's
  tokens, sharpened or flattened by a temperature (``p_i ∝ n_i ** (1/T)``, so
  ``T = ∞`` is uniform).
* :func:`repetition_caps` — the largest weight each component may take in a run
  of ``run_tokens`` tokens without repeating its tokens more than ``max_epochs``
  times: ``cap_i = max_epochs * n_i / run_tokens``.
* :func:`project_to_caps` — moves weight above a cap to components with room,
  proportionally to their current weight (the result respects every cap and
  still sums to 1).
* :func:`dirichlet_candidates` — ``n`` draws of ``Dirichlet(concentration * D * prior)``
  projected onto the caps.  ``concentration = 1`` with a uniform prior is the flat
  distribution over the simplex; smaller values give sparser mixtures, larger
  ones stay near the prior.

>>> prior = token_prior([100, 300], temperature=1.0)
>>> prior.round(6).tolist()
[0.25, 0.75]
>>> caps = repetition_caps([100, 300], run_tokens=200, max_epochs=1.0)
>>> caps.tolist()
[0.5, 1.0]
>>> X = dirichlet_candidates(1000, prior, concentration=1.0, caps=caps, seed=0)
>>> bool((X[:, 0] <= 0.5 + 1e-12).all() and np.allclose(X.sum(axis=1), 1))
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import HFMixtureError
from ..mixture.mixture import tempered

__all__ = ["dirichlet_candidates", "project_to_caps", "repetition_caps", "token_prior"]


def token_prior(tokens: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """Token shares with temperature: ``p_i ∝ tokens_i ** (1 / temperature)``."""
    n = np.asarray(tokens, dtype=np.float64)
    if n.ndim != 1 or not len(n) or np.any(n < 0) or not np.all(np.isfinite(n)) or n.sum() <= 0:
        raise HFMixtureError(f"Token counts must be finite, >= 0 and not all zero, got {n.tolist()}.")
    if not (np.isfinite(temperature) and temperature > 0):
        raise HFMixtureError(f"prior_temperature must be a number > 0, got {temperature!r}.")
    return tempered(n, temperature)


def repetition_caps(tokens: Sequence[float], run_tokens: int, max_epochs: float | None
                    ) -> np.ndarray:
    """``max_epochs * tokens_i / run_tokens``, capped at 1 (no cap when ``max_epochs`` is None).

    Raises when the caps leave no feasible mixture (they sum to less than 1).
    """
    n = np.asarray(tokens, dtype=np.float64)
    if max_epochs is None:
        return np.ones(len(n))
    if not (np.isfinite(max_epochs) and max_epochs > 0):
        raise HFMixtureError(f"max_epochs must be a number > 0 (or null), got {max_epochs!r}.")
    if run_tokens <= 0:
        raise HFMixtureError(f"The run length must be > 0 tokens, got {run_tokens}.")
    caps = np.minimum(max_epochs * n / float(run_tokens), 1.0)
    if caps.sum() < 1.0 - 1e-9:
        raise HFMixtureError(
            f"The pool holds {int(n.sum())} tokens, too few for a {int(run_tokens)}-token run "
            f"repeating data at most {max_epochs:g} times; raise max_epochs or shorten the run."
        )
    return caps


def project_to_caps(X: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Rows of ``X`` (summing to 1) with weight above ``caps`` moved to components with room.

    Excess goes to unsaturated components in proportion to their weight (to their
    remaining room when all of those are zero), repeated until no cap is exceeded.
    """
    X = np.array(X, dtype=np.float64, copy=True)
    caps = np.asarray(caps, dtype=np.float64)
    for _ in range(X.shape[1] + 1):
        over = X > caps
        if not over.any():
            break
        excess = np.where(over, X - caps, 0.0).sum(axis=1, keepdims=True)
        X = np.minimum(X, caps)
        free = X < caps - 1e-15
        room = np.where(free, caps - X, 0.0)
        basis = np.where(free, X, 0.0)
        total = basis.sum(axis=1, keepdims=True)
        # Rows whose free components are all at zero weight share by room instead.
        basis = np.where(total > 0, basis, room)
        total = basis.sum(axis=1, keepdims=True)
        X = X + excess * np.divide(basis, total, out=np.zeros_like(basis), where=total > 0)
    X = np.minimum(X, caps)
    return X / X.sum(axis=1, keepdims=True)


def dirichlet_candidates(n: int, prior: Sequence[float], *, concentration: float = 1.0,
                         caps: Sequence[float] | None = None, seed: int = 0,
                         rng: np.random.Generator | None = None) -> np.ndarray:
    """``n`` mixtures from ``Dirichlet(concentration * D * prior)``, projected onto ``caps``.

    Components with prior 0 get weight 0.  Deterministic for a given ``seed``
    (or the given ``rng``).
    """
    p = np.asarray(prior, dtype=np.float64)
    if not (np.isfinite(concentration) and concentration > 0):
        raise HFMixtureError(f"dirichlet_concentration must be a number > 0, got {concentration!r}.")
    if n < 1:
        raise HFMixtureError(f"The number of candidates must be >= 1, got {n}.")
    rng = rng if rng is not None else np.random.default_rng(seed)
    alive = p > 0
    alpha = concentration * alive.sum() * p[alive]
    X = np.zeros((n, len(p)))
    # Gamma draws normalized, with a floor: tiny alphas underflow to all-zero rows.
    g = rng.gamma(alpha, size=(n, len(alpha)))
    g = np.maximum(g, np.finfo(np.float64).tiny)
    X[:, alive] = g / g.sum(axis=1, keepdims=True)
    if caps is not None:
        X = project_to_caps(X, np.asarray(caps, dtype=np.float64))
    return X
