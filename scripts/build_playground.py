"""Rebuild the bundled playground corpus, its tokenizer and its dataset card.

Run::

    python scripts/build_playground.py                 # downloads the .debs with apt-get
    python scripts/build_playground.py --debs DIR      # reuse .deb files already in DIR

Every input is a Debian package (``apt-get download`` needs no root, ``dpkg -x``
unpacks it without installing).  The pipeline, in order:

1. split each source into natural documents (a Bible chapter, a dictionary
   entry, a fortune, a section of a documentation page, a module);
2. normalize whitespace;
3. drop exact duplicates (hash of the normalized text, across all sources);
4. chunk long documents at paragraph / blank-line boundaries (code at the
   blank lines between top-level definitions) to at most ``max_chars``;
5. drop tiny pieces (fewer than ``min_chars`` characters);
6. balance: keep at most ``max_docs_per_source`` documents per source, chosen
   by a seeded hash of the ``doc_id`` (stable across machines and Pythons);
7. write ``data/playground.parquet`` (zstd; ``text``, ``source``, ``doc_id``),
   sorted by source then natural document order;
8. train a byte-level BPE tokenizer on it and save it as a
   ``PreTrainedTokenizerFast`` in ``tokenizer/``;
9. render the dataset card ``data/README.md`` from ``hub_cards/playground_card.md``.

Steps 1–6 are pure functions of the unpacked files, so two builds from the
same package versions give the same documents, byte for byte.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hf_mixture._io import atomic_path, atomic_write_text
from hf_mixture.errors import HFMixtureError
from hf_mixture.playground import SOURCES, data_dir, tokenizer_dir

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# Inputs: one row per Debian package.  "license" is the license of the text we
# take from the package, as stated in its usr/share/doc/<package>/copyright.
# (bible-kjv is the decoder program, GPL-2+; we only run it, we ship its output.)
# ---------------------------------------------------------------------------
# fmt: off
PACKAGES: tuple[tuple[str, str, str], ...] = (
    # (package,               source,        license of the text used)
    ("bible-kjv-text",        "bible",       "public domain (KJV, 1611; copyright expired)"),
    ("bible-kjv",             "bible",       "GPL-2+ (decoder program only, not shipped)"),
    ("dict-wn",               "wordnet",     "WordNet 3.0 license (Princeton University)"),
    ("dict-jargon",           "jargon",      "public domain (Jargon File 4.4.7)"),
    ("dict-foldoc",           "foldoc",      "GFDL-1.1-or-later (FOLDOC, Denis Howe)"),
    ("python3.11-doc",        "python_docs", "PSF-2.0 (Python documentation)"),
    ("libpython3.11-stdlib",  "python_code", "PSF-2.0 (CPython standard library)"),
    ("libpython3.11-minimal", "python_code", "PSF-2.0 (CPython standard library)"),
    ("fortunes",              "fortunes",    "BSD-3-Clause (fortune-mod data files)"),
    ("fortunes-min",          "fortunes",    "BSD-3-Clause (fortune-mod data files)"),
)
# fmt: on

# ~400 tokens: one coherent passage; the embedder's 256-token window still sees most of it.
MAX_CHARS = 1500
MIN_CHARS = 40  # shorter pieces carry too little text to embed or cluster
MAX_DOCS_PER_SOURCE = 2200  # ~15k docs: ~2.5 min to embed on 2 CPU cores
SEED = 0
VOCAB_SIZE = 8192
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
DATA_FILE = "playground.parquet"
BIBLE_RANGE = "gen1:1-rev22:21"
# Folders of the stdlib that hold test suites, not library code.
CODE_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test"})


@dataclass(frozen=True)
class Document:
    """One document: ``doc_id`` is ``"<source>/<name>#<chunk>"``."""

    source: str
    name: str
    text: str
    chunk: int = 0

    @property
    def doc_id(self) -> str:
        return f"{self.source}/{self.name}#{self.chunk}"


# ---------------------------------------------------------------------------
# Parsing (pure functions of strings / bytes)
# ---------------------------------------------------------------------------
_DICTD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DICTD_VALUE = {ch: i for i, ch in enumerate(_DICTD_ALPHABET)}


def decode_dictd_number(digits: str) -> int:
    """Decode a dictd index number (base 64, most significant digit first).

    >>> decode_dictd_number("B"), decode_dictd_number("BA"), decode_dictd_number("Gb9L")
    (1, 64, 1687371)
    """
    if not digits:
        raise HFMixtureError("A dictd index field is empty; expected base-64 digits.")
    value = 0
    for ch in digits:
        if ch not in _DICTD_VALUE:
            raise HFMixtureError(
                f"The dictd index number {digits!r} holds the invalid digit {ch!r}."
            )
        value = value * 64 + _DICTD_VALUE[ch]
    return value


def parse_dictd_index(index_text: str, *, where: str = "index") -> list[tuple[str, int, int]]:
    """``(headword, offset, length)`` for each line of a dictd ``.index`` file.

    The ``00-database-*`` entries (dictionary metadata, not definitions) are skipped.
    """
    entries = []
    for lineno, line in enumerate(index_text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise HFMixtureError(
                f"{where} line {lineno} has {len(fields)} tab-separated fields, expected "
                "headword, offset and length."
            )
        headword = fields[0]
        if headword.startswith(("00-database", "00database")):
            continue
        entries.append((headword, decode_dictd_number(fields[1]), decode_dictd_number(fields[2])))
    return entries


def dictd_entries(
    index_text: str, dict_bytes: bytes, *, where: str = "dict"
) -> list[tuple[str, str]]:
    """``(headword, entry text)`` per distinct entry of a dictd dictionary.

    Several headwords may point at the same ``(offset, length)``; the entry is
    returned once, under the headword that comes first in the index.  Entries
    are returned in the order they appear in the ``.dict`` file.
    """
    seen: dict[tuple[int, int], str] = {}
    for headword, offset, length in parse_dictd_index(index_text, where=where):
        if offset + length > len(dict_bytes):
            raise HFMixtureError(
                f"{where}: the entry {headword!r} ends at byte {offset + length}, past the end "
                f"of the dictionary ({len(dict_bytes)} bytes)."
            )
        seen.setdefault((offset, length), headword)
    return [
        (headword, dict_bytes[offset : offset + length].decode("utf-8", errors="replace"))
        for (offset, length), headword in sorted(seen.items())
    ]


def split_fortunes(text: str) -> list[str]:
    """The entries of a fortune file: separated by lines that hold only ``%``."""
    entries, current = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current))
    return [entry for entry in entries if entry.strip()]


_BIBLE_VERSE = re.compile(r"^\s+(\d+)\s+(.*)$")


def split_bible(text: str) -> list[tuple[str, str]]:
    """``(name, text)`` per chapter of ``bible -l9999`` output.

    A chapter starts with an unindented heading (``Genesis 1``); each verse is an
    indented line starting with its number.  The name is the slug ``genesis-1``.
    """
    chapters: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        verse = _BIBLE_VERSE.match(line)
        if verse:
            if not chapters:
                raise HFMixtureError(
                    f"Bible text has a verse before any chapter heading: {line!r}."
                )
            chapters[-1][1].append(f"{verse.group(1)} {verse.group(2).strip()}")
        elif not line[0].isspace():
            chapters.append((line.strip(), []))
        else:
            raise HFMixtureError(f"Bible text has an unrecognized line: {line!r}.")
    return [
        (_slug(heading), heading + "\n\n" + "\n".join(verses))
        for heading, verses in chapters
        if verses
    ]


_RST_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+<>:._])\1{2,}\s*$")


def split_rst_sections(text: str) -> list[str]:
    """Split a reST page before each section title (a line underlined by ``===``, ``---``...).

    An overline above the title goes with it.  A transition (a lone adornment
    line between blank lines) is not a title.
    """
    lines = text.splitlines()
    starts = [0]
    for i in range(1, len(lines)):
        title = lines[i - 1]
        if not _RST_ADORNMENT.match(lines[i]) or not title.strip():
            continue
        if _RST_ADORNMENT.match(title) or len(lines[i].rstrip()) < len(title.rstrip()):
            continue
        start = i - 1
        if (
            start >= 1
            and lines[start - 1].strip()
            and lines[start - 1].strip()[0] == lines[i][0]
            and _RST_ADORNMENT.match(lines[start - 1])
        ):
            start -= 1  # overline
        if start > starts[-1]:
            starts.append(start)
    starts.append(len(lines))
    sections = ["\n".join(lines[a:b]) for a, b in itertools.pairwise(starts)]
    return [section for section in sections if section.strip()]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# ---------------------------------------------------------------------------
# Cleaning, dedup, chunking, sampling (pure)
# ---------------------------------------------------------------------------
_OVERSTRIKE = re.compile(r".\x08")  # fortune files "bold" by X<BS>X and underline by _<BS>X
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def normalize_whitespace(text: str, *, code: bool = False) -> str:
    """Normalize line ends, trailing spaces, tabs, control characters and blank runs.

    Prose keeps at most one blank line in a row and loses common indentation;
    code keeps its indentation and up to two blank lines (PEP 8's spacing
    between top-level definitions).  Unicode is put in NFC form.
    """
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", _OVERSTRIKE.sub("", text))
    lines = [line.expandtabs(8 if code else 4).rstrip() for line in text.split("\n")]
    if not code:
        indents = [len(line) - len(line.lstrip(" ")) for line in lines if line]
        cut = min(indents, default=0)
        lines = [line[cut:] for line in lines]
    text = "\n".join(lines).strip("\n")
    max_blank = 2 if code else 1
    return re.sub("\n{" + str(max_blank + 2) + ",}", "\n" * (max_blank + 1), text)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dedup(documents: Iterable[Document]) -> list[Document]:
    """Drop documents whose text appeared before (exact match); the first one stays."""
    seen: set[str] = set()
    kept = []
    for doc in documents:
        digest = text_hash(doc.text)
        if digest not in seen:
            seen.add(digest)
            kept.append(doc)
    return kept


# Split points, coarse to fine.  Each pattern matches the separator; the text is
# cut right after it so that joining the pieces gives the input back.
_PROSE_LEVELS = (r"\n\s*\n", r"\n", r"(?<=[.!?;:])\s+", r"\s+")
_CODE_LEVELS = (r"\n\s*\n(?=\S)", r"\n\s*\n", r"\n", r"\s+")


def _cut_after(text: str, pattern: str) -> list[str]:
    ends = [m.end() for m in re.finditer(pattern, text) if 0 < m.end() < len(text)]
    bounds = [0, *ends, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _split_pieces(text: str, max_chars: int, levels: Sequence[str]) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars``, using the coarsest level that works."""
    if len(text) <= max_chars:
        return [text]
    if not levels:
        return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
    pieces = []
    for piece in _cut_after(text, levels[0]):
        pieces.extend(_split_pieces(piece, max_chars, levels[1:]))
    return pieces


def chunk_text(text: str, max_chars: int = MAX_CHARS, *, code: bool = False) -> list[str]:
    """Chunk ``text`` into pieces of at most ``max_chars`` characters at natural boundaries.

    Prose is cut at blank lines, then line ends, then sentence ends; code at the
    blank lines before a top-level statement, then any blank line, then line
    ends.  Neighbouring pieces are packed greedily up to ``max_chars``.

    >>> chunk_text("one.\\n\\ntwo.\\n\\nthree.", max_chars=12)
    ['one.\\n\\ntwo.', 'three.']
    """
    if max_chars < 1:
        raise HFMixtureError(f"max_chars must be at least 1, got {max_chars}.")
    pieces = _split_pieces(text, max_chars, _CODE_LEVELS if code else _PROSE_LEVELS)
    chunks, current = [], ""
    for piece in pieces:
        if current and len(current) + len(piece) > max_chars:
            chunks.append(current)
            current = ""
        current += piece
    chunks.append(current)
    # Strip the separators left at the ends but keep indentation: a code chunk may
    # start inside a class; a prose chunk that starts inside an indented block
    # loses only the indentation common to all its lines.
    out = [chunk.lstrip("\n").rstrip() for chunk in chunks]
    if not code:
        out = [textwrap.dedent(chunk) for chunk in out]
    return [chunk for chunk in out if chunk]


def stable_rank(doc_id: str, seed: int) -> str:
    """A seeded, platform-independent sort key for ``doc_id`` (unlike Python's ``hash``)."""
    return hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=16).hexdigest()


def stable_sample(documents: Sequence[Document], n: int, seed: int) -> list[Document]:
    """At most ``n`` documents chosen by seeded hash of their ``doc_id``, in their input order."""
    if n < 0:
        raise HFMixtureError(f"The per-source document cap must be non-negative, got {n}.")
    if len(documents) <= n:
        return list(documents)
    keep = set(
        sorted(range(len(documents)), key=lambda i: stable_rank(documents[i].doc_id, seed))[:n]
    )
    return [doc for i, doc in enumerate(documents) if i in keep]


@dataclass
class SourceStats:
    raw: int = 0
    after_dedup: int = 0
    chunks: int = 0
    kept: int = 0
    sampled: int = 0


def process(
    raw: dict[str, list[tuple[str, str]]],
    *,
    max_chars: int = MAX_CHARS,
    min_chars: int = MIN_CHARS,
    max_docs_per_source: int = MAX_DOCS_PER_SOURCE,
    seed: int = SEED,
) -> tuple[list[Document], dict[str, SourceStats]]:
    """Normalize, dedup, chunk, drop tiny pieces and balance the raw documents.

    ``raw`` maps a source name to its natural documents ``(name, text)`` in
    natural order.  Sources are processed in ``SOURCES`` order, so when two
    sources hold the same text the earlier source keeps it.  Returns the final
    documents (sorted by source order, then natural order) and per-source counts.
    """
    unknown = sorted(set(raw) - set(SOURCES))
    if unknown:
        raise HFMixtureError(f"Unknown playground source(s) {unknown}; known: {sorted(SOURCES)}.")
    stats = {source: SourceStats() for source in raw}
    docs = []
    for source in (s for s in SOURCES if s in raw):
        code = source == "python_code"
        stats[source].raw = len(raw[source])
        docs.extend(
            Document(source, name, normalize_whitespace(text, code=code))
            for name, text in raw[source]
        )
    docs = dedup(docs)
    chunked = []
    for doc in docs:
        stats[doc.source].after_dedup += 1
        pieces = chunk_text(doc.text, max_chars, code=doc.source == "python_code")
        chunked.extend(Document(doc.source, doc.name, piece, i) for i, piece in enumerate(pieces))
    # A chunk may repeat another document exactly (license headers, boilerplate).
    chunked = dedup(chunked)
    by_source: dict[str, list[Document]] = {source: [] for source in SOURCES if source in raw}
    for doc in chunked:
        stats[doc.source].chunks += 1
        if len(doc.text) >= min_chars:
            by_source[doc.source].append(doc)
    final = []
    for source, source_docs in by_source.items():
        stats[source].kept = len(source_docs)
        sample = stable_sample(source_docs, max_docs_per_source, seed)
        stats[source].sampled = len(sample)
        final.extend(sample)
    ids = [doc.doc_id for doc in final]
    if len(set(ids)) != len(ids):
        raise HFMixtureError(
            "Two playground documents got the same doc_id; names must be unique per source."
        )
    return final, stats


# ---------------------------------------------------------------------------
# Reading the unpacked packages
# ---------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # a few old text files predate UTF-8


def read_bible(root: Path) -> list[tuple[str, str]]:
    program = root / "usr/bin/bible"
    if not program.is_file():
        raise HFMixtureError(f"{program} is missing: unpack the bible-kjv package first.")
    result = subprocess.run(
        [str(program), "-l9999", "-p", str(root / "usr/lib"), BIBLE_RANGE],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        raise HFMixtureError(
            f"{program} failed (exit {result.returncode}): {result.stderr.decode(errors='replace').strip()}"
        )
    return split_bible(result.stdout.decode("utf-8", errors="replace"))


def read_dictd(root: Path, name: str) -> list[tuple[str, str]]:
    base = root / "usr/share/dictd"
    index, data = base / f"{name}.index", base / f"{name}.dict.dz"
    for path in (index, data):
        if not path.is_file():
            raise HFMixtureError(f"{path} is missing: unpack the dictd package for {name!r} first.")
    with gzip.open(data, "rb") as fh:  # dictzip is gzip with a random-access table
        dict_bytes = fh.read()
    entries = dictd_entries(_read_text(index), dict_bytes, where=str(index))
    names: dict[str, int] = {}
    out = []
    for headword, text in entries:
        slug = _slug(headword) or "entry"
        names[slug] = names.get(slug, 0) + 1
        out.append((slug if names[slug] == 1 else f"{slug}~{names[slug]}", text))
    return out


def read_python_docs(root: Path) -> list[tuple[str, str]]:
    base = root / "usr/share/doc/python3.11/html/_sources"
    if not base.is_dir():
        raise HFMixtureError(f"{base} is missing: unpack the python3.11-doc package first.")
    out = []
    for path in sorted(base.rglob("*.rst.txt")):
        page = path.relative_to(base).as_posix()[: -len(".rst.txt")]
        for i, section in enumerate(split_rst_sections(_read_text(path))):
            out.append((f"{page}:{i}", section))
    return out


def read_python_code(root: Path) -> list[tuple[str, str]]:
    base = root / "usr/lib/python3.11"
    if not base.is_dir():
        raise HFMixtureError(f"{base} is missing: unpack libpython3.11-stdlib first.")
    out = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base)
        if CODE_EXCLUDED_DIRS.intersection(rel.parts[:-1]) or "-packages" in rel.as_posix():
            continue
        out.append((rel.as_posix()[: -len(".py")], _read_text(path)))
    return out


def read_fortunes(root: Path) -> list[tuple[str, str]]:
    base = root / "usr/share/games/fortunes"
    if not base.is_dir():
        raise HFMixtureError(f"{base} is missing: unpack the fortunes packages first.")
    out = []
    for path in sorted(base.iterdir()):
        # *.dat are strfile indexes; *.u8 are symlinks to the same text.
        if path.suffix in (".dat", ".u8") or path.is_symlink() or not path.is_file():
            continue
        for i, entry in enumerate(split_fortunes(_read_text(path))):
            out.append((f"{path.name}:{i}", entry))
    return out


READERS = (
    ("bible", read_bible),
    ("wordnet", lambda root: read_dictd(root, "wn")),
    ("jargon", lambda root: read_dictd(root, "jargon")),
    ("foldoc", lambda root: read_dictd(root, "foldoc")),
    ("python_docs", read_python_docs),
    ("python_code", read_python_code),
    ("fortunes", read_fortunes),
)


def read_sources(root: Path, *, progress: bool = True) -> dict[str, list[tuple[str, str]]]:
    """Every source's natural documents ``(name, text)`` from an unpacked package tree."""
    from tqdm.auto import tqdm

    return {
        source: reader(root)
        for source, reader in tqdm(READERS, desc="reading sources", disable=not progress)
    }


# ---------------------------------------------------------------------------
# Fetching packages
# ---------------------------------------------------------------------------
def _find_deb(debs: Path, package: str) -> Path | None:
    matches = sorted(p for p in debs.glob(f"{package}_*.deb"))
    return matches[-1] if matches else None


def fetch_packages(debs: Path) -> dict[str, Path]:
    """``package -> .deb path``, running ``apt-get download`` for those not in ``debs``."""
    debs.mkdir(parents=True, exist_ok=True)
    found = {}
    for package, _, _ in PACKAGES:
        deb = _find_deb(debs, package)
        if deb is None:
            logger.info("apt-get download %s", package)
            result = subprocess.run(
                ["apt-get", "download", package],
                cwd=debs,
                capture_output=True,
                text=True,
                check=False,
            )
            deb = _find_deb(debs, package)
            if result.returncode != 0 or deb is None:
                raise HFMixtureError(
                    f"`apt-get download {package}` failed (exit {result.returncode}): "
                    f"{result.stderr.strip() or 'no .deb file appeared'}; pass --debs DIR holding it."
                )
        found[package] = deb
    return found


def deb_version(deb: Path) -> str:
    result = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise HFMixtureError(f"{deb} is not a readable Debian package: {result.stderr.strip()}")
    return result.stdout.strip()


def unpack(debs: dict[str, Path], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for deb in debs.values():
        result = subprocess.run(
            ["dpkg", "-x", str(deb), str(root)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise HFMixtureError(f"`dpkg -x {deb}` failed: {result.stderr.strip()}")


# ---------------------------------------------------------------------------
# Writing: parquet, tokenizer, card
# ---------------------------------------------------------------------------
def write_parquet(documents: Sequence[Document], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "text": pa.array([d.text for d in documents], pa.string()),
            "source": pa.array([d.source for d in documents], pa.string()),
            "doc_id": pa.array([d.doc_id for d in documents], pa.string()),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", compression_level=19, row_group_size=4096)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = VOCAB_SIZE, *, show_progress: bool = True
):
    """Train a byte-level BPE tokenizer; returns a ``PreTrainedTokenizerFast``.

    ``<|endoftext|>`` is id 0 and serves as bos, eos and unk (byte-level BPE
    never needs unk); ``<|pad|>`` is id 1.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # No prefix space: decode(encode(x)) == x exactly, which the tests rely on.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=show_progress,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tokenizer, path: Path) -> None:
    with atomic_path(path) as tmp:
        tokenizer.save_pretrained(str(tmp))
        for extra in tmp.iterdir():  # ship only the JSON files
            if extra.suffix != ".json":
                extra.unlink()
        # transformers 5 writes its new class name; the classic name loads in 4.x and 5.x alike.
        config_path = tmp / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )


def render_card(
    documents: Sequence[Document],
    stats: dict[str, SourceStats],
    token_counts: dict[str, int],
    versions: dict[str, str],
    settings: dict[str, int],
) -> str:
    from importlib.resources import files

    from huggingface_hub import DatasetCard, DatasetCardData

    rows = []
    total_docs = len(documents)
    total_chars = sum(len(d.text) for d in documents)
    total_tokens = sum(token_counts.values())
    for source, info in SOURCES.items():
        docs = [d for d in documents if d.source == source]
        chars = sum(len(d.text) for d in docs)
        s = stats[source]
        rows.append(
            {
                "name": source,
                "description": info.description,
                "license": info.license,
                "packages": ", ".join(p for p, src, _ in PACKAGES if src == source),
                "documents": len(docs),
                "characters": chars,
                "tokens": token_counts[source],
                "token_share": token_counts[source] / total_tokens if total_tokens else 0.0,
                "raw": s.raw,
                "after_dedup": s.after_dedup,
                "chunks": s.chunks,
                "kept": s.kept,
            }
        )
    card_data = DatasetCardData(
        license="other",
        # Each source keeps its own license; the card's per-source table states them.
        license_name="mixed-open-licenses",
        language=["en"],
        pretty_name="hf_mixture playground",
        size_categories=["10K<n<100K"],
        task_categories=["text-generation"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}],
    )
    template = (
        files("hf_mixture.hub_cards").joinpath("playground_card.md").read_text(encoding="utf-8")
    )
    card = DatasetCard.from_template(
        card_data,
        template_str=template,
        sources=rows,
        total_documents=total_docs,
        total_characters=total_chars,
        total_tokens=total_tokens,
        packages=[
            {"package": p, "version": versions.get(p, "?"), "source": src, "license": lic}
            for p, src, lic in PACKAGES
        ],
        settings=settings,
        data_file=DATA_FILE,
        vocab_size=VOCAB_SIZE,
    )
    return str(card).rstrip("\n") + "\n"


def build(
    *,
    debs: Path | None = None,
    workdir: Path | None = None,
    output_dir: Path | None = None,
    tokenizer_output: Path | None = None,
    max_chars: int = MAX_CHARS,
    min_chars: int = MIN_CHARS,
    max_docs_per_source: int = MAX_DOCS_PER_SOURCE,
    seed: int = SEED,
) -> dict[str, dict[str, int]]:
    """Run the whole rebuild; returns per-source ``{"documents", "characters", "tokens"}``.

    >>> build(debs=Path("debs"))  # doctest: +SKIP
    """
    output_dir = Path(output_dir) if output_dir else data_dir()
    tokenizer_output = Path(tokenizer_output) if tokenizer_output else tokenizer_dir()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hf_mixture_playground_") as scratch:
        work = Path(workdir) if workdir else Path(scratch)
        deb_dir = Path(debs) if debs else work / "debs"
        packages = fetch_packages(deb_dir)
        versions = {package: deb_version(deb) for package, deb in packages.items()}
        root = work / "root"
        if root.exists():
            shutil.rmtree(root)  # never mix files of two package versions
        logger.info("unpacking %d packages into %s", len(packages), root)
        unpack(packages, root)
        raw = read_sources(root)
    documents, stats = process(
        raw,
        max_chars=max_chars,
        min_chars=min_chars,
        max_docs_per_source=max_docs_per_source,
        seed=seed,
    )
    write_parquet(documents, output_dir / DATA_FILE)
    logger.info("training the tokenizer on %d documents", len(documents))
    tokenizer = train_tokenizer(d.text for d in documents)
    save_tokenizer(tokenizer, tokenizer_output)
    encodings = tokenizer.backend_tokenizer.encode_batch(
        [d.text for d in documents], add_special_tokens=False
    )
    token_counts = {source: 0 for source in SOURCES}
    char_counts = {source: 0 for source in SOURCES}
    doc_counts = {source: 0 for source in SOURCES}
    for doc, enc in zip(documents, encodings):
        token_counts[doc.source] += len(enc.ids)
        char_counts[doc.source] += len(doc.text)
        doc_counts[doc.source] += 1
    settings = {
        "max_chars": max_chars,
        "min_chars": min_chars,
        "max_docs_per_source": max_docs_per_source,
        "seed": seed,
    }
    atomic_write_text(
        output_dir / "README.md", render_card(documents, stats, token_counts, versions, settings)
    )
    logger.info("built the playground in %.1f s", time.perf_counter() - start)
    return {
        source: {
            "documents": doc_counts[source],
            "characters": char_counts[source],
            "tokens": token_counts[source],
        }
        for source in SOURCES
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/build_playground.py",
        description="Rebuild the playground corpus, tokenizer and dataset card from Debian packages.",
    )
    parser.add_argument(
        "--debs", type=Path, help="Folder of .deb files to use (missing ones are downloaded)."
    )
    parser.add_argument(
        "--workdir", type=Path, help="Folder to unpack into (default: a temporary folder)."
    )
    parser.add_argument(
        "--output-dir", type=Path, help="Where playground.parquet and README.md go."
    )
    parser.add_argument("--tokenizer-dir", type=Path, help="Where the tokenizer goes.")
    parser.add_argument("--max-docs-per-source", type=int, default=MAX_DOCS_PER_SOURCE)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        counts = build(
            debs=args.debs,
            workdir=args.workdir,
            output_dir=args.output_dir,
            tokenizer_output=args.tokenizer_dir,
            max_docs_per_source=args.max_docs_per_source,
            seed=args.seed,
        )
    except HFMixtureError as err:
        print(f"playground build: error: {err}", file=sys.stderr)
        return 2
    print(f"{'source':<12} {'docs':>7} {'chars':>11} {'tokens':>10}")
    for source, c in counts.items():
        print(f"{source:<12} {c['documents']:>7} {c['characters']:>11} {c['tokens']:>10}")
    print(f"built in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
