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


class TokenStoreWriter:
    """Write a token store atomically.

    Documents are appended per ``(component, split)``; :meth:`close` writes the
    offsets, the per-document metadata and the manifest, then renames the
    temporary folder to ``path``.  Leaving the ``with`` block by an exception
    removes the temporary folder and leaves ``path`` untouched.
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
        self._files: dict[tuple[str, str], Any] = {}
        self._offsets: dict[tuple[str, str], list[int]] = {}
        self._meta: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._max_id: dict[tuple[str, str], int] = {}  # recorded: TokenStore checks it on open
        self._info: dict[str, dict[str, Any]] = {}
        self._closed = False

    # -- writing -----------------------------------------------------------------
    def _open(self, component: str, split: str):
        key = (component, split)
        if key not in self._files:
            if split not in SPLITS:
                raise HFMixtureError(f"split must be one of {SPLITS}, got {split!r}.")
            _check_component_name(component)
            (self._tmp / component).mkdir(exist_ok=True)
            self._files[key] = open(self._tmp / component / f"{split}.bin", "wb")
            self._offsets[key] = [0]
            self._meta[key] = []
            self._info.setdefault(component, {})
        return key

    def add(self, component: str, split: str, tokens: Sequence[int] | np.ndarray,
            metadata: dict[str, Any] | None = None, *, where: str | None = None) -> None:
        """Append one document.  ``where`` names it in error messages (file, row)."""
        key = self._open(component, split)
        arr = np.asarray(tokens)
        if arr.ndim != 1:
            raise HFMixtureError(f"{where or component}: tokens must be a flat list of ints.")
        if arr.size:
            if not np.issubdtype(arr.dtype, np.integer):
                raise HFMixtureError(
                    f"{where or component}: field 'tokens' holds non-integer values ({arr.dtype})."
                )
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi >= self.vocab_size:
                bad = lo if lo < 0 else hi
                raise HFMixtureError(
                    f"{where or component}: field 'tokens' holds id {bad}, outside the "
                    f"tokenizer's vocabulary of size {self.vocab_size}."
                )
            self._max_id[key] = max(hi, self._max_id.get(key, 0))
        self._files[key].write(arr.astype(self.dtype, copy=False).tobytes())
        self._offsets[key].append(self._offsets[key][-1] + int(arr.size))
        self._meta[key].append(dict(metadata or {}))

    def set_info(self, component: str, **info: Any) -> None:
        """Attach JSON-able facts to a component (cluster_id, description, ...)."""
        _check_component_name(component)
        self._info.setdefault(component, {}).update(info)

    # -- finishing -----------------------------------------------------------------
    def close(self) -> Path:
        if self._closed:
            return self.path
        import pyarrow as pa
        import pyarrow.parquet as pq

        components: dict[str, Any] = {}
        for component in sorted(self._info):
            entry: dict[str, Any] = dict(self._info[component])
            for split in SPLITS:
                key = (component, split)
                if key not in self._files:  # an absent split is written empty
                    self._open(component, split)
                self._files[key].close()
                offsets = np.asarray(self._offsets[key], dtype=np.int64)
                offsets.tofile(self._tmp / component / f"{split}.idx")
                rows = self._meta[key]
                # every field any document has (from_pylist would keep the first row's only)
                names = list(dict.fromkeys(k for r in rows for k in r))
                table = pa.table({n: [r.get(n) for r in rows] for n in names}) if names else \
                    pa.table({"doc": pa.array(np.arange(len(rows)), type=pa.int64())})
                pq.write_table(table, self._tmp / component / f"{split}.meta.parquet")
                entry[split] = {"docs": len(rows), "tokens": int(offsets[-1]),
                                "max_id": self._max_id.get(key, 0)}
            if entry["train"]["docs"] == 0:
                self.abort()
                raise HFMixtureError(
                    f"Component '{component}' has no training documents; a token store "
                    "cannot hold an empty component."
                )
            components[component] = entry
        if not components:
            self.abort()
            raise HFMixtureError("The token store would be empty: no documents were added.")
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

    def abort(self) -> None:
        for fh in self._files.values():
            fh.close()
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
        # Cheap on open (the offsets are 8 bytes per document, read through a memory map):
        # they start at 0, never decrease and end exactly at the last token.
        offsets = np.memmap(idx_path, dtype="<i8", mode="r")
        if offsets[0] != 0 or offsets[-1] != counts["tokens"]:
            raise HFMixtureError(
                f"Token store file '{idx_path}': the offsets run from {int(offsets[0])} to "
                f"{int(offsets[-1])}, but '{bin_path.name}' holds {counts['tokens']} tokens: the "
                "store is corrupt.")
        if len(offsets) > 1 and (np.diff(offsets) < 0).any():
            bad = int(np.flatnonzero(np.diff(offsets) < 0)[0])
            raise HFMixtureError(
                f"Token store file '{idx_path}': offset {bad + 1} is smaller than offset {bad} "
                "(offsets must not decrease): the store is corrupt.")
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
