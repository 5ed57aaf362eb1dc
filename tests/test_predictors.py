"""Predictors of a run's target from its mixture weights: known relationships are recovered."""

from __future__ import annotations

import numpy as np
import pytest

from hf_mixture.errors import HFMixtureError
from hf_mixture.search.predictors import (
    Predictor,
    cross_validate,
    fold_ids,
    make_predictor,
    mixing_law,
    predictor_names,
    register_predictor,
)


def _mixtures(n: int, d: int, seed: int = 0, alpha: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(d, alpha), size=n)


def test_builtin_predictors_are_registered():
    assert {"lightgbm", "mixing_law", "linear", "loglinear"} <= set(predictor_names())


def test_mixing_law_fit_recovers_its_parameters():
    X = _mixtures(30, 4, seed=1)
    t = np.array([-2.0, -0.5, 0.5, 2.0])  # centred: the identifiable form
    y = mixing_law(X, 2.5, 0.8, t)
    law = make_predictor("mixing_law").fit(X, y)
    p = law.params()
    assert p["c"] == pytest.approx(2.5, abs=1e-3)
    assert p["k"] == pytest.approx(0.8, rel=1e-3)
    np.testing.assert_allclose(p["t"], t, atol=1e-3)
    X_new = _mixtures(50, 4, seed=2)
    np.testing.assert_allclose(law.predict(X_new), mixing_law(X_new, 2.5, 0.8, t), rtol=1e-4)


def test_mixing_law_with_noise_and_shifted_t_is_the_same_law():
    # t + a with k * exp(-a) is the same function on the simplex: the fit reports it centred.
    X = _mixtures(60, 3, seed=3)
    y = mixing_law(X, 3.0, 0.5 * np.exp(-1.0), np.array([-1.0, 1.0, 3.0]))
    y = y + np.random.default_rng(4).normal(0, 0.002, len(y))
    p = make_predictor("mixing_law").fit(X, y).params()
    np.testing.assert_allclose(p["t"], [-2.0, 0.0, 2.0], atol=0.15)
    assert p["k"] == pytest.approx(0.5, rel=0.1)
    assert p["c"] == pytest.approx(3.0, abs=0.05)


def test_mixing_law_fits_with_fewer_runs_than_parameters():
    X = _mixtures(5, 6, seed=5)
    y = mixing_law(X, 1.0, 1.0, np.linspace(-1, 1, 6))
    law = make_predictor("mixing_law").fit(X, y)
    assert np.all(np.isfinite(law.predict(X)))
    assert np.abs(law.predict(X) - y).max() < 0.05


def test_mixing_law_with_a_component_near_zero_in_every_run_stays_finite():
    """A climb search's proxies (eight clusters, the last one ~0 in every run): curve_fit left
    that component's t free to run off, and the normalization k * exp(mean t) overflowed
    (OverflowError out of `hf-mixture climb`).  The fit falls back to the ridge law instead."""
    X = np.array([
        [0.185, 0.291, 0.019, 0.227, 0.025, 0.038, 0.216, 0.0],
        [0.29, 0.282, 0.0, 0.02, 0.336, 0.062, 0.008, 0.001],
        [0.107, 0.316, 0.012, 0.003, 0.088, 0.04, 0.432, 0.001],
        [0.228, 0.211, 0.029, 0.124, 0.091, 0.009, 0.307, 0.0],
        [0.044, 0.243, 0.15, 0.365, 0.061, 0.088, 0.048, 0.0],
        [0.374, 0.202, 0.122, 0.135, 0.038, 0.008, 0.12, 0.0],
        [0.027, 0.444, 0.007, 0.005, 0.308, 0.029, 0.18, 0.0],
        [0.009, 0.328, 0.096, 0.027, 0.153, 0.001, 0.386, 0.0],
        [0.077, 0.071, 0.06, 0.041, 0.405, 0.005, 0.341, 0.0],
        [0.058, 0.301, 0.024, 0.365, 0.116, 0.066, 0.07, 0.0],
        [0.089, 0.239, 0.038, 0.299, 0.254, 0.061, 0.018, 0.002]])
    y = np.array([6.983, 7.068, 7.05, 6.929, 6.837, 7.13, 6.929, 7.09, 7.0, 7.019, 7.009])
    law = make_predictor("mixing_law").fit(X, y)
    params = law.params()
    assert np.isfinite([params["c"], params["k"], *params["t"]]).all()
    assert np.abs(law.predict(X) - y).max() < 0.2  # still a law of these runs
    mixed = np.full((1, 8), 1 / 8)  # a mixture that does use the last component: finite
    assert np.isfinite(law.predict(mixed)).all()


def test_lightgbm_ranks_held_out_runs_of_a_smooth_relationship():
    X = _mixtures(80, 5, seed=6)
    y = 4.0 - 1.5 * X[:, 0] + np.exp(-3 * X[:, 1]) + 0.5 * X[:, 2] ** 2
    q = cross_validate("lightgbm", X, y, folds=5, seed=0)
    assert q.scheme == "5-fold" and q.num_runs == 80
    assert q.spearman > 0.9
    assert q.mae < 0.1


def test_linear_and_loglinear_recover_their_forms():
    X = _mixtures(20, 3, seed=7)
    y = 1.0 + X @ np.array([2.0, -1.0, 0.5])
    lin = make_predictor("linear").fit(X, y)
    np.testing.assert_allclose(lin.predict(X), y, atol=1e-3)
    q = cross_validate("linear", X, y)
    assert q.spearman > 0.99 and q.mae < 1e-2
    y_exp = np.exp(y)
    log = make_predictor("loglinear").fit(X, y_exp)
    np.testing.assert_allclose(log.predict(X), y_exp, rtol=1e-3)


def test_loglinear_needs_positive_values():
    X = _mixtures(6, 2)
    with pytest.raises(HFMixtureError, match="needs every metric value > 0"):
        make_predictor("loglinear").fit(X, np.linspace(-1, 1, 6))


def test_cross_validation_is_leave_one_out_for_few_runs_and_deterministic():
    X = _mixtures(8, 3, seed=8)
    y = X @ np.array([1.0, 2.0, 3.0])
    a = cross_validate("linear", X, y, seed=1)
    b = cross_validate("linear", X, y, seed=1)
    assert a.scheme == "leave-one-out" and a.folds == 8
    assert a.predicted == b.predicted
    ids = fold_ids(23, 5, seed=0)
    assert sorted(np.bincount(ids).tolist()) == [4, 4, 5, 5, 5]
    assert np.array_equal(ids, fold_ids(23, 5, seed=0))


def test_too_few_runs_and_misuse_are_clear_errors():
    X = _mixtures(2, 3)
    with pytest.raises(HFMixtureError, match="needs at least 3 finished runs"):
        make_predictor("lightgbm").fit(X, [1.0, 2.0])
    with pytest.raises(HFMixtureError, match="needs at least 3 finished runs"):
        cross_validate("linear", X, [1.0, 2.0])
    with pytest.raises(HFMixtureError, match="must be fitted"):
        make_predictor("linear").predict(X)
    with pytest.raises(HFMixtureError, match="Unknown predictor 'nope'"):
        make_predictor("nope")
    with pytest.raises(HFMixtureError, match="NaN"):
        make_predictor("linear").fit(_mixtures(4, 2), [1.0, np.nan, 2.0, 3.0])
    fitted = make_predictor("linear").fit(_mixtures(4, 2), [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(HFMixtureError, match="fitted on 2 components, got 3"):
        fitted.predict(_mixtures(2, 3))


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(HFMixtureError, match="already registered"):
        @register_predictor("linear")
        class Again(Predictor):
            pass

    @register_predictor("test_mean_only")
    class MeanOnly(Predictor):
        def _fit(self, X, y):
            self.mean_ = float(y.mean())

        def _predict(self, X):
            return np.full(len(X), self.mean_)

    assert make_predictor("test_mean_only").fit(_mixtures(4, 2), [1, 2, 3, 4]).predict(
        _mixtures(1, 2)).tolist() == [2.5]
    q = cross_validate("test_mean_only", _mixtures(5, 2), [1, 2, 3, 4, 5])
    assert q.mae > 0  # a constant predictor cannot be perfect


def test_hybrid_is_the_law_plus_a_correction_of_its_residuals():
    from hf_mixture.search.predictors import predictor_family

    assert "hybrid" in predictor_names() and predictor_family("hybrid") == "law"
    assert predictor_family("lightgbm") == "other"
    X = _mixtures(60, 4, seed=3)
    t = np.array([-2.0, -0.5, 0.5, 2.0])
    law_only = mixing_law(X, 2.5, 0.8, t)
    # An exact law leaves nothing for the trees: the hybrid is the law.
    exact = make_predictor("hybrid").fit(X, law_only)
    assert exact.params()["trees"] is None
    np.testing.assert_allclose(exact.predict(X), law_only, rtol=1e-6)
    # A bump the law cannot express is partly corrected by the trees.
    y = law_only + 0.3 * (X[:, 0] > 0.4)
    law_err = np.abs(make_predictor("mixing_law").fit(X, y).predict(X) - y).mean()
    hybrid_err = np.abs(make_predictor("hybrid").fit(X, y).predict(X) - y).mean()
    assert hybrid_err < 0.8 * law_err


def test_auto_prefers_the_law_family_unless_another_wins_by_the_margin():
    from hf_mixture.search.search import _choose

    def q(rho, mae=0.1):
        return {"spearman": rho, "mae": mae}

    # Trees a little better on same-scale runs: the law-based predictor is kept.
    assert _choose({"lightgbm": q(0.95), "mixing_law": q(0.92), "hybrid": q(0.93)}, 0.05) \
        == "hybrid"
    # Clearly better: it is taken.
    assert _choose({"lightgbm": q(0.99), "mixing_law": q(0.80), "hybrid": q(0.85)}, 0.05) \
        == "lightgbm"
    # No law-based predictor could be measured (too few runs): the best of the others.
    assert _choose({"linear": q(0.9), "mixing_law": {"error": "too few"}}, 0.05) == "linear"
    assert _choose({}, 0.05) == "linear"
