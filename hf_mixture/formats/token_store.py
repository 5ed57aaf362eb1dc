"""The token store: the only thing the training hot path reads.

Layout of a store folder::

    STORE/
      manifest.json                 format, version, dtype, tokenizer, per-component counts
      <component>/train.bin         all training documents' token ids, concatenated (no EOS)
      <component>/train.idx         int64 document offsets into train.bin, length docs + 1
      <component>/train.meta.parquet  one row per document: its metadata (cluster_id, ...)
      <component>/validation.*      the same for the held-out slice (never trained on)

Token ids are stored little-endian as ``uint16`` when the vocabulary fits, else
``uint32``.  Documents are stored *without* an EOS token: the manifest records
``eos_token_id`` and the sampler inserts it between documents when it packs
sequences, so the store's token counts equal the corpus' ``token_count`` sums.

A store is written once, into a temporary folder that is renamed into place
when complete (:class:`TokenStoreWriter`), and read through memory maps
(:class:`TokenStore`).

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "store")
>>> with TokenStoreWriter(path, vocab_size=100, eos_token_id=0, tokenizer_name="toy") as w:
...     w.add("cluster_0", "train", [5, 6, 7], {"cluster_id": 0})
>>> TokenStore(path).num_tokens("cluster_0")
3
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .._io import short_hash, tmp_sibling
from ..errors import HFMixtureError

FORMAT = "hf_mixture.token_store"
VERSION = 1
SPLITS = ("train", "validation")
MANIFEST = "manifest.json"
# Tokens read at each end of every file when a store opens (2 x 128 KB of uint16).
_ID_PROBE = 1 << 16


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id of a ``vocab_size`` vocabulary."""
    if vocab_size <= 0:
        raise HFMixtureError(f"vocab_size must be positive, got {vocab_size}.")
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


# Metadata rows of one (component, split) held in memory before they go to disk as one
# Arrow batch: memory stays a few MB per split however many documents a component has.
META_CHUNK = 8192
# Offsets are buffered this many at a time (8 bytes each) before they are appended to the .idx.
_OFFSETS_CHUNK = 65536
# The merged metadata file's row groups: pyarrow's default for ``pq.write_table`` of a whole
# table, so a store written in chunks is byte-identical to one written from a single table.
META_ROW_GROUP = 1024 * 1024
# Offsets checked this many at a time when a store is opened.
_CHECK_CHUNK = 1 << 22


class _SplitWriter:
    """One ``(component, split)``: token ids, offsets and metadata, streamed to disk.

    Tokens append to ``<split>.bin`` and offsets to ``<split>.idx`` as documents arrive.
    Metadata rows are buffered per column (:data:`META_CHUNK` at a time), converted to Arrow
    exactly as ``pa.Table.from_pylist`` would and spilled to Arrow IPC files beside them;
    :meth:`finish` merges the spills into ``<split>.meta.parquet``.  As with ``from_pylist``,
    the columns are every metadata key any document has, in order of first appearance (a
    missing key is null); when no document has any, the file holds a ``doc`` index column.
    """

    def __init__(self, folder: Path, split: str, dtype: np.dtype, where: str):
        self.folder, self.split, self.dtype, self.where = folder, split, dtype, where
        self.bin = open(folder / f"{split}.bin", "wb")
        self.idx = open(folder / f"{split}.idx", "wb")
        self.end = 0  # tokens written
        self.docs = 0
        self.max_id = 0  # recorded in the manifest: TokenStore checks it against the vocabulary
        self._offsets: list[int] = [0]
        self.columns: list[str] | None = None  # fixed by the first document
        self._buffer: dict[str, list] = {}
        self._buffered = 0
        self._spill_dir = folder / f".{split}.meta.spill"
        self._spills: list[Path] = []
        self._ipc = None
        self._ipc_schema = None

    # -- appending ---------------------------------------------------------------------
    def _fix_columns(self, names: Iterable[str]) -> None:
        """The columns are every field any document has, in order of first appearance; a
        field new at this document is null for the documents before it."""
        if self.columns is None:
            self.columns = list(names)
            self._buffer = {c: [] for c in self.columns}
            return
        for name in names:
            if name not in self._buffer:
                self.columns.append(name)
                self._buffer[name] = [None] * self._buffered

    def add(self, arr: np.ndarray, metadata: dict[str, Any] | None) -> None:
        self.bin.write(arr.astype(self.dtype, copy=False).tobytes())
        self.end += int(arr.size)
        self._offsets.append(self.end)
        if len(self._offsets) >= _OFFSETS_CHUNK:
            self._flush_offsets()
        metadata = metadata or {}
        self._fix_columns(metadata)
        for c in self.columns:
            self._buffer[c].append(metadata.get(c))
        self._count(1)

    def add_batch(self, values: np.ndarray, lengths: np.ndarray,
                  metadata: dict[str, list] | None) -> None:
        self.bin.write(values.astype(self.dtype, copy=False).tobytes())
        self._flush_offsets()
        ends = self.end + np.cumsum(lengths, dtype=np.int64)
        self.idx.write(ends.tobytes())
        self.end = int(ends[-1]) if len(ends) else self.end
        metadata = metadata or {}
        self._fix_columns(metadata)
        n = len(lengths)
        for c in self.columns:
            column = metadata.get(c)
            self._buffer[c].extend([None] * n if column is None else column)
        self._count(n)

    def _count(self, n: int) -> None:
        self.docs += n
        self._buffered += n
        if self._buffered >= META_CHUNK:
            self._spill()

    def _flush_offsets(self) -> None:
        if self._offsets:
            self.idx.write(np.asarray(self._offsets, dtype=np.int64).tobytes())
            self._offsets = []

    def _spill(self) -> None:
        """The buffered metadata rows -> one Arrow batch in the current spill file."""
        import pyarrow as pa

        if not self.columns or not self._buffered:
            self._buffered = 0
            return
        arrays = []
        for c in self.columns:
            try:
                arrays.append(pa.array(self._buffer[c]))
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as err:
                raise HFMixtureError(
                    f"{self.where} ({self.split}): metadata field '{c}' holds values of mixed or "
                    f"unsupported types near document {self.docs - self._buffered} ({err})."
                ) from None
            self._buffer[c] = []
        batch = pa.RecordBatch.from_arrays(arrays, names=self.columns)
        if self._ipc is None or not batch.schema.equals(self._ipc_schema):
            self._close_ipc()  # a type seen for the first time (null, then int): a new file
            self._spill_dir.mkdir(exist_ok=True)
            path = self._spill_dir / f"{len(self._spills):05d}.arrow"
            self._spills.append(path)
            self._ipc_schema = batch.schema
            self._ipc = pa.ipc.new_file(str(path), batch.schema)
        self._ipc.write_batch(batch)
        self._buffered = 0

    def _close_ipc(self) -> None:
        if self._ipc is not None:
            self._ipc.close()
            self._ipc = None

    # -- finishing ---------------------------------------------------------------------
    def close_files(self) -> None:
        for fh in (self.bin, self.idx):
            if not fh.closed:
                fh.close()
        self._close_ipc()

    def finish(self) -> dict[str, int]:
        """Close the arrays, merge the metadata spills; returns the split's counts."""
        self.bin.close()
        self._flush_offsets()
        self.idx.close()
        self._spill()
        self._close_ipc()
        path = self.folder / f"{self.split}.meta.parquet"
        if self.columns and self._spills:
            self._merge_spills(path)
        else:
            self._write_doc_index(path)
        shutil.rmtree(self._spill_dir, ignore_errors=True)
        return {"docs": self.docs, "tokens": self.end, "max_id": self.max_id}

    def _write_doc_index(self, path: Path) -> None:
        """No metadata: a ``doc`` column 0..n-1, written one row group at a time."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        def piece(lo: int, hi: int):
            return pa.table({"doc": pa.array(np.arange(lo, hi), type=pa.int64())})

        if self.docs == 0:
            pq.write_table(piece(0, 0), path)
            return
        with pq.ParquetWriter(path, piece(0, 0).schema) as out:
            for lo in range(0, self.docs, META_ROW_GROUP):
                out.write_table(piece(lo, min(lo + META_ROW_GROUP, self.docs)),
                                row_group_size=META_ROW_GROUP)

    def _merge_spills(self, path: Path) -> None:
        """The spilled batches, in order, as full row groups of one parquet file.

        Each chunk's types were inferred from its own values; they are unified the way
        inference over all values would have (null -> the column's type, int -> double
        beside floats), so the result equals one ``from_pylist`` over every row.
        """
        import pyarrow as pa

        # read, not memory-mapped: mapped pages would count in the resident set
        files = [pa.OSFile(str(p)) for p in self._spills]
        try:
            self._write_merged(path, [pa.ipc.open_file(f) for f in files])
        finally:
            for f in files:
                f.close()

    def _write_merged(self, path: Path, readers: list) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schemas = [r.schema for r in readers]
        try:
            schema = pa.unify_schemas(schemas, promote_options="permissive") \
                if any(not s.equals(schemas[0]) for s in schemas) else schemas[0]
        except (pa.ArrowException, TypeError) as err:
            raise HFMixtureError(
                f"{self.where} ({self.split}): a metadata field holds values of incompatible "
                f"types across documents ({err}).") from None

        def batches():
            for r in readers:
                for i in range(r.num_record_batches):
                    b = r.get_batch(i)
                    if b.schema.equals(schema):
                        yield b
                        continue
                    # a field that appeared later is null in the batches spilled before it
                    yield pa.RecordBatch.from_arrays(
                        [b.column(f.name).cast(f.type, safe=False) if f.name in b.schema.names
                         else pa.nulls(b.num_rows, f.type) for f in schema], schema=schema)

        pending: list = []
        rows = 0
        with pq.ParquetWriter(path, schema) as out:
            for b in batches():
                pending.append(b)
                rows += b.num_rows
                while rows >= META_ROW_GROUP:
                    table = pa.Table.from_batches(pending, schema).combine_chunks()
                    out.write_table(table.slice(0, META_ROW_GROUP), row_group_size=META_ROW_GROUP)
                    rest = table.slice(META_ROW_GROUP)
                    pending, rows = rest.to_batches(), rest.num_rows
            if rows:
                table = pa.Table.from_batches(pending, schema).combine_chunks()
                out.write_table(table, row_group_size=META_ROW_GROUP)


class TokenStoreWriter:
    """Write a token store atomically, in memory independent of the number of documents.

    Documents are appended per ``(component, split)`` with :meth:`add` (one) or
    :meth:`add_batch` (many, as flat ids and lengths).  Token ids and offsets go to disk
    as they arrive; per-document metadata goes in chunks of :data:`META_CHUNK` rows to
    spill files that :meth:`close` merges into each split's metadata file before it writes
    the manifest and renames the temporary folder to ``path``.  Leaving the ``with`` block
    by an exception removes the temporary folder and leaves ``path`` untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        vocab_size: int,
        eos_token_id: int | None,
        tokenizer_name: str,
        tokenizer_hash: str | None = None,
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
    ):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise HFMixtureError(
                f"Token store output '{self.path}' already exists; pass overwrite=True "
                "(CLI: --overwrite) to replace it."
            )
        if eos_token_id is not None and not 0 <= eos_token_id < vocab_size:
            raise HFMixtureError(
                f"eos_token_id {eos_token_id} is outside the vocabulary of size {vocab_size}."
            )
        self.vocab_size = int(vocab_size)
        self.dtype = dtype_for_vocab(self.vocab_size)
        self.eos_token_id = eos_token_id
        self.tokenizer = {"name": tokenizer_name, "sha256": tokenizer_hash,
                          "vocab_size": self.vocab_size, "eos_token_id": eos_token_id}
        self.extra = dict(extra or {})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = tmp_sibling(self.path)
        self._tmp.mkdir()
        self._splits: dict[tuple[str, str], _SplitWriter] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._closed = False

    # -- writing -----------------------------------------------------------------
    def _open(self, component: str, split: str) -> _SplitWriter:
        key = (component, split)
        if key not in self._splits:
            if split not in SPLITS:
                raise HFMixtureError(f"split must be one of {SPLITS}, got {split!r}.")
            _check_component_name(component)
            (self._tmp / component).mkdir(exist_ok=True)
            self._splits[key] = _SplitWriter(self._tmp / component, split, self.dtype,
                                             f"component '{component}'")
            self._info.setdefault(component, {})
        return self._splits[key]

    def _check_ids(self, arr: np.ndarray, where) -> int:
        """Integer ids inside the vocabulary; ``where(i)`` names the element's document.
        Returns the largest id (0 for none)."""
        if not arr.size:
            return 0
        if not np.issubdtype(arr.dtype, np.integer):
            raise HFMixtureError(
                f"{where(0)}: field 'tokens' holds non-integer values ({arr.dtype}).")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            pos = int(np.argmax(arr == bad))
            raise HFMixtureError(
                f"{where(pos)}: field 'tokens' holds id {bad}, outside the "
                f"tokenizer's vocabulary of size {self.vocab_size}."
            )
        return hi

    def add(self, component: str, split: str, tokens: Sequence[int] | np.ndarray,
            metadata: dict[str, Any] | None = None, *, where: str | None = None) -> None:
        """Append one document.  ``where`` names it in error messages (file, row)."""
        writer = self._open(component, split)
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise HFMixtureError(f"{where or component}: tokens must be a flat list of ints.")
        writer.max_id = max(writer.max_id, self._check_ids(arr, lambda _: where or component))
        writer.add(arr, metadata)

    def add_batch(self, component: str, split: str, values: np.ndarray, lengths: np.ndarray,
                  metadata: dict[str, list] | None = None, *, where: str | None = None,
                  rows: Sequence[int] | None = None) -> None:
        """Append ``len(lengths)`` documents: document ``i`` is the next ``lengths[i]`` ids of
        ``values``; ``metadata`` maps a column to one value per document.  The store is the
        one :meth:`add` per document writes.  ``where`` and ``rows`` name the file and the
        documents' rows in error messages.

        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "store")
        >>> with TokenStoreWriter(path, vocab_size=100, eos_token_id=0, tokenizer_name="t") as w:
        ...     w.add_batch("c", "train", np.array([5, 6, 7]), np.array([2, 1]), {"id": [3, 4]})
        >>> TokenStore(path).document("c", 1).tolist()
        [7]
        """
        writer = self._open(component, split)
        values = np.asarray(values)
        lengths = np.asarray(lengths, dtype=np.int64)
        if values.ndim != 1 or lengths.ndim != 1 or (lengths < 0).any() \
                or int(lengths.sum()) != values.size:
            raise HFMixtureError(f"{where or component}: add_batch needs flat ids and one "
                                 "non-negative length per document that sum to their number.")
        for c, column in (metadata or {}).items():
            if len(column) != len(lengths):
                raise HFMixtureError(f"{where or component}: metadata field '{c}' has "
                                     f"{len(column)} values for {len(lengths)} documents.")

        def where_of(pos: int) -> str:
            doc = int(np.searchsorted(np.cumsum(lengths), pos, side="right"))
            row = rows[doc] if rows is not None else writer.docs + doc
            return f"{where or component} row {row}"

        writer.max_id = max(writer.max_id, self._check_ids(values, where_of))
        writer.add_batch(values, lengths, metadata)

    def set_info(self, component: str, **info: Any) -> None:
        """Attach JSON-able facts to a component (cluster_id, description, ...)."""
        _check_component_name(component)
        self._info.setdefault(component, {}).update(info)

    # -- finishing -----------------------------------------------------------------
    def close(self) -> Path:
        if self._closed:
            return self.path
        try:
            components = self._finish_components()
        except BaseException:
            self.abort()
            raise
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": self.dtype.str.lstrip("<"),
            "eos": "inserted between documents by the sampler; not stored",
            "tokenizer": self.tokenizer,
            "components": components,
            **self.extra,
        }
        (self._tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if self.path.exists():
            old = tmp_sibling(self.path)
            os.replace(self.path, old)
            os.replace(self._tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self._tmp, self.path)
        self._closed = True
        return self.path

    def _finish_components(self) -> dict[str, Any]:
        components: dict[str, Any] = {}
        for component in sorted(self._info):
            entry: dict[str, Any] = dict(self._info[component])
            for split in SPLITS:
                # an absent split is written empty
                entry[split] = self._open(component, split).finish()
            if entry["train"]["docs"] == 0:
                raise HFMixtureError(
                    f"Component '{component}' has no training documents; a token store "
                    "cannot hold an empty component."
                )
            components[component] = entry
        if not components:
            raise HFMixtureError("The token store would be empty: no documents were added.")
        return components

    def abort(self) -> None:
        for writer in self._splits.values():
            writer.close_files()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> "TokenStoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_component_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise HFMixtureError(f"Component name {name!r} is not a valid folder name.")


class TokenStore:
    """Read a token store through memory maps.

    >>> store = TokenStore("path/to/store")            # doctest: +SKIP
    >>> store.components                               # doctest: +SKIP
    ['cluster_0', 'cluster_1']
    >>> store.document("cluster_0", 0)                 # doctest: +SKIP
    memmap([ 17, 803, ...], dtype=uint16)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.exists():
            raise HFMixtureError(f"Token store '{self.path}' does not exist.")
        if not manifest_path.is_file():
            raise HFMixtureError(
                f"'{self.path}' is not a token store: it has no {MANIFEST} "
                "(make one with `hf-mixture tokenize`)."
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HFMixtureError(f"{manifest_path} is not valid JSON ({err}).") from None
        if not isinstance(self.manifest, dict):
            raise HFMixtureError(f"{manifest_path} must hold a JSON object, not "
                                 f"{type(self.manifest).__name__}.")
        if self.manifest.get("format") != FORMAT:
            raise HFMixtureError(
                f"{manifest_path}: field 'format' is {self.manifest.get('format')!r}, "
                f"expected {FORMAT!r}."
            )
        if self.manifest.get("version") != VERSION:
            raise HFMixtureError(
                f"{manifest_path}: field 'version' is {self.manifest.get('version')!r}; "
                f"this hf_mixture reads version {VERSION}."
            )
        where = str(manifest_path)
        dtype = self.manifest.get("dtype")
        if dtype not in ("u2", "u4"):
            raise HFMixtureError(f"{where}: field 'dtype' is {dtype!r}, expected 'u2' or 'u4'.")
        self.dtype = np.dtype("<" + dtype)
        tok = self.manifest.get("tokenizer")
        if not isinstance(tok, dict) or not _is_int(tok.get("vocab_size")) \
                or tok["vocab_size"] < 2:
            raise HFMixtureError(f"{where}: field 'tokenizer.vocab_size' must be an integer >= 2.")
        self.vocab_size: int = tok["vocab_size"]
        if self.vocab_size > np.iinfo(self.dtype).max + 1:
            raise HFMixtureError(f"{where}: field 'tokenizer.vocab_size' is {self.vocab_size}, "
                                 f"more ids than dtype {dtype} holds.")
        self.eos_token_id: int | None = tok.get("eos_token_id")
        if self.eos_token_id is not None and not (
                _is_int(self.eos_token_id) and 0 <= self.eos_token_id < self.vocab_size):
            raise HFMixtureError(f"{where}: field 'tokenizer.eos_token_id' is "
                                 f"{self.eos_token_id!r}, outside the vocabulary of size "
                                 f"{self.vocab_size}.")
        for key in ("name", "sha256"):
            if tok.get(key) is not None and not isinstance(tok[key], str):
                raise HFMixtureError(f"{where}: field 'tokenizer.{key}' is {tok[key]!r}, not a "
                                     "string.")
        self.tokenizer_name: str = tok.get("name")
        self.tokenizer_hash: str | None = tok.get("sha256")
        self._cache: dict[tuple[str, str, str], Any] = {}
        components = self.manifest.get("components")
        if not isinstance(components, dict) or not components:
            raise HFMixtureError(f"{where}: field 'components' must be a non-empty mapping of "
                                 "component names to their counts.")
        for component, entry in components.items():
            if not isinstance(entry, dict):
                raise HFMixtureError(f"{where}: field 'components.{component}' is {entry!r}, not "
                                     "a mapping of splits to counts.")
            try:
                _check_component_name(component)
            except HFMixtureError as err:
                raise HFMixtureError(f"{where}: field 'components': {err}") from None
            for split in SPLITS:
                counts = entry.get(split) if isinstance(entry, dict) else None
                if not isinstance(counts, dict) or not all(
                        _is_int(counts.get(k)) and counts[k] >= 0 for k in ("docs", "tokens")):
                    raise HFMixtureError(f"{where}: field 'components.{component}.{split}' must "
                                         "hold integer 'docs' and 'tokens'.")
                self._check_files(component, split, counts)
                self._check_ids(component, split, counts, where)

    def _check_ids(self, component: str, split: str, counts: dict[str, Any], where: str) -> None:
        """Refuse on open a vocabulary smaller than the ids held (training would fail deep in
        the embedding): the writer's recorded largest id, and the first and last
        ``_ID_PROBE`` tokens of the file (a bounded read; ``validate --deep`` reads them all)."""
        max_id = counts.get("max_id")
        if max_id is not None:
            if not _is_int(max_id) or max_id < 0:
                raise HFMixtureError(f"{where}: field 'components.{component}.{split}.max_id' "
                                     f"must be an integer >= 0, got {max_id!r}.")
            if max_id >= self.vocab_size:
                raise HFMixtureError(
                    f"{where}: field 'components.{component}.{split}.max_id' is {max_id}, "
                    f"outside the vocabulary of size {self.vocab_size} (field "
                    "'tokenizer.vocab_size'): the ids were not made by this vocabulary.")
        n = counts["tokens"]
        if not n:
            return
        tokens = np.memmap(self.path / component / f"{split}.bin", dtype=self.dtype, mode="r")
        for lo in sorted({0, max(0, n - _ID_PROBE)}):
            chunk = np.asarray(tokens[lo: lo + _ID_PROBE])
            if chunk.size and int(chunk.max()) >= self.vocab_size:
                pos = lo + int(np.argmax(chunk >= self.vocab_size))
                raise HFMixtureError(
                    f"Token store '{self.path}' component '{component}' ({split}): token {pos} "
                    f"is id {int(chunk[pos - lo])}, outside the vocabulary of size "
                    f"{self.vocab_size} (field 'tokenizer.vocab_size' of {MANIFEST}).")

    def _check_files(self, component: str, split: str, counts: dict[str, int]) -> None:
        base = self.path / component
        bin_path, idx_path = base / f"{split}.bin", base / f"{split}.idx"
        for f in (bin_path, idx_path, base / f"{split}.meta.parquet"):
            if not f.is_file():
                raise HFMixtureError(f"Token store file '{f}' is missing.")
        want = counts["tokens"] * self.dtype.itemsize
        if bin_path.stat().st_size != want:
            raise HFMixtureError(
                f"Token store file '{bin_path}' has {bin_path.stat().st_size} bytes; the "
                f"manifest says {counts['tokens']} tokens ({want} bytes): the store is corrupt."
            )
        if idx_path.stat().st_size != (counts["docs"] + 1) * 8:
            raise HFMixtureError(
                f"Token store file '{idx_path}' does not hold {counts['docs'] + 1} offsets: "
                "the store is corrupt."
            )
        # Cheap on open (the offsets are 8 bytes per document, read a chunk at a time, so a
        # component of 50M documents is not held -- nor left mapped -- to check it): they start
        # at 0, never decrease and end exactly at the last token.
        n = counts["docs"] + 1
        first = np.fromfile(idx_path, dtype="<i8", count=1)[0]
        last = np.fromfile(idx_path, dtype="<i8", count=1, offset=(n - 1) * 8)[0]
        if first != 0 or last != counts["tokens"]:
            raise HFMixtureError(
                f"Token store file '{idx_path}': the offsets run from {int(first)} to "
                f"{int(last)}, but '{bin_path.name}' holds {counts['tokens']} tokens: the "
                "store is corrupt.")
        for lo in range(0, n - 1, _CHECK_CHUNK):
            chunk = np.fromfile(idx_path, dtype="<i8", count=min(_CHECK_CHUNK + 1, n - lo),
                                offset=lo * 8)
            step = np.diff(chunk)
            if (step < 0).any():
                bad = lo + int(np.flatnonzero(step < 0)[0])
                raise HFMixtureError(
                    f"Token store file '{idx_path}': offset {bad + 1} is smaller than offset "
                    f"{bad} (offsets must not decrease): the store is corrupt.")
        import pyarrow.parquet as pq

        meta_path = base / f"{split}.meta.parquet"
        try:
            rows = pq.ParquetFile(meta_path).metadata.num_rows
        except Exception as err:  # noqa: BLE001 - unreadable metadata is corruption
            raise HFMixtureError(f"Token store file '{meta_path}' is unreadable ({err}).") \
                from None
        if rows != counts["docs"]:
            raise HFMixtureError(
                f"Token store file '{meta_path}' has {rows} rows, but the store holds "
                f"{counts['docs']} {split} documents of component '{component}': the store is "
                "corrupt.")

    def validate_deep(self) -> None:
        """Read every token: each id must be inside the vocabulary (``validate --deep``)."""
        for component in self.components:
            for split in SPLITS:
                tokens = self.tokens(component, split)
                for lo in range(0, len(tokens), 1 << 24):
                    chunk = tokens[lo: lo + (1 << 24)]
                    if chunk.size and int(chunk.max()) >= self.vocab_size:
                        pos = lo + int(np.argmax(chunk >= self.vocab_size))
                        raise HFMixtureError(
                            f"Token store '{self.path}' component '{component}' ({split}): token "
                            f"{pos} is id {int(tokens[pos])}, outside the vocabulary of size "
                            f"{self.vocab_size}.")

    # -- facts -------------------------------------------------------------------
    @property
    def components(self) -> list[str]:
        return list(self.manifest["components"])

    def info(self, component: str) -> dict[str, Any]:
        self._require(component)
        return self.manifest["components"][component]

    def _split(self, component: str, split: str) -> dict[str, int]:
        if split not in SPLITS:
            raise HFMixtureError(f"A token store has the splits {', '.join(SPLITS)}, not "
                                 f"{split!r}.")
        return self.info(component)[split]

    def num_docs(self, component: str, split: str = "train") -> int:
        return int(self._split(component, split)["docs"])

    def num_tokens(self, component: str, split: str = "train") -> int:
        return int(self._split(component, split)["tokens"])

    @property
    def fingerprint(self) -> str:
        """A short hash of the manifest: changes whenever the store's content does."""
        return short_hash(self.manifest)

    # -- data --------------------------------------------------------------------
    def tokens(self, component: str, split: str = "train") -> np.ndarray:
        """All token ids of ``component``/``split``, flat, as a read-only memmap."""
        key = (component, split, "bin")
        if key not in self._cache:
            n = self.num_tokens(component, split)
            path = self.path / component / f"{split}.bin"
            self._cache[key] = (np.memmap(path, dtype=self.dtype, mode="r", shape=(n,))
                                if n else np.empty(0, dtype=self.dtype))
        return self._cache[key]

    def offsets(self, component: str, split: str = "train") -> np.ndarray:
        """int64 offsets of each document into :meth:`tokens`, length docs + 1."""
        key = (component, split, "idx")
        if key not in self._cache:
            path = self.path / component / f"{split}.idx"
            self._cache[key] = np.fromfile(path, dtype=np.int64)
        return self._cache[key]

    def metadata(self, component: str, split: str = "train"):
        """Per-document metadata as a ``pyarrow.Table`` (row i is document i)."""
        import pyarrow.parquet as pq

        key = (component, split, "meta")
        if key not in self._cache:
            self._require(component)
            self._cache[key] = pq.read_table(self.path / component / f"{split}.meta.parquet")
        return self._cache[key]

    def document(self, component: str, index: int, split: str = "train") -> np.ndarray:
        off = self.offsets(component, split)
        return self.tokens(component, split)[off[index]:off[index + 1]]

    def iter_documents(self, component: str, split: str = "train") -> Iterable[np.ndarray]:
        off, toks = self.offsets(component, split), self.tokens(component, split)
        for i in range(len(off) - 1):
            yield toks[off[i]:off[i + 1]]

    def _require(self, component: str) -> None:
        if component not in self.manifest["components"]:
            raise HFMixtureError(
                f"Token store '{self.path}' has no component {component!r}; it has "
                f"{', '.join(self.components)}."
            )

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r}, components={len(self.components)}, dtype={self.dtype})"
