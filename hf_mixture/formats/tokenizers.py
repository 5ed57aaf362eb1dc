"""Fast tokenizers as the corpus formats use them: load, fingerprint, compare, encode.

>>> tokenizer_fingerprint(load_tokenizer("path/to/tokenizer"))["vocab_size"]   # doctest: +SKIP
8192
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

from ..errors import HFMixtureError


def load_tokenizer(tokenizer: Any):
    """A fast tokenizer from an object, a local folder or a Hub id (never remote code).

    >>> load_tokenizer("path/to/tokenizer_folder")      # doctest: +SKIP
    """
    if not isinstance(tokenizer, (str, os.PathLike)):
        if not hasattr(tokenizer, "backend_tokenizer"):
            raise HFMixtureError(
                f"tokenizer must be a fast (Rust-backed) transformers tokenizer or its name/path, "
                f"got {type(tokenizer).__name__}."
            )
        return tokenizer
    from transformers import AutoTokenizer

    text = str(tokenizer)
    if not os.path.exists(os.path.expanduser(text)) and (
            text.startswith((".", "/", "~")) or text.count("/") > 1):
        raise HFMixtureError(
            f"Tokenizer '{tokenizer}' could not be loaded: the path does not exist.")
    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer))
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HFMixtureError(f"Tokenizer '{tokenizer}' could not be loaded: {first}") from None
    if not getattr(tok, "is_fast", False) or not hasattr(tok, "backend_tokenizer"):
        raise HFMixtureError(f"Tokenizer '{tokenizer}' is not a fast (tokenizer.json) tokenizer.")
    return tok


# what AutoTokenizer reads from a folder: a change to any of them is a different tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def task_tokenizer(tokenizer: Any):
    """``load_tokenizer`` for a stage's tasks: one load per process for the same name and
    files (the sizes and modification times of ``TOKENIZER_FILES`` in the folder), shared by
    the tasks a worker runs.

    A tokenizer loaded anew for each task and used to encode a shard leaves its process about
    7 MB larger every task (the Rust side's memory is not given back), so a worker that runs
    75 tasks of a stage doubled in size; loaded once, the worker stays flat.
    """
    if not isinstance(tokenizer, (str, os.PathLike)):
        return load_tokenizer(tokenizer)
    folder = os.path.abspath(os.path.expanduser(str(tokenizer)))
    stamp: tuple = ()
    for name in TOKENIZER_FILES:
        try:
            st = os.stat(os.path.join(folder, name))
            stamp += (name, st.st_size, st.st_mtime_ns)
        except OSError:
            pass  # absent here (or a Hub id: its name alone)
    return _load_once(str(tokenizer), stamp)


@functools.lru_cache(maxsize=4)
def _load_once(tokenizer: str, stamp: tuple):
    return load_tokenizer(tokenizer)


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """``{name, sha256, vocab_size}`` of a fast tokenizer.

    ``sha256`` hashes tokenizer.json as ``tokenizers`` serializes it, so a tokenizer
    object and the folder it was saved to (or loaded from) hash alike.
    """
    blob = tokenizer.backend_tokenizer.to_str().encode("utf-8")
    return {
        "name": str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "vocab_size": len(tokenizer),
    }


def check_tokenizer_matches(tokenizer: Any, store: Any, purpose: str) -> None:
    """Refuse a tokenizer that is not the one ``store``'s ids were made with.

    Compares the content hash of tokenizer.json when the store records one, else the
    vocabulary size; ``purpose`` says what the tokenizer was for ("saved beside the model").
    """
    info = tokenizer_fingerprint(tokenizer)
    want_hash = getattr(store, "tokenizer_hash", None)
    if want_hash is not None and info["sha256"] != want_hash:
        raise HFMixtureError(
            f"Tokenizer '{info['name']}' ({purpose}) is not the tokenizer of token store "
            f"'{store.path}' ('{store.tokenizer_name}'): their tokenizer.json hashes differ "
            f"({info['sha256'][:12]} vs {want_hash[:12]}, vocabularies {info['vocab_size']} vs "
            f"{store.vocab_size}).")
    if info["vocab_size"] != store.vocab_size:
        raise HFMixtureError(
            f"Tokenizer '{info['name']}' ({purpose}) has {info['vocab_size']} ids, but token store "
            f"'{store.path}' was made with a vocabulary of {store.vocab_size} "
            f"('{store.tokenizer_name}').")


def check_texts(texts: list, where: str, start: int = 0) -> None:
    """Raise naming the row when a value of field 'text' is not a string (e.g. null)."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise HFMixtureError(
                f"{where} row {start + i}: field 'text' is {text!r}, not a string."
            )


# Characters handed to the tokenizer at once: one 100 MB document would otherwise cost
# gigabytes of offsets and merge state inside the Rust tokenizer.
ENCODE_PIECE_CHARS = 1_000_000


def _pieces(text: str) -> list[str]:
    """``text`` cut just before a whitespace character every ~``ENCODE_PIECE_CHARS``.

    Byte-level BPE (GPT-2 and the playground's) pre-tokenizes at whitespace, and a space
    starts the next word's token, so encoding the pieces gives the whole text's ids.
    """
    out, start = [], 0
    while len(text) - start > ENCODE_PIECE_CHARS:
        cut = start + ENCODE_PIECE_CHARS
        ws = max(text.rfind(" ", start + 1, cut), text.rfind("\n", start + 1, cut))
        cut = ws if ws > start else cut
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def encode_texts(backend, texts: list, *, where: str = "text", start: int = 0) -> list[list[int]]:
    """Token ids of ``texts`` without special tokens, through the Rust tokenizer (batched);
    a very long text is encoded in whitespace-aligned pieces (bounded memory)."""
    check_texts(texts, where, start)
    if all(len(t) <= ENCODE_PIECE_CHARS for t in texts):
        return [enc.ids for enc in backend.encode_batch_fast(texts, add_special_tokens=False)]
    out = []
    for t in texts:
        ids: list[int] = []
        for enc in backend.encode_batch_fast(_pieces(t), add_special_tokens=False):
            ids.extend(enc.ids)
        out.append(ids)
    return out
