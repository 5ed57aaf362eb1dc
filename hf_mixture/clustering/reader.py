"""Read any corpus as a stream of datatrove ``Document`` s, in shards, with bounded memory.

:func:`plan_input` turns what a user passes (``None`` for the playground, a parquet /
jsonl / csv / txt file or folder, a Hub-style folder with README ``configs:``, or a
Hub dataset id read through ``HfFileSystem``) into a list of files and *shards*: a
parquet file is cut into row ranges of at most ``shard_rows`` rows along its row groups
(read from the footers only); any other file is one shard.  Shards are listed in an
order of the files' *content* (:func:`content_id`), never of their names or of the order
they were given in, and tasks take them round-robin (``shards[rank::tasks]``): so the split
into tasks depends on the input's bytes alone -- not on how many workers run them, nor on
what the files are called.

:class:`CorpusReader` is the datatrove reader step: it reads one row batch at a time,
checks the text column, cuts documents longer than ``max_doc_chars`` into pieces (or
truncates them) *before* anything else sees them -- so one 100 MB document costs what a
few hundred normal ones do -- and carries every other input column as metadata.

>>> plan = plan_input(None, text_column="text", shard_rows=4000)   # doctest: +SKIP
>>> len(plan.shards), plan.files[0].format                         # doctest: +SKIP
(4, 'parquet')
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseReader

from .._checks import check_unique_columns
from .._io import short_hash
from ..errors import HFMixtureError
from ..executors import quiet_datatrove_console

quiet_datatrove_console()  # every worker that runs a reader imports this module

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv",
           ".txt": "text"}
BATCH_ROWS = 1000
LONG_DOCS = ("chunk", "truncate")
# content_id reads this many bytes at each end of a local file (a parquet footer: at the end)
CONTENT_ID_BYTES = 1 << 16
# Before the first stage, an input of at most this many bytes (local files) is read whole
# (every text checked, documents counted: a second or two against the minutes its
# embedding takes); a larger one has the first PREFLIGHT_ROWS rows of each file checked.
PREFLIGHT_FULL_BYTES = 64 << 20
PREFLIGHT_ROWS = 1000
PREFLIGHT_FILES = 16


@dataclass
class InputFile:
    path: str  # absolute local path or an fsspec URL (hf://datasets/...)
    format: str
    size: int
    version: str  # mtime_ns locally, the Hub blob id remotely: part of the input fingerprint
    num_rows: int | None = None  # parquet: from the footer


@dataclass
class InputPlan:
    """The input as files and shards ``(file index, first row, end row)``; JSON-able.

    ``files`` are in the order they were given (``_row``, the row in the whole input,
    counts along it); ``shards`` are in content order (:func:`content_id`), the order the
    tasks take them in.
    """

    name: str
    files: list[InputFile]
    shards: list[tuple[int, int, int]]
    text_column: str
    schema_b64: str | None = None  # Arrow schema of the input (parquet), for stable outputs
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Content identity: every file's path, size and version (mtime / Hub blob id)."""
        return short_hash([[f.path, f.size, f.version, f.num_rows] for f in self.files])

    @property
    def schema(self):
        import pyarrow as pa

        if self.schema_b64 is None:
            return None
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.schema_b64)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputPlan:
        d = dict(d)
        d["files"] = [InputFile(**f) for f in d["files"]]
        d["shards"] = [tuple(s) for s in d["shards"]]
        return cls(**d)


def _open(path: str, mode: str = "rb"):
    if "://" in path:
        import fsspec

        return fsspec.open(path, mode).open()
    return open(path, mode)


def _local_file(path: Path) -> InputFile:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise HFMixtureError(
            f"INPUT '{path}' has extension '{path.suffix}', not one of "
            f"{', '.join(sorted(FORMATS))}.")
    st = path.stat()
    return InputFile(str(path.resolve()), fmt, st.st_size, str(st.st_mtime_ns))


def _resolve_files(given: Any, config_name: str | None, split: str) -> tuple[str, list[InputFile]]:
    from .. import playground

    if given is None:
        return "playground", [_local_file(playground.data_file())]
    if not isinstance(given, (str, os.PathLike)):
        raise HFMixtureError(
            f"INPUT must be a path or a Hub dataset id, got {type(given).__name__}.")
    text = str(given)
    path = Path(text).expanduser()
    if path.is_file():
        return path.stem, [_local_file(path)]
    if path.is_dir():
        from ..formats.hubstyle import config_data_files

        _, data_files = config_data_files(path, config_name)
        base = split.split("[")[0]
        if base not in data_files:
            raise HFMixtureError(
                f"INPUT '{text}' has no split '{base}'; it has {', '.join(data_files)}.")
        files = [_local_file(Path(p)) for p in data_files[base]]
        return path.name, files
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise HFMixtureError(f"INPUT '{text}' does not exist.")
    return text.split("/")[-1], _hub_files(text, config_name, split)


def _hub_files(repo_id: str, config_name: str | None, split: str) -> list[InputFile]:
    """The data files of a Hub dataset config, resolved through ``HfFileSystem`` (no download)."""
    import datasets
    from huggingface_hub import HfFileSystem

    try:
        builder = datasets.load_dataset_builder(repo_id, config_name)
    except Exception as err:  # noqa: BLE001 - offline, missing repo, bad config: the user's input
        first = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        raise HFMixtureError(f"INPUT '{repo_id}' could not be resolved on the Hub: {first}") \
            from None
    base = split.split("[")[0]
    files = (builder.config.data_files or {}).get(base)
    if not files:
        raise HFMixtureError(f"INPUT '{repo_id}' has no data files for split '{base}'.")
    fs = HfFileSystem()
    out = []
    for url in files:
        fmt = FORMATS.get(Path(str(url)).suffix.lower())
        if fmt is None:
            raise HFMixtureError(f"INPUT file '{url}' is not parquet, jsonl, csv or txt.")
        info = fs.info(str(url))
        out.append(InputFile(str(url), fmt, int(info.get("size") or 0),
                             str(info.get("blob_id") or info.get("last_commit") or "")))
    return out


def content_id(f: InputFile) -> str:
    """What orders the input's files for the tasks: a hash of a local file's size and its
    first and last ``CONTENT_ID_BYTES`` (a parquet file's footer -- every row group's sizes
    and statistics -- lies in the last), or a Hub file's size and blob id (a hash of all its
    bytes).  Two reads per file, whatever its size; a renamed or reordered file keeps its id.
    """
    if "://" in f.path:
        return hashlib.blake2b(f"{f.size}\0{f.version}".encode(), digest_size=16).hexdigest()
    h = hashlib.blake2b(str(f.size).encode() + b"\0", digest_size=16)
    with open(f.path, "rb") as fh:
        h.update(fh.read(CONTENT_ID_BYTES))
        if f.size > CONTENT_ID_BYTES:
            fh.seek(max(CONTENT_ID_BYTES, f.size - CONTENT_ID_BYTES))
            h.update(fh.read(CONTENT_ID_BYTES))
    return h.hexdigest()


def plan_input(given: Any, *, text_column: str = "text", config_name: str | None = None,
               split: str = "train", shard_rows: int = 4096) -> InputPlan:
    """Files and shards of the input; parquet footers are the only bytes read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if shard_rows < 1:
        raise HFMixtureError(f"shard_rows must be a positive integer, got {shard_rows}.")
    name, files = _resolve_files(given, config_name, split)
    if not files:
        raise HFMixtureError(f"INPUT '{given}' has no data files.")
    shards: list[tuple[int, int, int]] = []
    schema = None
    for i, f in enumerate(files):
        if f.size == 0:
            raise HFMixtureError(f"INPUT file '{f.path}' is empty: it has no documents.")
        if f.format != "parquet":
            shards.append((i, 0, -1))
            continue
        try:
            with _open(f.path) as fh:
                meta = pq.ParquetFile(fh)
                md = meta.metadata
                file_schema = meta.schema_arrow
        except Exception as err:  # noqa: BLE001 - a corrupt footer is the user's input
            raise HFMixtureError(f"INPUT file '{f.path}' is not readable parquet: "
                                 f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                                 ) from None
        check_unique_columns(file_schema.names, f"INPUT file '{f.path}'")
        if text_column not in file_schema.names:
            raise HFMixtureError(
                f"INPUT file '{f.path}' has no column '{text_column}'; its columns are "
                f"{', '.join(file_schema.names)} (choose one with --text-column).")
        t = file_schema.field(text_column).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise HFMixtureError(
                f"INPUT file '{f.path}' column '{text_column}' holds {t} values, not strings.")
        schema = schema or file_schema
        f.num_rows = md.num_rows
        row = 0
        for rg in range(md.num_row_groups):
            n = md.row_group(rg).num_rows
            for lo in range(0, n, shard_rows):
                shards.append((i, row + lo, row + min(n, lo + shard_rows)))
            row += n
    if not shards:
        raise HFMixtureError(f"INPUT '{given}' is empty: it has no documents to cluster.")
    # Content order, so that the tasks (and every file a task writes) are the same however
    # the files are named or listed; the file index breaks ties only between files whose
    # ids agree (the same size and the same bytes at both ends).
    ids = [content_id(f) for f in files]
    shards.sort(key=lambda s: (ids[s[0]], s[0], s[1]))
    schema_b64 = None
    if schema is not None:
        schema_b64 = base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode()
    return InputPlan(name, files, shards, text_column, schema_b64)


# ----------------------------------------------------------------------------- reading
def _rows(f: InputFile, lo: int, hi: int, text_column: str) -> Iterator[tuple[int, dict, str]]:
    """``(row, record, where)`` of rows ``lo:hi`` of a file (``hi=-1``: to the end)."""
    import pyarrow.parquet as pq

    if f.format == "parquet":
        with _open(f.path) as fh:
            pf = pq.ParquetFile(fh)
            row = 0
            for rg in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                if row + n <= lo or row >= hi:
                    row += n
                    continue
                where = f"INPUT file '{f.path}' row group {rg}"
                try:
                    for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[rg]):
                        for rec in batch.to_pylist():
                            if lo <= row < hi:
                                yield row, rec, where
                            row += 1
                except HFMixtureError:
                    raise
                except Exception as err:  # noqa: BLE001 - truncated / corrupt data pages
                    raise HFMixtureError(f"{where} could not be read: "
                                         f"{str(err).splitlines()[0]}") from None
        return
    where = f"INPUT file '{f.path}'"
    if f.format == "json":
        with _open(f.path) as fh:
            for row, raw in enumerate(fh):  # binary lines: one bad line is named, not the file
                try:
                    if not raw.strip():
                        continue
                    rec = json.loads(raw.decode("utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise HFMixtureError(f"{where} line {row + 1} is not valid UTF-8 JSON: "
                                         f"{err}.") from None
                if not isinstance(rec, dict):
                    raise HFMixtureError(f"{where} line {row + 1} is not a JSON object.")
                yield row, rec, where
        return
    if f.format == "csv":
        import csv

        with _open(f.path) as fh:
            reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8"))
            for row, rec in enumerate(reader):
                yield row, dict(rec), where
        return
    # plain text: one document per paragraph (blank-line separated), as datasets' "text"
    with _open(f.path) as fh:
        para: list[str] = []
        row = 0
        for line in io.TextIOWrapper(fh, encoding="utf-8"):
            if line.strip():
                para.append(line)
                continue
            if para:
                yield row, {text_column: "".join(para)}, where
                row, para = row + 1, []
        if para:
            yield row, {text_column: "".join(para)}, where


def document_text(rec: dict, column: str, where: str, row: int) -> str:
    """The text of record ``rec``, or one sentence naming the file, row and field."""
    if column not in rec:
        raise HFMixtureError(f"{where} row {row}: there is no field '{column}' (choose one with "
                             "--text-column).")
    text = rec[column]
    if text is None:
        raise HFMixtureError(f"{where} row {row}: field '{column}' is null, not a string.")
    if not isinstance(text, str):
        raise HFMixtureError(f"{where} row {row}: field '{column}' holds "
                             f"{type(text).__name__}, not a string.")
    return text


def _pieces_bound(length: int, max_chars: int, mode: str) -> int:
    """At most how many documents :func:`split_long` makes of a text of ``length`` characters
    (every piece but the last is at least nine tenths of ``max_chars`` long)."""
    if length <= max_chars or mode == "truncate":
        return 1
    return 1 + length // max(1, max_chars * 9 // 10)


def check_input(plan: InputPlan, *, max_doc_chars: int = 100_000, long_docs: str = "chunk",
                full_bytes: int | None = None, first_rows: int | None = None) -> int | None:
    """Read the input before any stage runs: every row when it is small, else the first rows
    of each file; refuse a missing, null or non-string text in one sentence.

    Returns an upper bound on the documents the reader yields (empty texts dropped, long
    ones cut) when the whole input was read, else ``None``.  Duplicates are not known yet,
    so the stages may still find fewer.
    """
    full_bytes = PREFLIGHT_FULL_BYTES if full_bytes is None else full_bytes
    first_rows = PREFLIGHT_ROWS if first_rows is None else first_rows
    whole = all("://" not in f.path for f in plan.files) and \
        sum(f.size for f in plan.files) <= full_bytes
    column = plan.text_column
    bound = 0
    for index, f in enumerate(plan.files):
        if not whole and index >= PREFLIGHT_FILES:
            break
        if whole and f.format == "parquet":
            bound += _parquet_texts(f, column, max_doc_chars, long_docs)
            continue
        for n, (row, rec, where) in enumerate(_rows(f, 0, 1 << 62, column)):
            if not whole and n >= first_rows:
                break
            text = document_text(rec, column, where, row)
            if text.strip():
                bound += _pieces_bound(len(text), max_doc_chars, long_docs)
    return bound if whole else None


def _parquet_texts(f: InputFile, column: str, max_doc_chars: int, long_docs: str) -> int:
    """Check the text column of a (small, local) parquet file as a whole; documents bound."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        texts = pq.read_table(f.path, columns=[column]).column(column)
    except Exception as err:  # noqa: BLE001 - truncated / corrupt data pages
        raise HFMixtureError(f"INPUT file '{f.path}' could not be read: "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                             ) from None
    if texts.null_count:
        row = int(np.flatnonzero(pc.is_null(texts).to_numpy(zero_copy_only=False))[0])
        raise HFMixtureError(f"INPUT file '{f.path}' row {row}: field '{column}' is null, "
                             "not a string.")
    lengths = pc.utf8_length(pc.utf8_trim_whitespace(texts)).to_numpy(zero_copy_only=False)
    full = pc.utf8_length(texts).to_numpy(zero_copy_only=False)[lengths > 0]
    if long_docs == "truncate":
        return len(full)
    step = max(1, max_doc_chars * 9 // 10)
    return int(len(full) + (full[full > max_doc_chars] // step).sum())


def split_long(text: str, max_chars: int, mode: str) -> list[str]:
    """``text`` cut into pieces of at most ``max_chars`` (at a newline or space near the end).

    >>> split_long("aaaa bbbb cccc", 10, "chunk")
    ['aaaa bbbb ', 'cccc']
    >>> split_long("aaaa bbbb cccc", 10, "truncate")
    ['aaaa bbbb ']
    """
    if len(text) <= max_chars:
        return [text]
    pieces = []
    start = 0
    while start < len(text):
        end = min(len(text), start + max_chars)
        if end < len(text):
            # prefer a boundary in the last tenth of the piece
            cut = max(text.rfind("\n", start + max_chars * 9 // 10, end),
                      text.rfind(" ", start + max_chars * 9 // 10, end))
            if cut > start:
                end = cut + 1
        pieces.append(text[start:end])
        if mode == "truncate":
            break
        start = end
    return pieces


def doc_key(text: str, seed: int) -> int:
    """A seeded 63-bit pseudo-random key of a document's text: the order of every sample.

    Samples are "the m smallest keys", so they are the same whatever the split into tasks
    and whatever the input files are called or the order they come in: the key is the
    text's alone (copies of a text share it; ties are broken by the text, then by the
    rest of the sampled row's content).

    >>> doc_key("a text", 0) == doc_key("a text", 0) != doc_key("a text", 1)
    True
    """
    h = hashlib.blake2b(f"{seed}\0".encode(), digest_size=8)
    h.update(text.encode("utf-8", "surrogatepass"))
    return int.from_bytes(h.digest(), "little") >> 1


class CorpusReader(BaseReader):
    """datatrove reader over an :class:`InputPlan`: task ``rank`` reads ``shards[rank::world]``.

    Document ids are ``<file>:<row>`` (``#<piece>`` for the pieces of a long document);
    metadata holds every other input column plus ``_row`` (the row in the whole input) and
    ``_key`` (:func:`doc_key` of the document's, or piece's, text).  Ids and ``_row``
    follow the files' order; nothing that decides the result reads them.  Empty texts are
    dropped and counted (stat ``empty``).
    """

    name = "hf_mixture corpus"

    def __init__(self, plan: InputPlan, *, max_doc_chars: int = 100_000,
                 long_docs: str = "chunk", seed: int = 0):
        super().__init__()
        if long_docs not in LONG_DOCS:
            raise HFMixtureError(f"long_docs must be chunk or truncate, got {long_docs!r}.")
        self.plan = plan
        self.max_doc_chars = int(max_doc_chars)
        self.long_docs = long_docs
        self.seed = int(seed)
        self._offsets = [0]
        for f in plan.files:  # global row numbers: rows of the files before this one
            self._offsets.append(self._offsets[-1] + (f.num_rows or 0))

    progress_dir: str | None = None  # rows read are counted there (see counting)

    def counting(self, folder: str | os.PathLike) -> CorpusReader:
        """This reader, counting the rows each task reads in ``folder`` (a task counter per
        rank, :class:`hf_mixture._progress.TaskCounter`) for the main process' bar."""
        other = copy.copy(self)
        other.progress_dir = str(folder)
        return other

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        if data:
            yield from data
        counter, read = None, 0
        if self.progress_dir is not None:
            from .._progress import TaskCounter

            counter = TaskCounter(self.progress_dir, rank)
        column = self.plan.text_column
        for file_index, lo, hi in self.plan.shards[rank::world_size]:
            f = self.plan.files[file_index]
            for row, rec, where in _rows(f, lo, hi if hi >= 0 else 1 << 62, column):
                read += 1
                if counter is not None and read == 256:  # a batch at a time: ~free per row
                    counter.update(read)
                    read = 0
                text = document_text(rec, column, where, row)
                del rec[column]
                if not text.strip():
                    self.stat_update("empty")
                    continue
                pieces = split_long(text, self.max_doc_chars, self.long_docs)
                if len(pieces) > 1:
                    self.stat_update("long_documents")
                    self.stat_update("pieces", value=len(pieces))
                base = f"{file_index}:{row}"
                grow = self._offsets[file_index] + row if f.num_rows is not None else -1
                for p, piece in enumerate(pieces):
                    doc_id = base if len(pieces) == 1 else f"{base}#{p}"
                    meta = dict(rec)
                    meta["_row"] = grow
                    meta["_key"] = doc_key(piece, self.seed)
                    self.stat_update("documents")
                    yield Document(text=piece, id=doc_id, metadata=meta)
        if counter is not None:
            counter.update(read)
            counter.close()
