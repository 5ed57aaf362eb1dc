"""What a mixture search or an online callback optimizes: the *target* (lower is better by default).

One module for both: ``hf-mixture search --target`` and the ``target`` field of
the mixture callbacks (``callbacks: [{name: aioli, target: data/my_target.jsonl}]``)
read the same forms with the same code.  A target is given as:

``"mean"`` / ``"worst"``
    The mean / largest per-domain validation loss (the pool components'
    held-out slices of the token store).
a file, a folder, or a dataset id
    The loss on a target text set — the domain the user cares about, which need
    not be one of the pool's components.  Files: ``.txt``/``.md`` (one document
    per paragraph), ``.json``/``.jsonl``, ``.parquet``, ``.csv``; a folder that
    ``datasets.load_dataset`` reads (or one saved with ``save_to_disk``); or a Hub
    dataset id.  Texts come from ``text_column`` of ``split`` and are tokenized
    with the token store's tokenizer (named in its manifest) once, by
    :func:`prepare_target`, into ``<search>/target/tokens.npy``.
``"module:function"`` or a Python callable
    ``fn(model, tokenizer) -> float``, called once at the end of each proxy run
    (e.g. a downstream evaluation).  ``greater_is_better`` says its direction.
    A callback calls it at each of its evaluations.

Only the text column of a target set is read: any ``source`` column is ignored.

>>> spec = prepare_target("mean", store=None, output_dir="out")
>>> spec.kind, spec.name
('mean', 'mean validation loss')
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, atomic_write_json, short_hash
from ..errors import HFMixtureError

__all__ = [
    "TARGET_KEY",
    "TargetSpec",
    "load_target_texts",
    "pack_documents",
    "prepare_target",
    "target_kind",
    "tokenize_target",
]

#: The key of a text target's eval set beside the per-domain ones: ``Trainer.evaluate``
#: then reports its loss as ``eval_target_loss`` (so no mixture component may be named so).
TARGET_KEY = "target"

_TEXT_BUILDERS = {".txt": "text", ".md": "text", ".json": "json", ".jsonl": "json",
                  ".parquet": "parquet", ".csv": "csv"}


@dataclass
class TargetSpec:
    """A prepared target, JSON-able so every proxy worker (or Slurm task) can rebuild it.

    ``kind``: ``"mean"``, ``"worst"``, ``"text"`` (``tokens`` is the ``.npy`` of packed
    rows) or ``"callable"`` (``callable`` is ``"module:function"``, or ``"<in-process>"``
    for a Python object that only an in-process run can call).
    """

    kind: str
    name: str
    greater_is_better: bool = False
    tokens: str | None = None
    callable: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetSpec:
        return cls(**data)

    @property
    def per_step(self) -> bool:
        """Whether the target is cheap enough to record at every eval point (not callables)."""
        return self.kind != "callable"


# -- text sets -----------------------------------------------------------------------------
def load_target_texts(source: str, *, text_column: str = "text", split: str = "train"
                      ) -> list[str]:
    """The non-empty strings of ``text_column`` in a file, folder or dataset id."""
    import datasets
    from datasets.utils import logging as ds_logging

    from ..formats.hubstyle import load_folder

    path = Path(source)
    # A target set is small and read once: its "Generating split" bars would only be noise.
    bars_were_on = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        if path.is_file():
            builder = _TEXT_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise HFMixtureError(
                    f"Target file '{path}' has the unsupported suffix {path.suffix!r}; use "
                    f"{', '.join(sorted(_TEXT_BUILDERS))} or a folder/dataset id.")
            kwargs = {"sample_by": "paragraph"} if builder == "text" else {}
            ds = datasets.load_dataset(builder, data_files={"train": str(path)}, split="train",
                                       **kwargs)
        elif path.is_dir():
            if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
                ds = datasets.load_from_disk(str(path))
            else:
                ds = load_folder(path)
        else:
            ds = datasets.load_dataset(source)
    except HFMixtureError:
        raise
    except Exception as err:  # noqa: BLE001 - any loader failure is the user's input
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        what = "file or folder" if path.exists() else "file, folder or loadable dataset id"
        raise HFMixtureError(f"Target {source!r} is not a readable {what}: {first}") from None
    finally:
        if bars_were_on:
            ds_logging.enable_progress_bar()
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise HFMixtureError(f"Target {source!r} has no split {split!r}; it has "
                                 f"{', '.join(ds)} (set target_split).")
        ds = ds[split]
    if text_column not in ds.column_names:
        raise HFMixtureError(f"Target {source!r} has no column {text_column!r}; its columns are "
                             f"{', '.join(ds.column_names)} (set target_text_column).")
    texts = [t for t in ds[text_column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise HFMixtureError(f"Target {source!r} has no usable text: column {text_column!r} "
                             f"holds no non-empty string among its {len(ds)} rows.")
    return texts


def pack_documents(docs: list[np.ndarray] | Any, seq_len: int, max_tokens: int,
                   eos_token_id: int | None) -> np.ndarray:
    """Documents joined with EOS, cut to ``max_tokens``, as ``(rows, seq_len)`` int64.

    Rows are full ``seq_len`` windows; when there is less than one window, the
    single shorter row of everything is returned (shape ``(1, n)``); an empty
    input gives shape ``(0, seq_len)``.

    >>> pack_documents([np.array([1, 2]), np.array([3])], seq_len=2, max_tokens=10,
    ...                eos_token_id=0).tolist()
    [[1, 2], [0, 3]]
    """
    chunks, total = [], 0
    eos = np.array([] if eos_token_id is None else [eos_token_id], dtype=np.int64)
    for doc in docs:
        if total >= max_tokens:
            break
        part = np.concatenate([np.asarray(doc, dtype=np.int64), eos])
        chunks.append(part)
        total += len(part)
    if not chunks:
        return np.zeros((0, seq_len), dtype=np.int64)
    flat = np.concatenate(chunks)[:max_tokens]
    rows = len(flat) // seq_len
    if rows == 0:
        return flat.reshape(1, -1)
    return flat[: rows * seq_len].reshape(rows, seq_len)


def store_tokenizer(store: Any, tokenizer: Any | None):
    """The tokenizer given (a name or object), else the one the token store names."""
    from ..formats.tokenizers import check_tokenizer_matches, load_tokenizer

    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
        # target text tokenized with another vocabulary would make every proxy fail deep
        # inside the embedding lookup: say so once, here
        check_tokenizer_matches(tok, store, "tokenizing the search target")
        return tok
    name = store.tokenizer_name
    if not name:
        raise HFMixtureError(f"Token store '{store.path}' names no tokenizer in its manifest; "
                             "pass the tokenizer (config field 'tokenizer').")
    try:
        return load_tokenizer(name)
    except HFMixtureError as err:
        raise HFMixtureError(f"The tokenizer of token store '{store.path}' ({name!r}) is not "
                             f"loadable, so target text cannot be tokenized ({err}); pass it "
                             "with the config field 'tokenizer'.") from None


def callable_name(fn: Callable) -> str:
    """``"module:qualname"`` of an importable function, else ``"<in-process>"``."""
    return _callable_name(fn)


def _callable_name(fn: Callable) -> str:
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module and qual and "<" not in qual:
        try:
            obj = importlib.import_module(module)
            for part in qual.split("."):
                obj = getattr(obj, part)
            if obj is fn:
                return f"{module}:{qual}"
        except (ImportError, AttributeError):
            pass
    return "<in-process>"


def resolve_callable(name: str) -> Callable:
    """Import ``"module:function"`` (the user's own code; nothing is downloaded)."""
    module, _, qual = name.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise HFMixtureError(f"Target callable {name!r} cannot be imported ({err}).") from None
    if not callable(obj):
        raise HFMixtureError(f"Target {name!r} is not callable.")
    return obj


def _looks_like_callable(text: str) -> bool:
    module, sep, qual = text.partition(":")
    return bool(sep) and bool(qual) and all(p.isidentifier() for p in module.split(".")) \
        and all(p.isidentifier() for p in qual.split(".")) and not Path(text).exists()


def prepare_target(target: Any, store: Any, output_dir: str | os.PathLike, *, seq_len: int = 256,
                   max_tokens: int = 16384, text_column: str = "text", split: str = "train",
                   tokenizer: Any | None = None, greater_is_better: bool = False,
                   seed: int = 0) -> TargetSpec:
    """Turn a target given by the user into a :class:`TargetSpec` (tokenizing text once).

    ``max_tokens`` of the target text (documents in a seeded order) are packed
    into ``seq_len`` rows and saved under ``output_dir/target/``; rerunning with
    the same inputs reuses them.
    """
    if isinstance(target, TargetSpec):
        return target
    if callable(target) and not isinstance(target, (str, os.PathLike)):
        name = _callable_name(target)
        spec = TargetSpec("callable", getattr(target, "__name__", "callable"),
                          greater_is_better, callable=name)
        spec._fn = target  # type: ignore[attr-defined]  # in-process runs call it directly
        return spec
    if not isinstance(target, (str, os.PathLike)) or not str(target).strip():
        raise HFMixtureError(f"target must be 'mean', 'worst', a text file/folder/dataset id, "
                             f"'module:function' or a callable, got {target!r}.")
    text = str(target)
    if text in ("mean", "worst"):
        return TargetSpec(text, f"{text} validation loss")
    if _looks_like_callable(text):
        resolve_callable(text)  # fail now, not in every worker
        return TargetSpec("callable", text, greater_is_better, callable=text)
    rows, documents, tok = _tokenized_rows(text, store, seq_len=seq_len, max_tokens=max_tokens,
                                           text_column=text_column, split=split,
                                           tokenizer=tokenizer, seed=seed)
    digest = short_hash(rows.tobytes())
    folder = Path(output_dir) / "target"
    tokens_path = folder / "tokens.npy"
    facts = {"source": text, "text_column": text_column, "split": split,
             "documents": documents, "tokens": int(rows.size), "rows": int(rows.shape[0]),
             "seq_len": int(rows.shape[1]), "sha256": digest,
             "tokenizer": getattr(tok, "name_or_path", None)}
    meta_path = folder / "target.json"
    existing = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if existing != facts or not tokens_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(tokens_path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, rows, allow_pickle=False)
        atomic_write_json(meta_path, facts)
    return TargetSpec("text", f"loss on {Path(text).name or text}", False,
                      tokens=str(tokens_path.resolve()), facts=facts)


def _tokenized_rows(text: str, store: Any, *, seq_len: int, max_tokens: int, text_column: str,
                    split: str, tokenizer: Any | None, seed: int) -> tuple[np.ndarray, int, Any]:
    """``(rows, documents used, tokenizer)``: the target text packed into ``seq_len`` rows."""
    texts = load_target_texts(text, text_column=text_column, split=split)
    tok = store_tokenizer(store, tokenizer)
    order = np.random.default_rng(seed).permutation(len(texts))
    ids, total = [], 0
    for i in order:  # tokenize only what fits: large target sets stay cheap
        doc = tok(texts[int(i)], add_special_tokens=False)["input_ids"]
        ids.append(np.asarray(doc, dtype=np.int64))
        total += len(doc) + 1
        if total >= max_tokens:
            break
    rows = pack_documents(ids, seq_len, max_tokens, store.eos_token_id)
    if rows.size < 2:
        raise HFMixtureError(f"Target {text!r} has no usable text: it tokenizes to {rows.size} "
                             "token(s), too few to measure a loss.")
    return rows, len(ids), tok


def target_kind(target: Any) -> str:
    """``"mean"``, ``"worst"``, ``"callable"`` or ``"text"``: the form of a target as given.

    Reads nothing: a text target is checked by :func:`tokenize_target`.

    >>> target_kind("mean"), target_kind("data/code.jsonl"), target_kind(len)
    ('mean', 'text', 'callable')
    """
    if isinstance(target, TargetSpec):
        return target.kind
    if callable(target) and not isinstance(target, (str, os.PathLike)):
        return "callable"
    if not isinstance(target, (str, os.PathLike)) or not str(target).strip():
        raise HFMixtureError(f"target must be 'mean', 'worst', a text file/folder/dataset id, "
                             f"'module:function' or a callable, got {target!r}.")
    text = str(target)
    if text in ("mean", "worst"):
        return text
    if text == "<in-process>":
        return "callable"
    return "callable" if _looks_like_callable(text) else "text"


def tokenize_target(target: str | os.PathLike, store: Any, *, seq_len: int,
                    max_tokens: int = 16384, text_column: str = "text", split: str = "train",
                    tokenizer: Any | None = None, seed: int = 0) -> np.ndarray:
    """A text target (file, folder or dataset id) as ``(rows, seq_len)`` int64 token windows.

    Tokenized with the token store's tokenizer (or ``tokenizer``, checked against
    the store); a target that is missing, empty or tokenizes to too little is one
    :class:`~hf_mixture.errors.HFMixtureError` sentence.  The mixture callbacks
    evaluate these rows beside the per-domain sets (``eval_target_loss``).
    """
    rows, _, _ = _tokenized_rows(str(target), store, seq_len=seq_len, max_tokens=max_tokens,
                                 text_column=text_column, split=split, tokenizer=tokenizer,
                                 seed=seed)
    return rows


def resolve_target_callable(target: Any) -> Callable:
    """The function of a callable target (an object, or ``"module:function"`` imported now)."""
    if isinstance(target, TargetSpec):
        fn = getattr(target, "_fn", None)
        return fn if fn is not None else resolve_callable(target.callable or "")
    if callable(target) and not isinstance(target, (str, os.PathLike)):
        return target
    return resolve_callable(str(target))


def load_target_rows(spec: TargetSpec) -> np.ndarray:
    """The packed token rows of a ``text`` target."""
    path = Path(spec.tokens or "")
    if not path.is_file():
        raise HFMixtureError(f"The target tokens file '{path}' is missing; rerun the search to "
                             "prepare the target again.")
    return np.load(path, allow_pickle=False)
