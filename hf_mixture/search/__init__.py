"""Mixture search: proxy runs, predictors, data mixing laws and the CLIMB loop.

Names are imported lazily, so the CLI does not import torch for ``--help``:

>>> from hf_mixture.search import SearchConfig, run_search          # doctest: +SKIP
>>> result = run_search("store/", "mean", "search_out/", SearchConfig())  # doctest: +SKIP
>>> result.mixture_path                                               # doctest: +SKIP
PosixPath('search_out/mixture.yaml')
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "SearchConfig": "config",
    "SearchResult": "search",
    "run_search": "search",
    "load_runs": "search",
    "ProxySettings": "proxy",
    "run_proxy": "proxy",
    "TargetSpec": "target",
    "prepare_target": "target",
    "Predictor": "predictors",
    "PredictorQuality": "predictors",
    "register_predictor": "predictors",
    "make_predictor": "predictors",
    "predictor_names": "predictors",
    "cross_validate": "predictors",
    "dirichlet_candidates": "candidates",
    "token_prior": "candidates",
    "repetition_caps": "candidates",
    "PowerLaw": "laws",
    "fit_power_law": "laws",
    "fit_laws": "laws",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
