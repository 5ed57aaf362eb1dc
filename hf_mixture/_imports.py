"""One check per optional dependency; the error names the extra to install."""

from __future__ import annotations

import importlib
import importlib.util

from .errors import MissingDependencyError


def is_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def is_faiss_available() -> bool:
    return is_available("faiss")


def is_lightgbm_available() -> bool:
    return is_available("lightgbm")


def is_matplotlib_available() -> bool:
    return is_available("matplotlib")


def is_sentence_transformers_available() -> bool:
    return is_available("sentence_transformers")


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or raise one sentence naming the pip extra that provides it."""
    if not is_available(module):
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module}', which is not installed: "
            f"run `pip install 'hf_mixture[{extra}]'`."
        )
    return importlib.import_module(module)
