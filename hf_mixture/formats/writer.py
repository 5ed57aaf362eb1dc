"""Write a clustered corpus: ``cluster_<k>/*.parquet``, ``clusters.json`` and the card.

:func:`write_clustered_corpus` writes one from a ``datasets.Dataset``;
:func:`finish_clustered_corpus` writes the manifest and the stamped README configs of a
folder whose files are already in place (the clustering pipeline's write tasks).

>>> import datasets, tempfile, os
>>> ds = datasets.Dataset.from_dict({"tokens": [[1, 2], [3]], "cluster_id": [4, 4]})
>>> sorted(os.listdir(write_clustered_corpus(ds, os.path.join(tempfile.mkdtemp(), "c"))))
['README.md', 'cluster_4', 'clusters.json']
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._io import atomic_path, atomic_write_json, file_sha256, short_hash
from .._markdown import cell as _escape_cell
from ..errors import HFMixtureError
from .clustered import (
    _RESERVED_CLUSTER_KEYS,
    _RESERVED_MANIFEST_KEYS,
    CARD_TEMPLATE,
    CLUSTERS_JSON,
    DEFAULT_MAX_ROWS_PER_FILE,
    FILE_PATTERN,
    FORMAT,
    VERSION,
    _is_int_list,
    cluster_config_name,
)
from .hubstyle import stamp_configs
from .tokenizers import encode_texts, load_tokenizer, tokenizer_fingerprint

logger = logging.getLogger(__name__)


def _render_card(manifest: dict[str, Any], name: str, configs: list[dict[str, Any]]) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    template = importlib.resources.files("hf_mixture.hub_cards") / CARD_TEMPLATE
    card_data = DatasetCardData(
        pretty_name=name,
        task_categories=["text-generation"],
        tags=["hf-mixture", "clustered-corpus"],
        configs=configs,
    )
    rows = [
        {
            "id": c["id"],
            "config_name": c["config_name"],
            "docs": f"{c['docs']:,}",
            "tokens": f"{c['tokens']:,}",
            "description": _escape_cell(c.get("description")),
        }
        for c in manifest["clusters"]
    ]
    card = DatasetCard.from_template(
        card_data,
        template_path=str(template),
        name=name,
        clusters=rows,
        first_config=manifest["clusters"][0]["config_name"],
        total_docs=f"{manifest['docs']:,}",
        total_tokens=f"{manifest['tokens']:,}",
        tokenizer=manifest.get("tokenizer"),
        columns=manifest["columns"],
    )
    return str(card)


def _normalize_descriptions(descriptions: Mapping | None) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for key, value in (descriptions or {}).items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise HFMixtureError(
                f"descriptions: key {key!r} is not a cluster id (an integer)."
            ) from None
        if isinstance(value, str):
            value = {"description": value}
        if not isinstance(value, Mapping):
            raise HFMixtureError(
                f"descriptions[{k}] must be a mapping of facts (description, top_terms, ...), "
                f"got {type(value).__name__}."
            )
        clash = sorted(_RESERVED_CLUSTER_KEYS & set(value))
        if clash:
            raise HFMixtureError(
                f"descriptions[{k}]: field '{clash[0]}' is written by the writer itself."
            )
        try:
            json.dumps(dict(value))
        except TypeError as err:
            raise HFMixtureError(f"descriptions[{k}] is not JSON-serializable ({err}).") from None
        out[k] = dict(value)
    return out


def write_clustered_corpus(
    dataset: datasets.Dataset,
    output_dir: str | os.PathLike,
    *,
    tokenizer: Any = None,
    text_column: str = "text",
    descriptions: Mapping[int, Mapping[str, Any]] | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
    name: str | None = None,
) -> Path:
    """Write ``dataset`` (with an int ``cluster_id`` column) as a clustered corpus folder.

    Without a ``tokens`` column, ``tokens``/``token_count`` are computed from
    ``text_column`` with ``tokenizer`` (a fast tokenizer or its name/path).  Every
    other column is kept.  ``descriptions`` maps cluster id to JSON-able facts
    (``description``, ``top_terms``, ``examples``, ...) merged into clusters.json;
    entries for clusters with no documents are ignored, like those clusters.  The
    folder is written under a temporary name and renamed when complete.  ``name`` is
    the card's title (default: the folder's name).

    ``clusters.json`` records every file's size and SHA-256 and the corpus
    ``fingerprint`` over them; each README config carries that fingerprint in its
    ``description``, so ``datasets.load_dataset`` never serves another corpus of the
    same folder name from its cache (see :mod:`hf_mixture.formats.hubstyle`).

    >>> import datasets, tempfile, os
    >>> ds = datasets.Dataset.from_dict({"tokens": [[1, 2], [3]], "cluster_id": [4, 4]})
    >>> path = write_clustered_corpus(ds, os.path.join(tempfile.mkdtemp(), "c"),
    ...                               descriptions={4: {"description": "numbers"}})
    >>> sorted(os.listdir(path))
    ['README.md', 'cluster_4', 'clusters.json']
    """
    if not isinstance(dataset, datasets.Dataset):
        raise HFMixtureError(
            f"write_clustered_corpus needs a datasets.Dataset, got {type(dataset).__name__}."
        )
    if len(dataset) == 0:
        raise HFMixtureError(
            "Cannot write a clustered corpus from an empty dataset: it has no rows."
        )
    if max_rows_per_file < 1:
        raise HFMixtureError(f"max_rows_per_file must be at least 1, got {max_rows_per_file}.")
    out = Path(output_dir)
    if out.exists():
        if not overwrite:
            raise HFMixtureError(
                f"Output '{out}' already exists; pass overwrite=True to replace it."
            )
        if not out.is_dir() or (any(out.iterdir()) and not (out / CLUSTERS_JSON).is_file()):
            raise HFMixtureError(
                f"Output '{out}' exists and is not a clustered corpus; refusing to replace it."
            )
    schema = dataset.features.arrow_schema
    if "cluster_id" not in schema.names:
        raise HFMixtureError(
            f"The dataset has no field 'cluster_id'; it has {', '.join(schema.names)}."
        )
    if not pa.types.is_integer(schema.field("cluster_id").type):
        raise HFMixtureError(
            f"The dataset's field 'cluster_id' has type {schema.field('cluster_id').type}, expected an integer."
        )
    cluster_col = dataset.with_format("arrow")["cluster_id"]
    if cluster_col.null_count:
        raise HFMixtureError("The dataset's field 'cluster_id' has missing (null) values.")
    ids = cluster_col.to_numpy()
    if ids.min() < 0:
        raise HFMixtureError(
            f"The dataset's field 'cluster_id' holds {int(ids.min())}; ids must be >= 0."
        )
    desc = _normalize_descriptions(descriptions)
    extra = dict(extra_manifest or {})
    clash = sorted(_RESERVED_MANIFEST_KEYS & set(extra))
    if clash:
        raise HFMixtureError(f"extra_manifest: field '{clash[0]}' is written by the writer itself.")
    try:
        json.dumps(extra)
    except TypeError as err:
        raise HFMixtureError(f"extra_manifest is not JSON-serializable ({err}).") from None

    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    tok_info = tokenizer_fingerprint(tok) if tok is not None else None
    dataset = _with_tokens(dataset, tok, tok_info, text_column)

    counts = dataset.with_format("arrow")["token_count"].to_numpy()
    first = ["tokens", "token_count", "cluster_id"] + (
        ["text"] if "text" in dataset.column_names else []
    )
    dataset = dataset.select_columns(first + [c for c in dataset.column_names if c not in first])

    order = np.argsort(ids, kind="stable")  # stable: each cluster keeps the input's row order
    uniq, starts = np.unique(ids[order], return_index=True)
    bounds = list(starts) + [len(order)]
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        files: dict[str, dict[str, Any]] = {}
        for j, k in enumerate(int(u) for u in uniq):
            rows = order[bounds[j] : bounds[j + 1]]
            folder_name = cluster_config_name(k)
            (tmp / folder_name).mkdir()
            subset = dataset.select(rows)
            for i, lo in enumerate(range(0, len(rows), max_rows_per_file)):
                hi = min(lo + max_rows_per_file, len(rows))
                rel = f"{folder_name}/{FILE_PATTERN.format(k=k, i=i)}"
                subset.select(range(lo, hi)).to_parquet(str(tmp / rel))
                files[rel] = {"cluster": k, "docs": hi - lo,
                              "tokens": int(counts[rows[lo:hi]].sum())}
        for rel, entry in files.items():
            entry.update(bytes=(tmp / rel).stat().st_size, sha256=file_sha256(tmp / rel))
        manifest = finish_clustered_corpus(tmp, files, name=name or out.name, tokenizer=tok_info,
                                           descriptions=desc, extra_manifest=extra)
    logger.info(
        "wrote clustered corpus %s: %d clusters, %d docs, %d tokens",
        out,
        len(manifest["clusters"]),
        manifest["docs"],
        manifest["tokens"],
    )
    return out


def finish_clustered_corpus(
    folder: str | os.PathLike,
    files: Mapping[str, Mapping[str, Any]],
    *,
    name: str,
    tokenizer: dict[str, Any] | None,
    descriptions: Mapping | None = None,
    extra_manifest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``clusters.json`` and the README card (stamped ``configs:``) of a folder whose
    parquet files are in place; returns the manifest.

    ``files``: ``{relative path: {"cluster", "docs", "tokens", "bytes", "sha256"}}`` -- what
    each writer task recorded of its own files, so nothing is re-read here.
    """
    folder = Path(folder)
    desc = _normalize_descriptions(descriptions)
    extra = dict(extra_manifest or {})
    by_cluster: dict[int, dict[str, int]] = {}
    for entry in files.values():
        c = by_cluster.setdefault(int(entry["cluster"]), {"docs": 0, "tokens": 0})
        c["docs"] += int(entry["docs"])
        c["tokens"] += int(entry["tokens"])
    if not by_cluster:
        raise HFMixtureError(f"Clustered corpus '{folder}' would have no documents.")
    clusters: list[dict[str, Any]] = []
    configs: list[dict[str, Any]] = []
    for k in sorted(by_cluster):
        config_name = cluster_config_name(k)
        entry = {"id": k, "config_name": config_name, **by_cluster[k], "description": None}
        entry.update(desc.get(k, {}))
        clusters.append(entry)
        configs.append({"config_name": config_name,
                        "data_files": [{"split": "train", "path": f"{config_name}/*.parquet"}]})
    configs.append({
        "config_name": "default",
        "data_files": [{"split": "train",
                        "path": [f"{c['config_name']}/*.parquet" for c in clusters]}],
    })
    fingerprint = short_hash([[rel, files[rel]["sha256"]] for rel in sorted(files)])
    configs = stamp_configs(configs, fingerprint, {
        c["config_name"]: c["description"] for c in clusters if c.get("description")})
    first = folder / sorted(files)[0]
    columns = pq.ParquetFile(first).schema_arrow.names
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer": tokenizer,
        "columns": columns,
        "docs": int(sum(c["docs"] for c in clusters)),
        "tokens": int(sum(c["tokens"] for c in clusters)),
        "clusters": clusters,
        "fingerprint": fingerprint,
        "files": {rel: {"bytes": int(files[rel]["bytes"]), "sha256": files[rel]["sha256"]}
                  for rel in sorted(files)},
        **extra,
    }
    atomic_write_json(folder / CLUSTERS_JSON, manifest)
    (folder / "README.md").write_text(_render_card(manifest, name, configs), encoding="utf-8")
    return manifest


def tokenize_dataset(dataset: datasets.Dataset, tokenizer: Any, text_column: str, *,
                     where: str = "dataset", sha256: str | None = None) -> datasets.Dataset:
    """``dataset`` plus ``tokens``/``token_count`` from a fast tokenizer (batched, no special tokens).

    ``where`` names the input in error messages; ``sha256`` (the tokenizer's content hash,
    computed when not given) names the tokenizer in the ``datasets`` cache fingerprint so
    ``datasets`` need not hash the tokenizer object.
    """
    backend = tokenizer.backend_tokenizer
    sha256 = sha256 or tokenizer_fingerprint(tokenizer)["sha256"]

    def encode(batch):
        ids = encode_texts(backend, batch[text_column], where=where)
        return {"tokens": ids, "token_count": [len(x) for x in ids]}

    features = dataset.features.copy()
    features["tokens"] = datasets.List(datasets.Value("int32"))
    features["token_count"] = datasets.Value("int64")
    fingerprint = hashlib.sha256(
        f"{dataset._fingerprint}|{sha256}|{text_column}".encode()).hexdigest()[:16]
    return dataset.map(encode, batched=True, features=features, new_fingerprint=fingerprint,
                       desc="tokenize")


def _with_tokens(dataset: datasets.Dataset, tok, tok_info, text_column: str) -> datasets.Dataset:
    """``dataset`` with checked ``tokens`` and ``token_count`` columns (computed when absent)."""
    schema = dataset.features.arrow_schema
    if "tokens" not in schema.names:
        if tok is None:
            raise HFMixtureError(
                f"The dataset has no field 'tokens', so write_clustered_corpus needs tokenizer= to "
                f"compute them from field '{text_column}'."
            )
        if text_column not in schema.names:
            raise HFMixtureError(
                f"The dataset has neither field 'tokens' nor the text field '{text_column}'."
            )
        return tokenize_dataset(dataset, tok, text_column, sha256=tok_info["sha256"])
    if not _is_int_list(schema.field("tokens").type):
        raise HFMixtureError(
            f"The dataset's field 'tokens' has type {schema.field('tokens').type}, expected a list of integers."
        )
    tokens = dataset.with_format("arrow")["tokens"]
    if tokens.null_count:
        raise HFMixtureError("The dataset's field 'tokens' has missing (null) values.")
    lengths = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    if tok_info is not None:
        values = pc.list_flatten(tokens).to_numpy(zero_copy_only=False)
        if values.size and (values.min() < 0 or values.max() >= tok_info["vocab_size"]):
            bad = np.flatnonzero((values < 0) | (values >= tok_info["vocab_size"]))[0]
            row = int(np.searchsorted(np.cumsum(lengths), bad, side="right"))
            raise HFMixtureError(
                f"The dataset's row {row}: field 'tokens' holds id {int(values[bad])}, outside the "
                f"vocabulary of tokenizer '{tok_info['name']}' (size {tok_info['vocab_size']})."
            )
    if "token_count" in schema.names:
        if not pa.types.is_integer(schema.field("token_count").type):
            raise HFMixtureError(
                f"The dataset's field 'token_count' has type {schema.field('token_count').type}, "
                "expected an integer."
            )
        given = dataset.with_format("arrow")["token_count"].to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(given != lengths)
        if wrong.size:
            r = int(wrong[0])
            raise HFMixtureError(
                f"The dataset's row {r}: field 'token_count' is {given[r]}, but field 'tokens' "
                f"holds {lengths[r]} ids."
            )
        return dataset
    return dataset.add_column(
        "token_count",
        lengths.astype(np.int64).tolist(),
        new_fingerprint=hashlib.sha256(f"{dataset._fingerprint}|token_count".encode()).hexdigest()[
            :16
        ],
    )
