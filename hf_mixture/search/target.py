"""The search's target: the one target module is :mod:`hf_mixture.mixture.target`.

Search and the mixture callbacks read a target (``"mean"``, ``"worst"``, a text set,
a callable) with the same code; these names stay importable from here.
"""

from __future__ import annotations

from ..mixture.target import (
    TARGET_KEY,
    TargetSpec,
    load_target_rows,
    load_target_texts,
    pack_documents,
    prepare_target,
    resolve_callable,
    store_tokenizer,
    target_kind,
    tokenize_target,
)

__all__ = [
    "TARGET_KEY",
    "TargetSpec",
    "load_target_rows",
    "load_target_texts",
    "pack_documents",
    "prepare_target",
    "resolve_callable",
    "store_tokenizer",
    "target_kind",
    "tokenize_target",
]
