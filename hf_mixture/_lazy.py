"""Lazy package exports: ``from pkg import Name`` imports only the sub-module that defines it.

Keeps the CLI and DataLoader workers from importing torch, datasets or transformers
for parts they do not use.  A package writes::

    _EXPORTS = {"TokenStore": "token_store", ...}
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package`` ({name: sub-module})."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            module = importlib.import_module(f"{package}.{exports[name]}")
            return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())) | set(exports))

    return __getattr__, __dir__
