"""On-disk formats: the clustered corpus (Hub-style parquet per cluster) and the token store.

Names are imported lazily, so ``import hf_mixture.formats.token_store`` in a training
worker does not load ``datasets``:

>>> from hf_mixture.formats import TokenStore, write_clustered_corpus   # doctest: +SKIP
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "write_clustered_corpus": "writer",
    "ClusteredCorpus": "clustered",
    "ClusteredCorpusBuilder": "clustered",
    "ClusteredCorpusConfig": "clustered",
    "cluster_config_name": "clustered",
    "load_tokenizer": "tokenizers",
    "tokenizer_fingerprint": "tokenizers",
    "tokenize_corpus": "tokenize",
    "validation_mask": "tokenize",
    "inspect_path": "inspect",
    "format_table": "inspect",
    "TokenStore": "token_store",
    "TokenStoreWriter": "token_store",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
