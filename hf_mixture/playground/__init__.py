"""The playground: a small real multi-source corpus and tokenizer shipped in the package.

Seven sources of public text, taken from Debian packages and balanced to at
most ~2,200 documents each (~15k documents, ~10 MB of text), so every command
has an offline default corpus.  The ``source`` column is the true origin of a
document: use it to *evaluate* clustering, never as an input to it.

>>> from hf_mixture import playground
>>> ds = playground.load()                      # doctest: +SKIP
>>> ds.column_names                              # doctest: +SKIP
['text', 'source', 'doc_id']
>>> playground.tokenizer().eos_token             # doctest: +SKIP
'<|endoftext|>'

Importing this module is cheap: ``datasets`` and ``transformers`` are imported
only by the functions that need them.  Rebuild the shipped files with
``python scripts/build_playground.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..errors import HFMixtureError

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    from transformers import PreTrainedTokenizerFast

__all__ = ["SOURCES", "SourceInfo", "data_dir", "data_file", "load", "tokenizer", "tokenizer_dir"]


class SourceInfo(NamedTuple):
    license: str
    description: str


# The value of the ``source`` column -> license of the text and what it is.
# The order is the order of the shipped file and of every table.
SOURCES: dict[str, SourceInfo] = {
    "bible": SourceInfo(
        "public-domain", "King James Bible (1611): chapters, in runs of whole verses"
    ),
    "wordnet": SourceInfo("WordNet-3.0", "WordNet 3.0 dictionary entries (Princeton University)"),
    "jargon": SourceInfo("public-domain", "The Jargon File 4.4.7: hacker slang entries"),
    "foldoc": SourceInfo("GFDL-1.1-or-later", "Free On-line Dictionary of Computing entries"),
    "python_docs": SourceInfo("PSF-2.0", "Python 3.11 documentation, reStructuredText sections"),
    "python_code": SourceInfo("PSF-2.0", "CPython 3.11 standard-library source code (no tests)"),
    "fortunes": SourceInfo("BSD-3-Clause", "fortune-mod quotations, jokes and epigrams"),
}

_PACKAGE_DIR = Path(__file__).resolve().parent
_DATA_FILE = "playground.parquet"


def data_dir() -> Path:
    """The folder holding ``playground.parquet`` and its dataset card ``README.md``.

    ``datasets.load_dataset(str(data_dir()))`` reads it with no custom code.
    """
    return _PACKAGE_DIR / "data"


def data_file() -> Path:
    """The shipped parquet file (columns ``text``, ``source``, ``doc_id``)."""
    return data_dir() / _DATA_FILE


def tokenizer_dir() -> Path:
    """The folder of the playground tokenizer (``PreTrainedTokenizerFast.from_pretrained`` reads it)."""
    return _PACKAGE_DIR / "tokenizer"


def load(split: str = "train") -> datasets.Dataset:
    """The playground as a ``datasets.Dataset`` with columns ``text``, ``source``, ``doc_id``.

    ``split`` accepts ``datasets`` slicing, e.g. ``"train[:1000]"``; the corpus
    has a single ``train`` split.  Reads the shipped file; nothing is downloaded.

    >>> load("train[:2]")["source"]  # doctest: +SKIP
    ['bible', 'bible']
    """
    path = data_file()
    if not path.is_file():
        raise HFMixtureError(
            f"The playground data file {path} is missing: reinstall "
            "hf_mixture, or rebuild it in a checkout with `python scripts/build_playground.py`."
        )
    import datasets

    try:
        return datasets.load_dataset("parquet", data_files={"train": str(path)}, split=split)
    except ValueError as err:
        if "split" in str(err).lower() or "Unknown" in str(err):
            raise HFMixtureError(
                f"The playground has one split, 'train' (slicing like 'train[:100]' works); got split={split!r}."
            ) from err
        raise


def tokenizer() -> PreTrainedTokenizerFast:
    """The playground's byte-level BPE tokenizer (vocab 8192, eos ``<|endoftext|>``, pad ``<|pad|>``).

    >>> tok = tokenizer()                               # doctest: +SKIP
    >>> tok.decode(tok("In the beginning")["input_ids"])  # doctest: +SKIP
    'In the beginning'
    """
    path = tokenizer_dir()
    if not (path / "tokenizer.json").is_file():
        raise HFMixtureError(
            f"The playground tokenizer file {path / 'tokenizer.json'} is missing: reinstall "
            "hf_mixture, or rebuild it in a checkout with `python scripts/build_playground.py`."
        )
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))
