"""The clustered corpus: one folder of parquet files per cluster, readable with no custom code.

Layout (the released ``nvidia/ClimbLab`` uses the same folders, file names and
columns; it has no ``clusters.json`` and no ``configs:`` block)::

    CORPUS/
      README.md                        YAML ``configs:`` (one per cluster + ``default``) and a card
      clusters.json                    per cluster: id, config_name, docs, tokens, description, ...
      cluster_<k>/cluster_<k>_000.tokenized.parquet   columns tokens, token_count, cluster_id,
      cluster_<k>/cluster_<k>_001.tokenized.parquet   text (when present), every input column

Because the README carries ``configs:``, ``datasets.load_dataset(CORPUS, "cluster_3")``
and ``get_dataset_config_names(CORPUS)`` work on a folder or a Hub repo with no
custom code.  From Python, :class:`ClusteredCorpus` validates and reads either
layout (ours or ClimbLab's, local or on the Hub), and
:class:`ClusteredCorpusBuilder` is a ``datasets`` builder over it that can also
decode token ids back to text.

>>> import datasets, tempfile, os
>>> ds = datasets.Dataset.from_dict({"tokens": [[1, 2], [3], [4, 5, 6]], "cluster_id": [0, 1, 0]})
>>> out = write_clustered_corpus(ds, os.path.join(tempfile.mkdtemp(), "corpus"))
>>> corpus = ClusteredCorpus(out)
>>> corpus.cluster_ids, corpus.num_tokens(0)
([0, 1], 5)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._checks import check_unique_columns
from .._io import short_hash
from ..errors import HFMixtureError
from .tokenizers import load_tokenizer, tokenizer_fingerprint

logger = logging.getLogger(__name__)

FORMAT = "hf_mixture.clustered_corpus"
VERSION = 1
CLUSTERS_JSON = "clusters.json"
CARD_TEMPLATE = "clustered_corpus_card.md"
# ClimbLab names its shards cluster_<k>/cluster_<k>_<NNN>.tokenized.parquet; we match it so
# tools written for ClimbLab (and its detokenize script) find our files too.
FILE_PATTERN = "cluster_{k}_{i:03d}.tokenized.parquet"
DEFAULT_MAX_ROWS_PER_FILE = 100_000
_CLUSTER_DIR = re.compile(r"^cluster_(\d+)$")
_HUB_ID = re.compile(r"^(?:hf://datasets/)?([A-Za-z0-9][\w.-]*/[\w.-]+)$")
# Manifest keys the writer owns; descriptions / extra_manifest may not override them.
_RESERVED_CLUSTER_KEYS = {"id", "config_name", "docs", "tokens"}
_RESERVED_MANIFEST_KEYS = {
    "format",
    "version",
    "tokenizer",
    "clusters",
    "docs",
    "tokens",
    "columns",
    "files",
    "fingerprint",
}


def cluster_config_name(cluster_id: int) -> str:
    """The folder and ``datasets`` config name of a cluster: ``cluster_<k>``."""
    return f"cluster_{int(cluster_id)}"


# ----------------------------------------------------------------------------- schema checks
def _type_name(t: pa.DataType) -> str:
    return str(t)


def _is_int_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)


def check_schema(schema: pa.Schema, where: str) -> None:
    """Raise one sentence naming ``where`` and the field when ``schema`` is not a cluster file's."""
    check_unique_columns(schema.names, where)
    names = set(schema.names)
    if "tokens" in names:
        if not _is_int_list(schema.field("tokens").type):
            raise HFMixtureError(
                f"{where}: field 'tokens' has type {_type_name(schema.field('tokens').type)}, "
                "expected a list of integer token ids."
            )
        if "token_count" not in names:
            raise HFMixtureError(
                f"{where}: field 'token_count' is missing (it is required beside 'tokens')."
            )
    elif "text" not in names:
        raise HFMixtureError(
            f"{where}: field 'tokens' is missing (and there is no 'text' field to tokenize); "
            f"the file has fields {', '.join(schema.names) or 'none'}."
        )
    if "token_count" in names and not pa.types.is_integer(schema.field("token_count").type):
        raise HFMixtureError(
            f"{where}: field 'token_count' has type {_type_name(schema.field('token_count').type)}, "
            "expected an integer."
        )
    if "cluster_id" in names and not pa.types.is_integer(schema.field("cluster_id").type):
        raise HFMixtureError(
            f"{where}: field 'cluster_id' has type {_type_name(schema.field('cluster_id').type)}, "
            "expected an integer."
        )
    if "text" in names:
        t = schema.field("text").type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise HFMixtureError(
                f"{where}: field 'text' has type {_type_name(t)}, expected a string."
            )


def _count(value: Any) -> bool:
    """An integer >= 0 that is not a bool (JSON's ``true`` is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ----------------------------------------------------------------------------- file sources
# Bytes fetched per read of a remote file: a parquet footer or one column chunk costs about this
# much instead of fsspec's multi-megabyte default block (inspect reads < 1% of ClimbLab).
FOOTER_BLOCK = 1 << 16
STREAM_BLOCK = 8 << 20
_MIXED_SUFFIXES = (".jsonl", ".parquet")


class _Source:
    """Where a corpus' files live: a local folder, a Hub dataset repo pinned to one commit
    (read through ``HfFileSystem`` with range requests), or any fsspec filesystem + root."""

    def __init__(self, path: str | os.PathLike, revision: str | None, filesystem=None):
        self.given = str(path)
        self.root: Path | None = None
        self.repo_id: str | None = None
        self.revision: str | None = None
        local = Path(path).expanduser()
        match = _HUB_ID.match(self.given)
        if filesystem is not None:
            self.fs, self.base = filesystem, self.given.rstrip("/")
            if not self.fs.isdir(self.base):
                raise HFMixtureError(f"Clustered corpus path '{self.given}' does not exist.")
            names = [p[len(self.base) + 1:] for p in self.fs.find(self.base)]
        elif local.exists():
            if revision is not None:
                raise HFMixtureError(
                    f"revision {revision!r} applies to Hub dataset ids, but '{self.given}' is a local path."
                )
            if not local.is_dir():
                raise HFMixtureError(
                    f"Clustered corpus path '{self.given}' is a file, not a folder."
                )
            from fsspec.implementations.local import LocalFileSystem

            self.root = local
            self.fs, self.base = LocalFileSystem(), str(local.resolve())
            names = [p.relative_to(local).as_posix() for p in local.glob("*") if p.is_file()]
            names += [p.relative_to(local).as_posix() for p in local.glob("*/*.parquet")]
            self.dirs = sorted(
                p.name for p in local.iterdir() if p.is_dir() and _CLUSTER_DIR.match(p.name)
            )
        elif match and not self.given.startswith((".", "/", "~")):
            names = self._resolve_hub(match.group(1), revision)
        else:
            raise HFMixtureError(f"Clustered corpus path '{self.given}' does not exist.")
        self._names = set(names)
        self.files = sorted(
            n for n in names
            if n.endswith(".parquet") and n.count("/") == 1 and _CLUSTER_DIR.match(n.split("/")[0])
        )
        if not hasattr(self, "dirs"):
            self.dirs = sorted({n.split("/")[0] for n in self.files})
        # ClimbMix's layout: documents of every cluster mixed in root-level files
        self.mixed = sorted(n for n in names if "/" not in n and n.endswith(_MIXED_SUFFIXES))

    def _resolve_hub(self, repo_id: str, revision: str | None) -> list[str]:
        from huggingface_hub import HfApi, HfFileSystem

        api = HfApi()
        try:
            # Pin the commit first so every later read (footers, rows) sees the same files.
            sha = api.dataset_info(repo_id, revision=revision).sha
            names = api.list_repo_files(repo_id, repo_type="dataset", revision=sha)
        except Exception as err:  # noqa: BLE001 -- network, offline, missing repo: one answer for the user
            raise HFMixtureError(
                f"Clustered corpus '{self.given}' is not a local folder and could not be resolved as a "
                f"Hub dataset ({type(err).__name__}: {_short(err)})."
            ) from None
        self.repo_id, self.revision = repo_id, sha
        self.fs, self.base = HfFileSystem(), f"datasets/{repo_id}@{sha}"
        return list(names)

    @property
    def is_local(self) -> bool:
        return self.root is not None

    def display(self, rel: str) -> str:
        if self.root is not None:
            return str(self.root / rel)
        if self.repo_id is not None:
            return f"hf://datasets/{self.repo_id}@{self.revision}/{rel}"
        return f"{self.base}/{rel}"

    def exists(self, rel: str) -> bool:
        if self.root is not None:
            return (self.root / rel).is_file()
        return rel in self._names

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(f"{self.base}/{rel}")

    def open(self, rel: str, block_size: int = FOOTER_BLOCK):
        """A binary file object that fetches ``block_size`` bytes per miss (range requests)."""
        if self.root is not None:
            return open(self.root / rel, "rb")
        return self.fs.open(f"{self.base}/{rel}", "rb", block_size=block_size)

    def local_path(self, rel: str) -> str:
        """A local path to ``rel``; Hub files are downloaded once into the Hugging Face cache
        (only ``--download`` asks for this: reads stream otherwise)."""
        if self.root is not None:
            return str(self.root / rel)
        if self.repo_id is None:
            raise HFMixtureError(f"'{self.display(rel)}' is not on the Hub: nothing to download.")
        from huggingface_hub import hf_hub_download

        try:
            return hf_hub_download(self.repo_id, rel, repo_type="dataset", revision=self.revision)
        except Exception as err:  # noqa: BLE001 -- any network error: name the file for the user
            raise HFMixtureError(
                f"Could not download '{self.display(rel)}' ({_short(err)})."
            ) from None

    def fingerprint(self) -> str:
        """Content identity: the Hub commit, or every file's name, size and mtime."""
        if self.repo_id is not None:
            return short_hash(f"hub:{self.repo_id}@{self.revision}")
        parts = []
        for rel in [CLUSTERS_JSON, *self.files, *self.mixed]:
            if self.root is not None:
                p = self.root / rel
                if p.is_file():
                    st = p.stat()
                    parts.append([rel, st.st_size, st.st_mtime_ns])
            elif rel in self._names:
                info = self.fs.info(f"{self.base}/{rel}")
                parts.append([rel, info.get("size"), str(info.get("mtime") or info.get("ETag"))])
        return short_hash(parts)


@dataclass
class _FileMeta:
    schema: pa.Schema
    num_rows: int
    cluster_checked: bool = True  # False: the footer had no cluster_id statistics; rows are checked
    metadata: Any = None  # pyarrow FileMetaData: later reads skip the footer


def read_footer(fh) -> pq.FileMetaData:
    """A parquet file's metadata from exactly its footer bytes (2 reads at the end of the file).

    pyarrow alone reads a fixed 64 KiB tail; over ``HfFileSystem`` that is what decides how
    much of a 2 TB corpus ``inspect`` fetches.
    """
    fh.seek(-8, os.SEEK_END)
    tail = fh.read(8)
    if len(tail) != 8 or tail[4:] != b"PAR1":
        raise OSError("not a parquet file (no PAR1 footer)")
    length = int.from_bytes(tail[:4], "little")
    fh.seek(-(8 + length), os.SEEK_END)
    footer = fh.read(length)
    return pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail))


def _comparable(t: pa.DataType, name: str) -> str:
    """What must agree between two files of a corpus: ClimbLab's shards differ in int width and
    list vs large_list for ``tokens``/``token_count``, which is harmless."""
    if name in ("tokens", "token_count", "cluster_id"):
        return name
    return str(t)


# ----------------------------------------------------------------------------- reader
class _SourceFacts:
    """Where a corpus lives, for both layouts (cluster folders, mixed files): ``self._src``."""

    _src: _Source

    @property
    def is_local(self) -> bool:
        return self._src.is_local

    @property
    def revision(self) -> str | None:
        """The Hub commit the corpus is pinned to (None for a local folder)."""
        return self._src.revision

    @property
    def repo_id(self) -> str | None:
        return self._src.repo_id

    @property
    def fingerprint(self) -> str:
        """Changes whenever a file of the corpus does (local) or the commit does (Hub)."""
        return self._src.fingerprint()

    def display(self, rel: str) -> str:
        """The name of a file for messages: a local path or an ``hf://`` URL."""
        return self._src.display(rel)


class ClusteredCorpus(_SourceFacts):
    """A validated clustered corpus: ours (with ``clusters.json``) or ClimbLab's layout.

    ``path`` is a local folder or a Hub dataset id (``owner/name``, optionally
    ``revision=``).  Local corpora are checked completely on open (every parquet
    footer: schema and row count); on the Hub each file is checked when first read,
    so opening a 1T-token corpus does not fetch a thousand footers.

    >>> corpus = ClusteredCorpus("path/to/corpus")           # doctest: +SKIP
    >>> corpus.cluster_ids, corpus.clusters[0]["docs"]        # doctest: +SKIP
    ([0, 1, 2], 1250)
    >>> ds = corpus.load(cluster_id=2)                        # doctest: +SKIP
    """

    def __init__(
        self, path: str | os.PathLike, *, revision: str | None = None, validate: bool | None = None,
        filesystem=None, clusters: Sequence[int] | None = None,
        max_files_per_cluster: int | None = None,
    ):
        self._src = _Source(path, revision, filesystem)
        self.path = self._src.given
        self._meta: dict[str, _FileMeta] = {}
        self._tokens: dict[int, int | None] = {}
        self.manifest = self._read_manifest()
        by_cluster: dict[int, list[str]] = {}
        for rel in self._src.files:
            k = int(_CLUSTER_DIR.match(rel.split("/")[0]).group(1))
            by_cluster.setdefault(k, []).append(rel)
        for name in self._src.dirs:
            k = int(_CLUSTER_DIR.match(name).group(1))
            if k not in by_cluster:
                raise HFMixtureError(
                    f"Cluster folder '{self._src.display(name)}' holds no parquet files (an empty cluster)."
                )
        if not by_cluster:
            extra = (" Its root-level files look like ClimbMix's mixed layout: read it with "
                     "hf_mixture.formats.open_corpus or MixedCorpus.") if self._src.mixed else ""
            raise HFMixtureError(
                f"'{self.path}' is not a clustered corpus: it has no cluster_<k>/ folders of parquet "
                f"files.{extra}"
            )
        if clusters is not None:
            wanted = sorted({int(k) for k in clusters})
            missing = [k for k in wanted if k not in by_cluster]
            if missing:
                raise HFMixtureError(
                    f"Clustered corpus '{self.path}' has no cluster {missing[0]}; it has "
                    f"{', '.join(map(str, sorted(by_cluster)))}.")
            by_cluster = {k: by_cluster[k] for k in wanted}
        if max_files_per_cluster is not None:
            if max_files_per_cluster < 1:
                raise HFMixtureError(
                    f"max_files_per_cluster must be at least 1, got {max_files_per_cluster}.")
            by_cluster = {k: v[:max_files_per_cluster] for k, v in by_cluster.items()}
        self.selected = clusters is not None or max_files_per_cluster is not None
        self._files = {k: by_cluster[k] for k in sorted(by_cluster)}
        if self.manifest is not None and not self.selected:
            listed = {int(c["id"]) for c in self.manifest["clusters"]}
            for k in sorted(listed - set(self._files)):
                raise HFMixtureError(
                    f"{self._src.display(CLUSTERS_JSON)}: field 'clusters' lists cluster {k}, "
                    f"but folder {cluster_config_name(k)}/ holds no parquet files."
                )
            for k in sorted(set(self._files) - listed):
                raise HFMixtureError(
                    f"Folder '{self._src.display(cluster_config_name(k))}' is not listed in "
                    f"{CLUSTERS_JSON} (field 'clusters')."
                )
        if validate is None:
            validate = self._src.is_local
        if validate:
            self.validate()

    # -- manifest ------------------------------------------------------------------
    def _read_manifest(self) -> dict[str, Any] | None:
        if not self._src.exists(CLUSTERS_JSON):
            return None  # the released ClimbLab has none: clusters come from the folders
        where = self._src.display(CLUSTERS_JSON)
        try:
            manifest = json.loads(self._src.read_bytes(CLUSTERS_JSON).decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HFMixtureError(f"{where} is not valid JSON ({_short(err)}).") from None
        if not isinstance(manifest, dict):
            raise HFMixtureError(f"{where} must hold a JSON object, not {type(manifest).__name__}.")
        if manifest.get("format") != FORMAT:
            raise HFMixtureError(
                f"{where}: field 'format' is {manifest.get('format')!r}, expected {FORMAT!r}."
            )
        if manifest.get("version") != VERSION:
            raise HFMixtureError(
                f"{where}: field 'version' is {manifest.get('version')!r}; this hf_mixture reads version {VERSION}."
            )
        clusters = manifest.get("clusters")
        if not isinstance(clusters, list) or not clusters:
            raise HFMixtureError(f"{where}: field 'clusters' must be a non-empty list.")
        seen: set[int] = set()
        for i, entry in enumerate(clusters):
            if (
                not isinstance(entry, dict)
                or not _count(entry.get("id"))
            ):
                raise HFMixtureError(
                    f"{where}: field 'clusters[{i}].id' must be a non-negative integer."
                )
            if entry["id"] in seen:
                raise HFMixtureError(f"{where}: field 'clusters[{i}].id' is {entry['id']}, "
                                     "which an earlier entry already has.")
            seen.add(entry["id"])
            for key in ("docs", "tokens"):
                if entry.get(key) is not None and not _count(entry[key]):
                    raise HFMixtureError(f"{where}: field 'clusters[{i}].{key}' is "
                                         f"{entry[key]!r}, not an integer >= 0.")
            for key in ("description", "config_name"):
                if entry.get(key) is not None and not isinstance(entry[key], str):
                    raise HFMixtureError(f"{where}: field 'clusters[{i}].{key}' is "
                                         f"{entry[key]!r}, not a string.")
        tok = manifest.get("tokenizer")
        if tok is not None:
            if not isinstance(tok, dict):
                raise HFMixtureError(f"{where}: field 'tokenizer' is {tok!r}, not a mapping of "
                                     "name, sha256 and vocab_size.")
            for key in ("name", "sha256"):
                if tok.get(key) is not None and not isinstance(tok[key], str):
                    raise HFMixtureError(f"{where}: field 'tokenizer.{key}' is {tok[key]!r}, "
                                         "not a string.")
            if tok.get("vocab_size") is not None and not _count(tok["vocab_size"]):
                raise HFMixtureError(f"{where}: field 'tokenizer.vocab_size' is "
                                     f"{tok['vocab_size']!r}, not an integer >= 0.")
        return manifest

    # -- files ---------------------------------------------------------------------
    @property
    def cluster_ids(self) -> list[int]:
        return list(self._files)

    def _require(self, cluster_id: int) -> None:
        if cluster_id not in self._files:
            raise HFMixtureError(
                f"Clustered corpus '{self.path}' has no cluster {cluster_id}; it has "
                f"{', '.join(map(str, self.cluster_ids))}."
            )

    def files(self, cluster_id: int) -> list[str]:
        """The cluster's parquet files, relative to the corpus root, in read order."""
        self._require(cluster_id)
        return list(self._files[cluster_id])

    def local_file(self, rel: str) -> str:
        """A local path to ``rel`` (downloaded into the Hugging Face cache for a Hub corpus)."""
        return self._src.local_path(rel)

    def cluster_of(self, rel: str) -> int:
        """The cluster a file belongs to: its folder ``cluster_<k>/`` says so."""
        return int(_CLUSTER_DIR.match(rel.split("/")[0]).group(1))

    def file_meta(self, rel: str) -> _FileMeta:
        """Schema and row count of one file, read from its footer and checked.

        A ``cluster_id`` column is optional (the released ClimbLab has none: the folder is the
        cluster); when present its footer statistics must say the folder's id, or every row
        is checked when the file is read.
        """
        if rel not in self._meta:
            where = self.display(rel)
            try:
                with self._src.open(rel) as fh:
                    md = read_footer(fh)
                    meta = _FileMeta(md.schema.to_arrow_schema(), md.num_rows, metadata=md)
                    check_schema(meta.schema, where)
                    if "cluster_id" in meta.schema.names:
                        meta.cluster_checked = self._check_cluster_stats(rel, md, where)
            except (pa.ArrowException, OSError) as err:
                raise HFMixtureError(
                    f"Parquet file '{where}' is corrupt or truncated and cannot be read ({_short(err)})."
                ) from None
            first = next(iter(self._meta.values()), None)
            if first is not None:
                # cluster_id is optional per file (the folder says the cluster)
                want = sorted((f.name, _comparable(f.type, f.name)) for f in first.schema
                              if f.name != "cluster_id")
                got = sorted((f.name, _comparable(f.type, f.name)) for f in meta.schema
                             if f.name != "cluster_id")
                if got != want:
                    diff = sorted({n for n, _ in want} ^ {n for n, _ in got}) or [
                        n for (n, t), (_, t2) in zip(got, want) if t != t2
                    ]
                    raise HFMixtureError(
                        f"{where}: its fields differ from the corpus' other files "
                        f"(field(s) {', '.join(map(repr, diff)) or 'order'})."
                    )
            self._meta[rel] = meta
        return self._meta[rel]

    def _check_cluster_stats(self, rel: str, md, where: str) -> bool:
        """``True`` when every row group's ``cluster_id`` statistics equal the folder's id."""
        k = self.cluster_of(rel)
        col = md.schema.to_arrow_schema().get_field_index("cluster_id")
        for g in range(md.num_row_groups):
            stats = md.row_group(g).column(col).statistics
            if stats is None or not stats.has_min_max:
                return False
            for value in (stats.min, stats.max):
                if int(value) != k:
                    raise HFMixtureError(
                        f"{where} row group {g}: field 'cluster_id' holds {int(value)}, but the "
                        f"file is in folder {cluster_config_name(k)}/.")
        return True

    def validate(self) -> None:
        """Read every footer: schema, row count, empty clusters, manifest counts."""
        for k, rels in self._files.items():
            rows = sum(self.file_meta(rel).num_rows for rel in rels)
            if rows == 0:
                raise HFMixtureError(
                    f"Cluster folder '{self.display(cluster_config_name(k))}' is empty: its parquet "
                    "files hold 0 documents."
                )
            entry = self._manifest_entry(k)
            if entry is not None and entry.get("docs") is not None and int(entry["docs"]) != rows:
                raise HFMixtureError(
                    f"{self.display(CLUSTERS_JSON)}: field 'clusters[id={k}].docs' is {entry['docs']}, "
                    f"but folder {cluster_config_name(k)}/ holds {rows} rows."
                )

    @property
    def schema(self) -> pa.Schema:
        """The fields every file of the corpus shares (read from the first file)."""
        first = self._files[self.cluster_ids[0]][0]
        return self.file_meta(first).schema

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names)

    @property
    def has_tokens(self) -> bool:
        return "tokens" in self.schema.names

    @property
    def tokenizer_info(self) -> dict[str, Any] | None:
        """``{name, sha256, vocab_size}`` of the tokenizer that made ``tokens`` (None if unknown)."""
        return (self.manifest or {}).get("tokenizer")

    # -- facts -------------------------------------------------------------------------
    def _manifest_entry(self, cluster_id: int) -> dict[str, Any] | None:
        for entry in (self.manifest or {}).get("clusters", []):
            if entry["id"] == cluster_id:
                return entry
        return None

    def num_docs(self, cluster_id: int) -> int:
        return sum(self.file_meta(rel).num_rows for rel in self.files(cluster_id))

    def num_tokens(self, cluster_id: int) -> int | None:
        """Sum of ``token_count`` over the cluster's files (None for a text-only corpus).

        Read from the files -- only the ``token_count`` column chunks, by range requests on
        the Hub -- and checked against ``clusters.json`` when it records a count.
        """
        self._require(cluster_id)
        if cluster_id not in self._tokens:
            if "token_count" not in self.schema.names:
                self._tokens[cluster_id] = None
                return None
            total = sum(self._token_count_sum(rel) for rel in self.files(cluster_id))
            entry = self._manifest_entry(cluster_id)
            if (entry is not None and entry.get("tokens") is not None and not self.selected
                    and int(entry["tokens"]) != total):
                raise HFMixtureError(
                    f"{self.display(CLUSTERS_JSON)}: field 'clusters[id={cluster_id}].tokens' is "
                    f"{entry['tokens']}, but the files of {cluster_config_name(cluster_id)}/ hold "
                    f"{total} tokens (their token_count column).")
            self._tokens[cluster_id] = total
        return self._tokens[cluster_id]

    def _token_count_sum(self, rel: str) -> int:
        self.file_meta(rel)
        try:
            with self._src.open(rel, FOOTER_BLOCK) as fh:
                pf = pq.ParquetFile(fh, metadata=self._meta[rel].metadata)
                total = 0
                # one row group's column at a time: a 9 GB ClimbLab file never sits in memory
                for group in range(pf.metadata.num_row_groups):
                    col = pf.read_row_group(group, columns=["token_count"]).column(0)
                    total += int(pc.sum(col).as_py() or 0)
        except (pa.ArrowException, OSError) as err:
            raise HFMixtureError(f"Parquet file '{self.display(rel)}' is corrupt or truncated "
                                 f"and cannot be read ({_short(err)}).") from None
        return total

    def description(self, cluster_id: int) -> str | None:
        entry = self._manifest_entry(cluster_id)
        return None if entry is None else entry.get("description")

    @property
    def clusters(self) -> list[dict[str, Any]]:
        """One entry per cluster: the manifest's when there is one, else derived from the files."""
        out = []
        for k in self.cluster_ids:
            entry = dict(self._manifest_entry(k) or {})
            entry.setdefault("id", k)
            entry.setdefault("config_name", cluster_config_name(k))
            entry.setdefault("description", None)
            # counted from the files (footers, token_count), never taken from clusters.json on
            # trust: validate() and num_tokens() say which one is wrong when they disagree
            entry["docs"] = self.num_docs(k)
            entry["tokens"] = self.num_tokens(k)
            out.append(entry)
        return out

    # -- data --------------------------------------------------------------------------
    def iter_file_batches(
        self, rel: str, *, columns: list[str] | None = None, batch_size: int = 1024,
        download: bool = False,
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        """``(first_row, batch)`` over one file; read errors name the file and row group.

        Remote files stream row group by row group (range requests for the asked columns
        only); ``download=True`` fetches the whole file into the Hugging Face cache first.
        """
        meta = self.file_meta(rel)
        where = self.display(rel)
        if columns is not None:
            missing = [c for c in columns if c not in self.schema.names]
            if missing:
                raise HFMixtureError(f"{where}: field '{missing[0]}' is missing.")
        check = not meta.cluster_checked and (columns is None or "cluster_id" in columns)
        k = self.cluster_of(rel)
        group = 0
        try:
            with (open(self.local_file(rel), "rb") if download
                  else self._src.open(rel, STREAM_BLOCK)) as fh:
                # buffered reads: a row group's column chunks are decoded page by page, not
                # fetched whole first
                pf = pq.ParquetFile(fh, buffer_size=STREAM_BLOCK)
                start = 0
                for group in range(pf.metadata.num_row_groups):
                    for batch in pf.iter_batches(batch_size=batch_size, columns=columns,
                                                 row_groups=[group]):
                        if check:
                            ids = batch.column("cluster_id").to_numpy(zero_copy_only=False)
                            bad = np.flatnonzero(ids != k)
                            if bad.size:
                                raise HFMixtureError(
                                    f"{where} row group {group}, row {start + int(bad[0])}: field "
                                    f"'cluster_id' holds {int(ids[bad[0]])}, but the file is in "
                                    f"folder {cluster_config_name(k)}/.")
                        yield start, batch
                        start += batch.num_rows
        except (pa.ArrowException, OSError) as err:
            raise HFMixtureError(
                f"Parquet file '{where}' row group {group} is corrupt or truncated and cannot be "
                f"read ({_short(err)})."
            ) from None

    def iter_batches(
        self, cluster_id: int, *, columns: list[str] | None = None, batch_size: int = 1024
    ) -> Iterator[tuple[str, int, pa.RecordBatch]]:
        """``(file, first_row_in_file, batch)`` over every file of a cluster, in order."""
        for rel in self.files(cluster_id):
            for start, batch in self.iter_file_batches(rel, columns=columns, batch_size=batch_size):
                yield rel, start, batch

    def load(
        self,
        cluster_id: int | None = None,
        *,
        detokenize_with: Any = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> datasets.Dataset:
        """One cluster (or all) as a memory-mapped ``datasets.Dataset`` via :class:`ClusteredCorpusBuilder`."""
        name = "default" if cluster_id is None else cluster_config_name(cluster_id)
        if cluster_id is not None:
            self._require(cluster_id)
        builder = ClusteredCorpusBuilder(
            self,
            name,
            detokenize_with=detokenize_with,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
        builder.download_and_prepare()
        return builder.as_dataset(split="train")

    def __repr__(self) -> str:
        return f"ClusteredCorpus({self.path!r}, clusters={self.cluster_ids})"


# ----------------------------------------------------------------------------- datasets builder
@dataclass
class ClusteredCorpusConfig(datasets.BuilderConfig):
    """One cluster (``cluster_<k>``) or all of them (``default``)."""

    cluster_ids: tuple[int, ...] = ()


class ClusteredCorpusBuilder(datasets.ArrowBasedBuilder):
    """A ``datasets`` builder over a clustered corpus (ours or ClimbLab's, local or Hub).

    Dataset scripts are gone from ``datasets``; this is an importable builder class.
    Its configs are the corpus' clusters (``cluster_<k>``) plus ``default`` (all);
    ``detokenize_with`` (a tokenizer or its name/path) adds a ``text`` column decoded
    from ``tokens`` — e.g. GPT-2 for ClimbLab.

    >>> builder = ClusteredCorpusBuilder("nvidia/ClimbLab", "cluster_3",
    ...                                  detokenize_with="gpt2")          # doctest: +SKIP
    >>> builder.download_and_prepare()                                    # doctest: +SKIP
    >>> ds = builder.as_dataset(split="train")                            # doctest: +SKIP
    """

    BUILDER_CONFIG_CLASS = ClusteredCorpusConfig
    DEFAULT_CONFIG_NAME = "default"
    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIGS: ClassVar[list] = []  # per corpus: set on the instance in __init__

    def __init__(
        self,
        path: str | os.PathLike | ClusteredCorpus,
        config_name: str | None = None,
        *,
        revision: str | None = None,
        detokenize_with: Any = None,
        cache_dir: str | None = None,
        batch_size: int = 1024,
        **kwargs: Any,
    ):
        self.corpus = (
            path if isinstance(path, ClusteredCorpus) else ClusteredCorpus(path, revision=revision)
        )
        self.batch_size = int(batch_size)
        # datasets reads configs from the class; a corpus decides its own, so they live on the instance
        # (see the builder_configs property below).
        self.BUILDER_CONFIGS = [
            ClusteredCorpusConfig(
                name=cluster_config_name(k),
                version=self.VERSION,
                cluster_ids=(k,),
                description=self.corpus.description(k),
            )
            for k in self.corpus.cluster_ids
        ] + [
            ClusteredCorpusConfig(
                name="default",
                version=self.VERSION,
                cluster_ids=tuple(self.corpus.cluster_ids),
                description="all clusters",
            )
        ]
        config_name = config_name or self.DEFAULT_CONFIG_NAME
        if config_name not in self.builder_configs:
            raise HFMixtureError(
                f"Clustered corpus '{self.corpus.path}' has no config {config_name!r}; it has "
                f"{', '.join(self.builder_configs)}."
            )
        self._detokenizer = None
        # Content (sizes + mtimes, or the Hub commit) and where it lives: two corpora of the
        # same folder name never share a cache entry (see formats.hubstyle).
        where = self.corpus.repo_id or str(Path(self.corpus.path).resolve())
        cache_key = f"{self.corpus.fingerprint}|{where}"
        if detokenize_with is not None:
            if not self.corpus.has_tokens:
                raise HFMixtureError(
                    f"Clustered corpus '{self.corpus.path}' has no field 'tokens' to detokenize."
                )
            if "text" in self.corpus.column_names:
                raise HFMixtureError(
                    f"Clustered corpus '{self.corpus.path}' already has a field 'text'; "
                    "detokenize_with would replace it."
                )
            self._detokenizer = load_tokenizer(detokenize_with)
            cache_key += "-" + tokenizer_fingerprint(self._detokenizer)["sha256"][:16]
        name = (self.corpus.repo_id or Path(self.corpus.path).resolve().name).replace("/", "--")
        super().__init__(
            cache_dir=cache_dir,
            dataset_name=name,
            config_name=config_name,
            hash=hashlib.sha256(cache_key.encode()).hexdigest()[:16],
            **kwargs,
        )

    @property
    def builder_configs(self) -> dict[str, ClusteredCorpusConfig]:  # type: ignore[override]
        return {c.name: c for c in self.BUILDER_CONFIGS}

    def _features(self) -> datasets.Features:
        features = datasets.Features.from_arrow_schema(self.corpus.schema)
        if self._detokenizer is not None:
            features["text"] = datasets.Value("string")
        return features

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=f"Clustered corpus {self.corpus.path}", features=self._features()
        )

    def _split_generators(self, dl_manager):
        files = [rel for k in self.config.cluster_ids for rel in self.corpus.files(k)]
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"files": files})]

    def _generate_shards(self, files):
        yield from files

    def _generate_tables(self, files):
        from datasets.builder import Key
        from datasets.table import table_cast

        schema = self._features().arrow_schema
        for file_idx, rel in enumerate(files):
            batches = self.corpus.iter_file_batches(rel, batch_size=self.batch_size)
            for batch_idx, (_, batch) in enumerate(batches):
                table = pa.Table.from_batches([batch])
                if self._detokenizer is not None:
                    ids = table.column("tokens").to_pylist()
                    text = self._detokenizer.batch_decode(ids, skip_special_tokens=False)
                    table = table.append_column("text", pa.array(text, type=pa.string()))
                yield Key(file_idx, batch_idx), table_cast(table, schema)
