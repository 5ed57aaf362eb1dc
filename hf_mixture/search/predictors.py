"""Predictors of a proxy run's target metric from its mixture weights, registered by name.

A predictor maps mixture weights ``X`` (``(runs, components)``, rows summing to 1)
to the metric ``y`` (``(runs,)``) the search optimizes.  Four are built in:

``lightgbm``
    Gradient-boosted trees (CLIMB and RegMix's default), with parameters that
    still split on a handful of runs.
``mixing_law``
    The data mixing law of Ye et al. (2024): ``y = c + k * exp(t . r)``, fitted
    with scipy (``curve_fit`` when the runs outnumber the parameters, a lightly
    ridge-regularized ``least_squares`` otherwise).
``linear``
    Ridge regression on the weights.
``loglinear``
    Ridge regression of ``log y`` on the weights (the mixing law with ``c = 0``).

Every predictor reports out-of-fold quality with :func:`cross_validate`
(Spearman rank correlation and mean absolute error on held-out runs; k-fold, or
leave-one-out when there are few runs).  New predictors register under a new
name; registering a name twice is an error.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.dirichlet(np.ones(3), size=40)
>>> y = 2.0 + 0.5 * np.exp(X @ np.array([-2.0, 0.0, 1.0]))
>>> law = make_predictor("mixing_law").fit(X, y)
>>> bool(np.allclose(law.predict(X), y, atol=1e-4))
True
>>> q = cross_validate("linear", X, y, seed=0)
>>> q.spearman > 0.9
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import HFMixtureError

__all__ = [
    "Predictor",
    "PredictorQuality",
    "cross_validate",
    "make_predictor",
    "predictor_family",
    "predictor_names",
    "register_predictor",
]

_REGISTRY: dict[str, type[Predictor]] = {}


def register_predictor(name: str) -> Callable[[type[Predictor]], type[Predictor]]:
    """Class decorator: make a :class:`Predictor` available under ``name``.

    >>> @register_predictor("my_mean")                   # doctest: +SKIP
    ... class MeanPredictor(Predictor): ...
    """
    if not isinstance(name, str) or not name.strip():
        raise HFMixtureError(f"A predictor name must be a non-empty string, got {name!r}.")

    def decorate(cls: type[Predictor]) -> type[Predictor]:
        if name in _REGISTRY:
            raise HFMixtureError(
                f"A predictor named {name!r} is already registered ({_REGISTRY[name].__name__}); "
                "choose another name."
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def predictor_names() -> list[str]:
    """The registered predictor names, sorted."""
    return sorted(_REGISTRY)


def predictor_family(name: str) -> str:
    """``"law"`` for a predictor built on the data mixing law, else ``"other"``."""
    if name not in _REGISTRY:
        raise HFMixtureError(
            f"Unknown predictor {name!r}; the registered predictors are "
            f"{', '.join(predictor_names())}."
        )
    return _REGISTRY[name].family


def make_predictor(name: str, **params: Any) -> Predictor:
    """A fresh, unfitted predictor registered under ``name``."""
    if name not in _REGISTRY:
        raise HFMixtureError(
            f"Unknown predictor {name!r}; the registered predictors are "
            f"{', '.join(predictor_names())}."
        )
    return _REGISTRY[name](**params)


def _check_xy(X: Any, y: Any | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] < 1:
        raise HFMixtureError(f"Mixture weights must be a 2-D array (runs, components), got "
                             f"shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise HFMixtureError("Mixture weights hold NaN or infinite values.")
    if y is None:
        return X, None
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(y) != len(X):
        raise HFMixtureError(f"Got {len(X)} mixtures but {len(y)} metric values.")
    if not np.all(np.isfinite(y)):
        raise HFMixtureError("The metric values to fit hold NaN or infinite values.")
    return X, y


class Predictor:
    """Base class: ``fit(X, y)`` returns self; ``predict(X)`` returns ``(n,)`` floats.

    ``min_runs`` is the fewest runs the predictor can be fitted on.
    """

    name: ClassVar[str] = "?"
    min_runs: ClassVar[int] = 3
    # "law" for predictors built on the data mixing law: ``auto`` prefers them because the
    # law's shape is what transfers to larger models (see hf_mixture.search.search._choose).
    family: ClassVar[str] = "other"

    def fit(self, X: Any, y: Any) -> Predictor:
        X, y = _check_xy(X, y)
        if len(X) < self.min_runs:
            raise HFMixtureError(
                f"Predictor {self.name!r} needs at least {self.min_runs} finished runs to fit, "
                f"got {len(X)}."
            )
        self._fit(X, y)
        self.num_components_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        X, _ = _check_xy(X)
        if getattr(self, "num_components_", None) is None:
            raise HFMixtureError(f"Predictor {self.name!r} must be fitted before predict().")
        if X.shape[1] != self.num_components_:
            raise HFMixtureError(f"Predictor {self.name!r} was fitted on "
                                 f"{self.num_components_} components, got {X.shape[1]}.")
        return np.asarray(self._predict(X), dtype=np.float64).reshape(-1)

    def params(self) -> dict[str, Any]:
        """Fitted parameters worth printing (JSON-able)."""
        return {}

    # subclasses implement these two
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


@register_predictor("lightgbm")
class LightGBMPredictor(Predictor):
    """LightGBM regression trees on the weights.

    Defaults suit the 8-100 runs of a search: leaves may hold 2 runs and bins 1
    value (LightGBM's defaults, 20 and 3, would refuse to split on few runs),
    shallow trees, many small steps, and a single deterministic thread.
    """

    def __init__(self, seed: int = 0, **params: Any):
        self.seed = int(seed)
        self.lgb_params = {
            "objective": "regression",
            "n_estimators": 400,
            "learning_rate": 0.05,
            "num_leaves": 8,
            "max_depth": 3,
            "min_child_samples": 2,
            "min_data_in_bin": 1,
            "reg_lambda": 1e-3,
            "subsample": 1.0,
            "colsample_bytree": 1.0,
            "n_jobs": 1,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
            **params,
        }

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        from .._imports import require

        lgb = require("lightgbm", "lightgbm", "The 'lightgbm' predictor")
        # Few runs => tiny gradients in absolute terms; standardizing y keeps LightGBM's
        # minimum-gain thresholds meaningful whatever the loss scale.
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std()) or 1.0
        self.model_ = lgb.LGBMRegressor(random_state=self.seed, **self.lgb_params)
        self.model_.fit(X, (y - self.y_mean_) / self.y_std_)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X) * self.y_std_ + self.y_mean_

    def predict_trees(self, X: Any, trees: int) -> np.ndarray:
        """The prediction of the first ``trees`` trees only (early stopping without refits)."""
        X, _ = _check_xy(X)
        return self.model_.predict(X, num_iteration=int(trees)) * self.y_std_ + self.y_mean_

    def params(self) -> dict[str, Any]:
        imp = getattr(self.model_, "feature_importances_", None)
        return {"feature_importances": [int(v) for v in imp] if imp is not None else None}


def _ridge(A: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Least squares ``A x ~ b`` with an L2 penalty ``alpha`` on all but the first column."""
    penalty = np.sqrt(alpha) * np.eye(A.shape[1])
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    A2 = np.vstack([A, penalty])
    b2 = np.concatenate([b, np.zeros(A.shape[1])])
    return np.linalg.lstsq(A2, b2, rcond=None)[0]


@register_predictor("linear")
class LinearPredictor(Predictor):
    """``y = a + b . r`` by ridge regression (a small ``alpha`` keeps few runs well-posed)."""

    min_runs = 2

    def __init__(self, alpha: float = 1e-4):
        self.alpha = float(alpha)

    def _transform(self, y: np.ndarray) -> np.ndarray:
        return y

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return z

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        A = np.hstack([np.ones((len(X), 1)), X])
        self.coef_ = _ridge(A, self._transform(y), self.alpha)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self._inverse(self.coef_[0] + X @ self.coef_[1:])

    def params(self) -> dict[str, Any]:
        return {"intercept": float(self.coef_[0]), "coef": [float(v) for v in self.coef_[1:]]}


@register_predictor("loglinear")
class LogLinearPredictor(LinearPredictor):
    """``log y = a + b . r``: the mixing law's exponential form without its offset."""

    def _transform(self, y: np.ndarray) -> np.ndarray:
        if np.any(y <= 0):
            raise HFMixtureError("Predictor 'loglinear' fits log(metric) and needs every metric "
                                 f"value > 0, got a minimum of {float(y.min())!r}.")
        return np.log(y)

    def _inverse(self, z: np.ndarray) -> np.ndarray:
        return np.exp(z)


EXP_CLIP = 50.0  # |X @ t| beyond this is clipped: exp(50) ~ 5e21, far past any loss


def mixing_law(X: np.ndarray, c: float, k: float, t: np.ndarray) -> np.ndarray:
    """``c + k * exp(X @ t)``: the data mixing law of Ye et al. (2024) for one metric.

    >>> float(mixing_law(np.array([[0.5, 0.5]]), 1.0, 2.0, np.array([0.0, 0.0]))[0])
    3.0
    """
    return c + k * np.exp(np.clip(X @ t, -EXP_CLIP, EXP_CLIP))


@register_predictor("mixing_law")
class MixingLawPredictor(Predictor):
    """``y = c + k * exp(sum_j t_j r_j)``, fitted with scipy.

    Because mixture weights sum to 1, shifting every ``t_j`` by ``a`` and
    multiplying ``k`` by ``exp(-a)`` gives the same law; the fitted ``t`` is
    reported centred (mean 0) so parameters are comparable between fits.

    The fit starts from a grid over ``c`` (for each, ``log|y - c|`` is linear in
    ``r`` and solved exactly), then refines all parameters with
    ``scipy.optimize.curve_fit``; with fewer runs than parameters + 1 it uses
    ``least_squares`` with a ridge penalty ``alpha`` on ``t`` instead.
    """

    family = "law"

    def __init__(self, alpha: float = 1e-3):
        self.alpha = float(alpha)

    def _start(self, X: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
        spread = float(np.ptp(y)) or max(abs(float(y.mean())) * 1e-3, 1e-6)
        best: tuple[float, tuple[float, float, np.ndarray]] | None = None
        A = np.hstack([np.ones((len(X), 1)), X - X.mean(axis=1, keepdims=True)])
        for sign in (1.0, -1.0):
            edge = float(y.min()) if sign > 0 else float(y.max())
            for gap in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0):
                c = edge - sign * gap * spread
                z = np.log(sign * (y - c))
                coef = _ridge(A, z, self.alpha)
                k = sign * math.exp(coef[0])
                t = coef[1:] - coef[1:].mean()
                sse = float(((mixing_law(X, c, k, t) - y) ** 2).sum())
                if best is None or sse < best[0]:
                    best = (sse, (c, k, t))
        assert best is not None
        return best[1]

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        import warnings

        from scipy.optimize import OptimizeWarning, curve_fit, least_squares

        c0, k0, t0 = self._start(X, y)
        d = X.shape[1]
        p0 = np.concatenate([[c0, k0], t0])

        def model(Xd, *p):
            return mixing_law(Xd, p[0], p[1], np.asarray(p[2:]))

        def jac(Xd, *p):
            # Analytic derivatives: numerical ones cost D + 2 model evaluations per step.
            e = np.exp(np.clip(Xd @ np.asarray(p[2:]), -EXP_CLIP, EXP_CLIP))
            return np.hstack([np.ones((len(Xd), 1)), e[:, None], p[1] * e[:, None] * Xd])

        def sse(p):
            return float(((model(X, *p) - y) ** 2).sum())

        def ridge_fit():
            # The ridge on t picks the smallest law that fits: for an under-determined fit, and
            # where curve_fit's law is degenerate (a component near 0 in every run leaves its
            # t free to run off).
            scale = float(np.std(y)) or 1.0
            ridge = np.hstack([np.zeros((d, 2)), np.sqrt(self.alpha) * np.eye(d)])
            return least_squares(
                lambda p: np.concatenate([(model(X, *p) - y) / scale,
                                          np.sqrt(self.alpha) * np.asarray(p[2:])]),
                p0, jac=lambda p: np.vstack([jac(X, *p) / scale, ridge]),
                method="trf", max_nfev=5000).x

        def usable(p) -> bool:
            # finite, and the centred exponents inside the clip of mixing_law, where shifting
            # t by its mean (below) leaves the law unchanged for every mixture
            t = np.asarray(p[2:], dtype=np.float64)
            return bool(np.all(np.isfinite(p)) and np.abs(t - t.mean()).max() <= EXP_CLIP
                        and abs(t.mean()) <= EXP_CLIP)

        best = p0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (OptimizeWarning, RuntimeWarning))
            fits = [ridge_fit]
            if len(y) >= d + 3:
                fits.insert(0, lambda: curve_fit(model, X, y, p0=p0, jac=jac, maxfev=20000)[0])
            for fit in fits:
                try:
                    p = fit()
                except (RuntimeError, ValueError, np.linalg.LinAlgError):
                    continue  # the next fit; after the last, the closed-form start (coarser)
                if usable(p):
                    if sse(p) <= sse(best):
                        best = p
                    break
        c, k, t = float(best[0]), float(best[1]), np.asarray(best[2:], dtype=np.float64)
        shift = float(t.mean())
        self.c_, self.k_, self.t_ = c, k * math.exp(shift), t - shift

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return mixing_law(X, self.c_, self.k_, self.t_)

    def params(self) -> dict[str, Any]:
        return {"c": self.c_, "k": self.k_, "t": [float(v) for v in self.t_]}


# The capacities the hybrid's residual trees may take, smallest first (None: the law alone).
# Each fit picks one, and its number of trees, by inner cross-validation on its own runs:
# at 16 runs the law (or a damped correction) wins, at hundreds the deeper trees do.
RESIDUAL_CAPACITIES: tuple[dict[str, Any] | None, ...] = (
    None,
    {"num_leaves": 4, "max_depth": 2, "min_child_samples": 3, "reg_lambda": 1.0},
    {"num_leaves": 8, "max_depth": 3, "min_child_samples": 2, "reg_lambda": 1e-3},
    {"num_leaves": 16, "max_depth": 4, "min_child_samples": 2, "reg_lambda": 1e-3},
)
RESIDUAL_TREES = (10, 20, 40, 60, 100, 150, 200, 300, 400)  # tree counts tried (early stopping)
RESIDUAL_LEARNING_RATE = 0.05
# A larger capacity must beat the simpler ones' held-out error by this fraction to be taken:
# ties go to the simpler correction, which transfers better across model sizes.
RESIDUAL_TOLERANCE = 0.02


@register_predictor("hybrid")
class HybridPredictor(Predictor):
    """The mixing law first, then gradient-boosted trees on its residuals, as large as the
    runs support.

    The law carries the shape that holds across model sizes (each component moves
    the loss exponentially, the offset is the irreducible loss); the trees only
    correct what the law misses at this scale, e.g. an interaction of two
    components.  How much correction the runs support is chosen on the runs
    themselves: every capacity of :data:`RESIDUAL_CAPACITIES` (none, then shallow to
    deeper trees) and tree count of :data:`RESIDUAL_TREES` is scored by ``inner_folds``-fold
    cross-validation of the residuals, and the simplest within
    :data:`RESIDUAL_TOLERANCE` of the best held-out error is fitted on all runs.  With
    the 10-30 runs of a CPU search that is the law or a damped correction; with hundreds
    of runs (RegMix's 512) it is a full tree model on top of the law.  ``tree_params``
    fixes the trees instead (no selection).
    """

    family = "law"

    def __init__(self, seed: int = 0, alpha: float = 1e-3, inner_folds: int = 5,
                 **tree_params: Any):
        self.seed = int(seed)
        self.alpha = float(alpha)
        self.inner_folds = int(inner_folds)
        self.tree_params = dict(tree_params)

    def _select(self, X: np.ndarray, residual: np.ndarray) -> tuple[dict[str, Any] | None, int]:
        """(capacity, trees) with the lowest inner-CV error of the residuals (ties: simpler)."""
        n = len(X)
        folds = min(self.inner_folds, n)
        ids = fold_ids(n, folds, self.seed + 1)
        errors: list[tuple[float, int, int]] = [(float(np.mean(residual ** 2)), 0, 0)]
        for c, cap in enumerate(RESIDUAL_CAPACITIES[1:], start=1):
            if n < 2 * cap["min_child_samples"] + folds:
                continue  # too few runs to split on at all
            sse = np.zeros(len(RESIDUAL_TREES))
            for f in range(folds):
                test = ids == f
                model = LightGBMPredictor(seed=self.seed, n_estimators=max(RESIDUAL_TREES),
                                          learning_rate=RESIDUAL_LEARNING_RATE, **cap)
                model.fit(X[~test], residual[~test])
                for t, trees in enumerate(RESIDUAL_TREES):
                    pred = model.predict_trees(X[test], trees)
                    sse[t] += float(np.sum((residual[test] - pred) ** 2))
            for t, trees in enumerate(RESIDUAL_TREES):
                errors.append((sse[t] / n, c, trees))
        best = min(e for e, _, _ in errors)
        # simplest (capacity, then fewest trees) within the tolerance of the best
        _, c, trees = min((e for e in errors if e[0] <= best * (1 + RESIDUAL_TOLERANCE) + 1e-300),
                            key=lambda e: (e[1], e[2]))
        return (RESIDUAL_CAPACITIES[c], trees) if c else (None, 0)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        self.law_ = MixingLawPredictor(alpha=self.alpha).fit(X, y)
        residual = y - self.law_.predict(X)
        self.trees_ = None
        self.capacity_: dict[str, Any] | None = None
        # An exact law leaves only round-off, which the trees (fitting standardized residuals)
        # would blow up into noise: nothing to correct then.
        if float(residual.std()) <= 1e-6 * (float(y.std()) or 1.0):
            return
        if self.tree_params:
            params = {"n_estimators": 60, "learning_rate": RESIDUAL_LEARNING_RATE,
                      **RESIDUAL_CAPACITIES[1], **self.tree_params}
        else:
            cap, trees = self._select(X, residual)
            if cap is None:
                return
            params = {**cap, "n_estimators": trees, "learning_rate": RESIDUAL_LEARNING_RATE}
        self.capacity_ = params
        self.trees_ = LightGBMPredictor(seed=self.seed, **params).fit(X, residual)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        base = self.law_.predict(X)
        return base if self.trees_ is None else base + self.trees_.predict(X)

    def params(self) -> dict[str, Any]:
        return {"law": self.law_.params(), "residual_trees": self.capacity_,
                "trees": self.trees_.params() if self.trees_ is not None else None}


# -- quality on held-out runs -------------------------------------------------------------
@dataclass
class PredictorQuality:
    """Out-of-fold quality of a predictor: each run predicted by a fit that did not see it."""

    predictor: str
    spearman: float | None
    mae: float
    num_runs: int
    folds: int
    scheme: str
    predicted: list[float] = field(default_factory=list)
    actual: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fold_ids(n: int, folds: int, seed: int) -> np.ndarray:
    """A fold index per run: a seeded permutation cut into ``folds`` near-equal parts."""
    order = np.random.default_rng(seed).permutation(n)
    ids = np.empty(n, dtype=np.int64)
    ids[order] = np.arange(n) % folds
    return ids


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation, or None when either side is constant."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def cross_validate(predictor: str | Callable[[], Predictor], X: Any, y: Any, *, folds: int = 5,
                   seed: int = 0, loo_below: int = 12) -> PredictorQuality:
    """Spearman and MAE of out-of-fold predictions (leave-one-out below ``loo_below`` runs).

    ``predictor`` is a registered name or a zero-argument factory.
    """
    X, y = _check_xy(X, y)
    factory = (lambda: make_predictor(predictor)) if isinstance(predictor, str) else predictor
    name = predictor if isinstance(predictor, str) else getattr(factory(), "name", "?")
    need = factory().min_runs + 1
    if len(X) < need:
        raise HFMixtureError(
            f"Cross-validating predictor {name!r} needs at least {need} finished runs, "
            f"got {len(X)}."
        )
    n = len(X)
    if n < loo_below or folds >= n:
        ids, k, scheme = np.arange(n), n, "leave-one-out"
    else:
        k = max(2, int(folds))
        ids, scheme = fold_ids(n, k, seed), f"{k}-fold"
    pred = np.empty(n)
    for f in range(k):
        test = ids == f
        model = factory().fit(X[~test], y[~test])
        pred[test] = model.predict(X[test])
    return PredictorQuality(
        predictor=name, spearman=spearman(pred, y), mae=float(np.abs(pred - y).mean()),
        num_runs=n, folds=k, scheme=scheme, predicted=pred.tolist(), actual=y.tolist())
