"""On-disk formats: the clustered corpus (Hub-style parquet per cluster) and the token store.

Names are imported lazily, so ``import hf_mixture.formats.token_store`` in a training
worker does not load ``datasets``:

>>> from hf_mixture.formats import TokenStore, write_clustered_corpus   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "write_clustered_corpus": "clustered",
    "ClusteredCorpus": "clustered",
    "ClusteredCorpusBuilder": "clustered",
    "ClusteredCorpusConfig": "clustered",
    "cluster_config_name": "clustered",
    "load_tokenizer": "clustered",
    "tokenizer_fingerprint": "clustered",
    "tokenize_corpus": "tokenize",
    "validation_mask": "tokenize",
    "inspect_path": "inspect",
    "format_table": "inspect",
    "TokenStore": "token_store",
    "TokenStoreWriter": "token_store",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
