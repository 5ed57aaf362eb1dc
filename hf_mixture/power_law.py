"""The power law of loss that ADO and the data mixing laws both fit.

``L(x) = E + A * x ** (-alpha)`` with ``E >= 0``, ``A >= 0``, ``alpha > 0``: ``x`` is
the samples seen (ADO, :mod:`hf_mixture.callbacks.ado`), the training steps or the
model size (``hf-mixture fit-laws``, :mod:`hf_mixture.search.laws`).  ADO's paper
writes the same law ``eps + beta * n ** -alpha``; :attr:`PowerLaw.epsilon` and
:attr:`PowerLaw.beta` read it in that notation.

One fit serves both: a grid over ``alpha`` (for a fixed ``alpha`` the law is linear
in ``E, A`` and solved in closed form, bounded) gives the start, and
``scipy.optimize.curve_fit`` (trust-region, bounded) polishes all three parameters
and is kept only when it fits at least as well.  The callers differ in their
bounds and loss, which are parameters: ADO keeps ``E`` below the lowest loss,
``alpha <= 0.8`` and a soft-L1 loss (one noisy evaluation must not bend the
curve); ``fit-laws`` lets ``E`` and ``alpha`` range wider with plain least squares.

>>> import numpy as np
>>> s = np.array([100, 200, 400, 800, 1600.])
>>> law = fit_power_law(s, 2.0 + 30.0 * s ** -0.5)
>>> round(law.E, 3), round(law.A, 2), round(law.alpha, 3)
(2.0, 30.0, 0.5)
>>> round(float(law(6400)), 4)
2.375
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import HFMixtureError

__all__ = ["PowerLaw", "fit_power_law"]


@dataclass(frozen=True)
class PowerLaw:
    """``L(x) = E + A * x ** (-alpha)``; ``r2`` is the fit's coefficient of determination
    over its ``num_points`` points (a law written by hand has neither: NaN and 0)."""

    E: float
    A: float
    alpha: float
    r2: float = float("nan")
    num_points: int = 0

    @property
    def epsilon(self) -> float:
        """``E`` in ADO's notation (the irreducible loss)."""
        return self.E

    @property
    def beta(self) -> float:
        """``A`` in ADO's notation."""
        return self.A

    def __call__(self, x: Any) -> Any:
        return self.E + self.A * np.asarray(x, dtype=np.float64) ** (-self.alpha)

    def speed(self, x: Any) -> Any:
        """``-x * dL/dx = alpha * (L(x) - E)``: loss the next samples remove, per log-sample."""
        return self.alpha * (self(x) - self.E)

    def slope(self, x: Any) -> Any:
        """``-dL/dx = alpha * (L(x) - E) / x``: loss the next sample removes (ADO's rho)."""
        return self.speed(x) / np.asarray(x, dtype=np.float64)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _power(x: np.ndarray, e: float, a: float, alpha: float) -> np.ndarray:
    return e + a * x ** (-alpha)


def _power_jac(x: np.ndarray, e: float, a: float, alpha: float) -> np.ndarray:
    f = x ** (-alpha)
    return np.stack([np.ones_like(x), f, -a * f * np.log(x)], axis=1)


def _grid_fit(x: np.ndarray, y: np.ndarray, alphas: np.ndarray, hi_e: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """For each alpha the best ``0 <= E <= hi_e``, ``A >= 0`` in closed form; ``(sse, params)``."""
    F = x[None, :] ** (-alphas[:, None])                       # (alphas, points)
    Fm, ym = F.mean(axis=1), y.mean()
    var = ((F - Fm[:, None]) ** 2).sum(axis=1)
    a = np.where(var > 0, ((F - Fm[:, None]) * (y - ym)).sum(axis=1) / np.maximum(var, 1e-300),
                 0.0)
    # A rising curve has no decaying law: the best one with A = 0 is flat at the mean.
    e = np.clip(np.where(a > 0, ym - a * Fm, ym), 0.0, hi_e)
    a = np.maximum((F * (y - e[:, None])).sum(axis=1) / (F * F).sum(axis=1), 0.0)
    sse = ((e[:, None] + a[:, None] * F - y) ** 2).sum(axis=1)
    return sse, np.stack([e, a, alphas], axis=1)


def _cost(residuals: np.ndarray, f_scale: float | None) -> float:
    """Least squares, or curve_fit's ``loss="soft_l1"`` (quadratic small, linear large)."""
    if f_scale is None:
        return float(np.sum(residuals ** 2))
    z = (residuals / f_scale) ** 2
    return float(np.sum(2.0 * (np.sqrt(1.0 + z) - 1.0)))


def fit_power_law(x: Any, y: Any, *, max_alpha: float = 0.8, e_below_min: bool = True,
                  robust: bool = True, max_evaluations: int = 60, what: str = "loss",
                  x_name: str = "sample counts") -> PowerLaw:
    """Fit ``y = E + A * x ** -alpha`` to three or more points with distinct ``x > 0``.

    Bounds: ``0 <= E`` (``E < min(y)`` with ``e_below_min``, which then needs
    ``y > 0``), ``A >= 0``, ``1e-4 <= alpha <= max_alpha``.  ``robust`` fits a
    soft-L1 loss instead of least squares; ``max_evaluations`` caps curve_fit's
    function evaluations.  The defaults are ADO's; ``what`` and ``x_name`` name
    the curve in error messages.  ``x`` is rescaled to ``x / max(x)`` for the fit
    (conditioning) and ``A`` mapped back.

    >>> law = fit_power_law([10, 100, 1000, 10000], [3.0, 2.0, 1.5, 1.25])
    >>> bool(law.alpha > 0) and bool(law.epsilon < 1.25)
    True
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    where = f"Fitting a power law of {what}"
    if len(x) != len(y):
        raise HFMixtureError(f"{where} got {len(x)} {x_name} and {len(y)} values.")
    distinct = len(np.unique(x))
    if distinct < 3:
        raise HFMixtureError(f"{where} needs at least 3 points for its 3 parameters (3 or more "
                             f"distinct points, got {distinct}).")
    if not (np.isfinite(x).all() and (x > 0).all()):
        raise HFMixtureError(f"{where} needs finite {x_name} > 0.")
    if e_below_min and not (np.isfinite(y).all() and (y > 0).all()):
        raise HFMixtureError(f"{where} needs finite losses > 0.")
    if not np.isfinite(y).all():
        raise HFMixtureError(f"{where} needs finite values.")
    scale = float(x.max())
    xs = x / scale
    hi_e = float(y.min()) * (1 - 1e-9) if e_below_min else np.inf
    # Variable projection: a coarse then a fine grid over alpha, each solved in closed form,
    # lands next to the optimum in about a millisecond; curve_fit then polishes all three
    # parameters in a few iterations.
    alphas = np.geomspace(min(1e-3, max_alpha), max_alpha, 48)
    sse, params = _grid_fit(xs, y, alphas, hi_e)
    i = int(np.argmin(sse))
    fine = np.linspace(alphas[max(i - 1, 0)], alphas[min(i + 1, len(alphas) - 1)], 33)
    sse, params = _grid_fit(xs, y, fine, hi_e)
    grid = params[int(np.argmin(sse))]
    best = grid
    # Residuals beyond f_scale count linearly in the robust loss.
    f_scale = max(1e-4, 0.05 * float(y.max() - y.min())) if robust else None
    hi_p0 = hi_e * (1 - 1e-9) if e_below_min else np.inf
    p0 = np.clip(grid, [0.0, 0.0, 1e-4], [hi_p0, np.inf, max_alpha])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            p, _ = curve_fit(_power, xs, y, p0=p0, jac=_power_jac, method="trf",
                             loss="soft_l1" if robust else "linear",
                             f_scale=f_scale or 1.0, max_nfev=max_evaluations,
                             bounds=([0.0, 0.0, 1e-4], [hi_e, np.inf, max_alpha]))
            if np.isfinite(p).all() and (_cost(_power(xs, *p) - y, f_scale)
                                         <= _cost(_power(xs, *grid) - y, f_scale)):
                best = p
        except (RuntimeError, ValueError):
            pass   # the grid solution stands
    e, a, alpha = (float(v) for v in best)
    a *= scale ** alpha
    resid = y - (e + a * x ** -alpha)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / total if total > 0 else 1.0
    return PowerLaw(e, a, alpha, r2, len(x))
