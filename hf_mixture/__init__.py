"""hf_mixture: data mixtures as first-class Hugging Face artifacts.

The names most users need are importable from here; everything else lives in
sub-packages (``formats``, ``clustering``, ``mixture``, ``callbacks``, ...).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import HFMixtureError

__all__ = ["HFMixtureError", "__version__"]
