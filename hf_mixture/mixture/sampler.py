"""Which sequence is global sample ``n``, and what tokens it holds (numpy only).

Two halves, each small:

*Decisions* (:class:`MixtureSampler`, main process only).  Global sample ``n``
draws a counter-based uniform ``u(seed, n)`` (:func:`counter_uniform`, a
splitmix64 hash: no generator state) and picks component ``c`` by
``searchsorted`` on the cumulative weights in force at ``n``.  Its *key* is
``(c, k)`` where ``k`` counts the earlier samples that chose ``c``.  The whole
state is therefore ``n``, one counter per component and the weights history:
saving and restoring it is O(1) and exact, with no fast-forwarding.

*Materialization* (:class:`PackedStreams`, any process).  Component ``c`` is a
virtual token stream: its documents in a seeded per-epoch permutation
(``PCG64([seed, c, epoch])``), each followed by EOS.  Sequence ``k`` of epoch
``e`` is stream tokens ``[k*L, (k+1)*L)``; per-epoch cumulative lengths and
``searchsorted`` find its documents, and the tokens are copied out of the
store's memory maps.  The stream tail that cannot fill a whole sequence is
left out of that epoch.

Partition of a global batch (``B`` = per-rank batch size, ``W`` = world size)::

    global batch g  =  samples [g*B*W, (g+1)*B*W)
    rank r          =  samples [g*B*W + r*B, g*B*W + (r+1)*B)

Every rank decides all ``B*W`` samples (cheap: a few vectorized numpy ops) so
all ranks keep the same counters, and materializes only its own ``B``.

>>> u = counter_uniform(seed=0, start=0, count=4)
>>> bool(((u >= 0) & (u < 1)).all()), bool(counter_uniform(0, 2, 1)[0] == u[2])
(True, True)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import HFMixtureError
from .live import LiveMixture, check_same_run

logger = logging.getLogger(__name__)

STATE_FORMAT = "hf_mixture.sampler_state"
STATE_VERSION = 1
_MASK64 = (1 << 64) - 1
NO_CAP = np.iinfo(np.int64).max


# -- pure functions: decisions ----------------------------------------------------------------
def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on a uint64 array (wrapping arithmetic is intended)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def counter_uniform(seed: int, start: int, count: int) -> np.ndarray:
    """Uniforms in [0, 1) for global samples ``start .. start+count-1``.

    A pure function of ``(seed, n)``: any sample's draw is computed directly,
    which is what makes resume O(1) and a weight change apply immediately.
    """
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([int(seed) & _MASK64], dtype=np.uint64))
        n = np.arange(start, start + count, dtype=np.uint64) + np.uint64(1)
        z = _splitmix64(key + n * np.uint64(0x9E3779B97F4A7C15))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def cumulative_weights(weights: np.ndarray) -> np.ndarray:
    """Cumulative weights whose last positive entry is exactly 1.0.

    Setting it exactly (not ``cumsum / sum``, which may end at 0.9999999999)
    guarantees ``searchsorted(cw, u, "right")`` never lands on a zero-weight
    component for any ``u < 1``.
    """
    w = np.asarray(weights, dtype=np.float64)
    cw = np.cumsum(w) / w.sum()
    last = int(np.flatnonzero(w > 0)[-1])
    cw[last:] = 1.0
    return cw


def choose_components(u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Component of each uniform ``u``: ``c`` with probability ``weights[c] / sum``."""
    return np.searchsorted(cumulative_weights(weights), u, side="right").astype(np.int64)


def occurrence_rank(choices: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same value.

    >>> occurrence_rank(np.array([2, 0, 2, 2, 0])).tolist()
    [0, 0, 1, 2, 1]
    """
    m = len(choices)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(choices, kind="stable")
    sorted_choices = choices[order]
    starts = np.flatnonzero(np.r_[True, sorted_choices[1:] != sorted_choices[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, m]))
    rank = np.empty(m, dtype=np.int64)
    rank[order] = np.arange(m) - group_start
    return rank


# -- materialization ------------------------------------------------------------------------
@dataclass
class _Epoch:
    cum: np.ndarray      # int64 [docs + 1]: stream offset of each permuted doc (EOS included)
    starts: np.ndarray   # int64 [docs]: offset of each permuted doc in its token array
    lengths: np.ndarray  # int64 [docs]: tokens of each permuted doc (EOS excluded)
    mid: np.ndarray      # int32 [docs]: which memory map (store component) holds it


class PackedStreams:
    """Per-component packed token streams over a token store.

    ``components`` is what :meth:`Mixture.resolve` returns: one entry per
    component with ``parts = ((store_component, doc_indices), ...)``.  The
    object pickles without its memory maps and caches, so DataLoader workers
    reopen them.

    Sequences are copied out of *windows*: a run of consecutive sequences of one
    component-epoch (about ``window_tokens`` tokens) gathered from the memory
    maps in one vectorized step and cached.  A component's sequences are drawn
    in order (``k = 0, 1, 2, ...``), so each window serves many batches and a
    batch costs one row copy per sequence.

    >>> streams = PackedStreams(store, mixture.resolve(store), seq_len=8, seed=0)  # doctest: +SKIP
    >>> streams.materialize(np.array([0]), np.array([5])).shape                    # doctest: +SKIP
    (1, 8)
    """

    # 2**17 tokens: the gather's fixed costs vanish, and a window (256 KiB of uint16)
    # stays in the CPU cache while its rows are copied (benchmarks/sampler.py).
    window_tokens = 1 << 17
    # Measured on the playground clusters: slices 1.1 vs gather 2.3 ns/token at 330 tokens
    # per document, 1.9 vs 1.2 at 210, 4.0 vs 1.4 at 60.
    _SLICES_FROM_TOKENS_PER_DOC = 256
    _CACHED_PER_COMPONENT = 2

    def __init__(self, store: Any, components: Sequence[Any], *, seq_len: int, seed: int,
                 split: str = "train", eos_token_id: int | None = None):
        if isinstance(seq_len, bool) or not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
            raise HFMixtureError(f"seq_len must be an integer >= 1, got {seq_len!r}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise HFMixtureError(f"seed must be an integer >= 0, got {seed!r}.")
        self.store_path = str(Path(store.path).resolve())  # workers may start elsewhere
        self.split = split
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        eos = store.eos_token_id if eos_token_id is None else eos_token_id
        if eos is None:
            raise HFMixtureError(f"Token store '{store.path}' records no eos_token_id, which the "
                                 "sampler needs between documents; pass eos_token_id.")
        self.eos_token_id = int(eos)
        self.dtype = np.dtype(store.dtype)
        self.names = [c.name for c in components]
        self.parts = [[(str(p), np.asarray(idx, dtype=np.int64)) for p, idx in c.parts]
                      for c in components]
        # Facts every process needs, computed once here (offsets are small, read fully).
        self.num_docs = np.zeros(len(components), dtype=np.int64)
        self.stream_tokens = np.zeros(len(components), dtype=np.int64)
        for c, parts in enumerate(self.parts):
            for part, idx in parts:
                off = store.offsets(part, split)
                self.num_docs[c] += len(idx)
                self.stream_tokens[c] += int((off[idx + 1] - off[idx]).sum()) + len(idx)
        self.seqs_per_epoch = self.stream_tokens // self.seq_len
        for c, name in enumerate(self.names):
            if self.num_docs[c] == 0:
                raise HFMixtureError(f"Component {name!r} has no document in split {split!r} of "
                                     f"token store '{store.path}'.")
            if self.seqs_per_epoch[c] == 0:
                raise HFMixtureError(
                    f"Component {name!r} holds {int(self.stream_tokens[c])} tokens (EOS "
                    f"included) in split {split!r}, fewer than seq_len={self.seq_len}, so it "
                    "cannot fill one sequence; lower seq_len or give it more documents.")
        self.rows_per_window = max(1, self.window_tokens // self.seq_len)
        self._spe_list = [int(x) for x in self.seqs_per_epoch]
        self._store = store
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._maps: list[np.ndarray] | None = None
        self._docs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._epochs: OrderedDict[tuple[int, int], _Epoch] = OrderedDict()
        self._windows: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._arange = np.zeros(0, dtype=np.int64)

    # Memory maps and caches stay in the process that made them.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_store", "_maps", "_docs", "_epochs", "_windows", "_arange"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._store = None
        self._reset_caches()

    def _open(self) -> None:
        if self._store is None:
            from ..formats.token_store import TokenStore

            self._store = TokenStore(self.store_path)
        maps: list[np.ndarray] = []
        where: dict[str, int] = {}
        docs = []
        for parts in self.parts:
            starts, lengths, mids = [], [], []
            for part, idx in parts:
                if part not in where:
                    where[part] = len(maps)
                    # A plain ndarray view: np.memmap's subclass hooks cost microseconds per slice.
                    maps.append(self._store.tokens(part, self.split).view(np.ndarray))
                off = self._store.offsets(part, self.split)
                starts.append(off[idx])
                lengths.append(off[idx + 1] - off[idx])
                mids.append(np.full(len(idx), where[part], dtype=np.int32))
            docs.append((np.concatenate(starts), np.concatenate(lengths), np.concatenate(mids)))
        self._maps, self._docs = maps, docs

    def permutation(self, c: int, epoch: int) -> np.ndarray:
        """The order of component ``c``'s documents in ``epoch`` (a pure function of the seed)."""
        rng = np.random.Generator(np.random.PCG64([self.seed, int(c), int(epoch)]))
        return rng.permutation(int(self.num_docs[c]))

    def _epoch(self, c: int, e: int) -> _Epoch:
        key = (c, e)
        ep = self._epochs.get(key)
        if ep is not None:
            return ep
        if self._docs is None:
            self._open()
        starts, lengths, mids = self._docs[c]
        perm = self.permutation(c, e)
        plen = lengths[perm]
        cum = np.zeros(len(perm) + 1, dtype=np.int64)
        np.cumsum(plen + 1, out=cum[1:])
        ep = self._epochs[key] = _Epoch(cum, starts[perm], plen, mids[perm])
        _evict(self._epochs, c, self._CACHED_PER_COMPONENT)
        return ep

    def _window(self, c: int, e: int, w: int) -> np.ndarray:
        """Sequences ``[w*S, (w+1)*S)`` of component ``c``, epoch ``e``: a ``(rows, L)`` array."""
        L = self.seq_len
        ep = self._epoch(c, e)
        k0 = w * self.rows_per_window
        k1 = min(k0 + self.rows_per_window, int(self.seqs_per_epoch[c]))
        a, b = k0 * L, k1 * L                       # the stream range to copy
        cum = ep.cum
        first = int(np.searchsorted(cum, a, side="right")) - 1
        last = int(np.searchsorted(cum, b - 1, side="right")) - 1
        doc_start = cum[first:last + 1]
        doc_end = cum[first + 1:last + 2]           # one past each doc's EOS
        piece_start = doc_start.copy()
        piece_start[0] = a
        piece_end = doc_end.copy()
        piece_end[-1] = min(int(doc_end[-1]), b)
        plen = piece_end - piece_start              # tokens of each piece, EOS included
        src = ep.starts[first:last + 1] + (piece_start - doc_start)
        has_eos = piece_end == doc_end
        mid = ep.mid[first:last + 1]
        maps = self._maps
        n = b - a
        # Slice copies cost per document, a gather per token: slices win for long documents
        # (and are the only way across several memory maps), the gather for short ones.
        if n >= self._SLICES_FROM_TOKENS_PER_DOC * len(plen) or not (mid == mid[0]).all():
            eos_piece = np.array([self.eos_token_id], dtype=self.dtype)
            chunks: list[np.ndarray] = []
            add = chunks.append
            for m, s, k, eos in zip(mid.tolist(), src.tolist(), (plen - has_eos).tolist(),
                                    has_eos.tolist()):
                add(maps[m][s:s + k])
                if eos:
                    add(eos_piece)
            flat = np.concatenate(chunks)
        else:
            # Token j of the window is maps[m][idx[j]], idx = its piece's source + offset.
            offset = np.cumsum(plen) - plen
            if len(self._arange) < n:  # kept: a fresh 1 MiB array per window costs page faults
                self._arange = np.arange(n, dtype=np.int64)
            idx = np.repeat(src - offset, plen)
            idx += self._arange[:n]
            eos_at = (offset + plen - 1)[has_eos]
            idx[eos_at] = 0  # the EOS slot would read one past its doc (maybe past the array)
            flat = maps[int(mid[0])].take(idx)
            flat[eos_at] = self.eos_token_id
        window = flat.reshape(k1 - k0, L)
        self._windows[(c, e, w)] = window
        _evict(self._windows, c, self._CACHED_PER_COMPONENT)
        return window

    def materialize(self, comps: np.ndarray, ks: np.ndarray, out: np.ndarray | None = None
                    ) -> np.ndarray:
        """Token ids ``(len(comps), seq_len)`` of sequences ``ks[i]`` of components ``comps[i]``.

        ``out`` (int64 by default, or the store's dtype to ship fewer bytes) is filled in place.
        """
        comps = np.asarray(comps).tolist()
        ks = np.asarray(ks).tolist()
        if out is None:
            out = np.empty((len(comps), self.seq_len), dtype=np.int64)
        # Plain Python ints: for a batch of a few rows they beat numpy's per-call overhead.
        spe, per = self._spe_list, self.rows_per_window
        cache = self._windows
        for j, (c, k) in enumerate(zip(comps, ks)):
            e, within = divmod(k, spe[c])
            w, r = divmod(within, per)
            window = cache.get((c, e, w))
            if window is None:
                window = self._window(c, e, w)
            out[j] = window[r]
        return out


def _evict(cache: OrderedDict, component: int, keep: int) -> None:
    """Drop the oldest entries of ``component`` beyond ``keep`` (keys start with it)."""
    mine = [key for key in cache if key[0] == component]
    for key in mine[:-keep]:
        del cache[key]


# -- decisions with state -------------------------------------------------------------------
class BatchKeys(NamedTuple):
    """The keys of one rank's share of global batch ``batch``: sequence ``ks[i]`` of ``comps[i]``.

    ``generation`` counts the weight changes the sampler had seen when it decided them.
    """

    batch: int
    comps: np.ndarray
    ks: np.ndarray
    generation: int = 0


class _Cursor(NamedTuple):
    sample: int
    counts: np.ndarray
    live_mark: tuple[int, int, int]


class MixtureSampler:
    """The main-process state of the sampling decisions.

    It decides keys for one global batch at a time (:meth:`dispatch`), keeps a
    snapshot at the start of every batch handed to a DataLoader but not yet to
    the training loop, and on a weight change (:meth:`LiveMixture.set_weights`)
    rolls back to the consumed boundary and re-decides those batches with the
    new weights (:meth:`truth` then tells the loader what each batch must hold).

    ``caps[c]`` is the number of sequences component ``c`` may give
    (``max_epochs x sequences per epoch``); a component at its cap gets weight 0
    and the others are renormalized.  When every component with weight is at
    its cap the sampler stops (:meth:`dispatch` returns ``None``).
    """

    def __init__(self, live: LiveMixture, seqs_per_epoch: np.ndarray, *, seed: int,
                 caps: np.ndarray | None = None, identity: Mapping[str, Any] | None = None):
        self.live = live
        self.seq_len = live.seq_len
        self.seed = int(seed)
        self.seqs_per_epoch = np.asarray(seqs_per_epoch, dtype=np.int64)
        C = len(live.names)
        self.caps = (np.full(C, NO_CAP, dtype=np.int64) if caps is None
                     else np.asarray(caps, dtype=np.int64))
        self.identity = dict(identity or {})
        self.counts = np.zeros(C, dtype=np.int64)
        self.sample = 0
        self.batch_size = 1
        self.rank = 0
        self.world_size = 1
        self._pending: dict[int, tuple[_Cursor, BatchKeys | None]] = {}
        self._consumed = 0      # next batch index the training loop will receive
        self._next = 0          # next batch index to decide
        self._warned: set[int] = set()
        self._stopped_logged = False
        self._block: tuple[int, np.ndarray, np.ndarray] = _NO_BLOCK
        self.generation = 0     # bumped by every weight change
        live.attach(self)

    # -- the raw decision loop ------------------------------------------------------------
    # Decisions are computed ahead in blocks (a pure function of the state at the
    # block's start), so a batch costs a slice and a bincount; a block ends early at a
    # stage boundary or where a component reaches its cap, and any rewind drops it.
    _BLOCK = 4096

    def _compute_block(self) -> bool:
        n = self.sample
        weights = self.live.weights_from(n)
        active = self.counts < self.caps
        for c in np.flatnonzero(~active).tolist():
            if c not in self._warned:
                self._warned.add(c)
                logger.warning(
                    "Component %r reached its max_epochs cap (%d sequences) at sample %d; its "
                    "weight is 0 from here on and the others are renormalized.",
                    self.live.names[c], int(self.caps[c]), n)
        w = weights * active
        if not w.sum() > 0:
            if not self._stopped_logged:
                logger.warning("Every component with weight > 0 reached its max_epochs cap at "
                               "sample %d; the sampler stops.", n)
                self._stopped_logged = True
            return False
        nxt = self.live.next_stage_sample()
        size = self._BLOCK if nxt is None else min(self._BLOCK, nxt - n)
        choice = choose_components(counter_uniform(self.seed, n, size), w)
        ks = self.counts[choice] + occurrence_rank(choice)
        # The block stops after a component's last allowed sequence: from the next sample
        # on, the weights are renormalized without it, which changes every choice.
        last = ks >= self.caps[choice] - 1
        if last.any():
            cut = int(np.argmax(last)) + 1
            choice, ks = choice[:cut], ks[:cut]
        self._block = (n, choice, ks)
        return True

    def choose(self, count: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """Decide the next ``count`` samples: ``(comps, ks, complete)``; advances the state.

        ``complete`` is False when every component with weight reached its cap first.
        """
        comps_out, ks_out = [], []
        end = self.sample + int(count)
        C = len(self.counts)
        while self.sample < end:
            start, choice, ks = self._block
            i = self.sample - start
            if not 0 <= i < len(choice):
                if not self._compute_block():
                    return _cat(comps_out), _cat(ks_out), False
                continue
            j = min(len(choice), i + end - self.sample)
            comps_out.append(choice[i:j])
            ks_out.append(ks[i:j])
            self.counts += np.bincount(choice[i:j], minlength=C)
            self.sample += j - i
        return _cat(comps_out), _cat(ks_out), True

    def _cursor(self) -> _Cursor:
        return _Cursor(self.sample, self.counts.copy(), self.live.mark())

    def _restore(self, cursor: _Cursor) -> None:
        self._block = _NO_BLOCK
        self.sample = cursor.sample
        self.counts = cursor.counts.copy()
        self.live.restore(cursor.live_mark)

    # -- batches --------------------------------------------------------------------------
    def bind(self, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        """Set the per-rank batch size and this process' place among ``world_size`` ranks."""
        for name, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1),
                                 ("rank", rank, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise HFMixtureError(f"{name} must be an integer >= {low}, got {value!r}.")
        if rank >= world_size:
            raise HFMixtureError(f"rank {rank} is outside world_size {world_size}.")
        self.rewind_to_consumed()
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)

    def _decide_batch(self, batch: int) -> BatchKeys | None:
        cursor = self._cursor()
        comps, ks, complete = self.choose(self.batch_size * self.world_size)
        if not complete:  # a partial global batch would leave ranks unequal: stop before it
            self._restore(cursor)
            self._pending[batch] = (cursor, None)
            return None
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        # Views into the decision block, which is never written after it is made.
        keys = BatchKeys(batch, comps[mine], ks[mine], self.generation)
        self._pending[batch] = (cursor, keys)
        return keys

    def dispatch(self) -> BatchKeys | None:
        """Decide the next batch for this rank (``None`` once every component is exhausted)."""
        batch = self._next
        if batch in self._pending and self._pending[batch][1] is None:
            return None
        keys = self._decide_batch(batch)
        if keys is not None:
            self._next += 1
        return keys

    def truth(self, batch: int) -> BatchKeys | None:
        """The keys batch ``batch`` must hold now (after any weight change since dispatch)."""
        entry = self._pending.get(batch)
        return entry[1] if entry is not None else None

    def mark_consumed(self, batch: int) -> None:
        """Batch ``batch`` goes to the training loop: a change now applies from the next one."""
        if batch != self._consumed:
            raise RuntimeError(f"batch {batch} consumed out of order (expected {self._consumed})")
        self._pending.pop(batch, None)
        self._consumed = batch + 1

    def rewind_to_consumed(self) -> None:
        """Forget batches decided but never handed to the training loop."""
        entry = self._pending.get(self._consumed)
        if entry is not None:
            self._restore(entry[0])
        self._pending.clear()
        self._next = self._consumed

    # -- the LiveSampler protocol: called by LiveMixture.set_weights only ------------------
    def rewind_for_change(self) -> int:
        """Roll back to the consumed boundary and drop the decisions made ahead; the sample."""
        entry = self._pending.get(self._consumed)
        if entry is not None:
            self._restore(entry[0])
        self._block = _NO_BLOCK  # decided ahead under the old weights
        self.generation += 1
        return self.sample

    def replay(self) -> None:
        """Decide the batches handed to a DataLoader but not yet consumed again."""
        # A batch found impossible under the old weights may be possible under the new ones.
        entry = self._pending.get(self._next)
        if entry is not None and entry[1] is None:
            del self._pending[self._next]
        for batch in range(self._consumed, self._next):
            if self._decide_batch(batch) is None:
                for later in range(batch + 1, self._next):
                    self._pending.pop(later, None)
                self._next = batch
                break

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The exact state at the training loop's position: small, JSON-able, data-free."""
        entry = self._pending.get(self._consumed)
        cursor = entry[0] if entry is not None else self._cursor()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            **self.identity,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "components": list(self.live.names),
            "sample": int(cursor.sample),
            "tokens": int(cursor.sample) * self.seq_len,
            "counts": [int(x) for x in cursor.counts],
            **self.live.history_state(cursor.live_mark),
        }

    def load_state_dict(self, state: Mapping[str, Any], where: str = "the sampler state") -> None:
        """Restore :meth:`state_dict`'s output; a state of another mixture/store/seq_len is refused."""
        if not isinstance(state, Mapping):
            raise HFMixtureError(f"{where} must be a mapping, got {type(state).__name__}.")
        if state.get("format") != STATE_FORMAT:
            raise HFMixtureError(f"{where}: field 'format' is {state.get('format')!r}, expected "
                                 f"{STATE_FORMAT!r}.")
        if state.get("version") != STATE_VERSION:
            raise HFMixtureError(f"{where}: field 'version' is {state.get('version')!r}; this "
                                 f"hf_mixture reads version {STATE_VERSION}.")
        mine = {**self.identity, "seed": self.seed, "seq_len": self.seq_len,
                "components": list(self.live.names)}
        check_same_run(state, mine, where, "sampler")
        counts = state.get("counts")
        if (not isinstance(counts, list) or len(counts) != len(self.counts)
                or not all(isinstance(x, int) and x >= 0 for x in counts)):
            raise HFMixtureError(f"{where}: field 'counts' must be {len(self.counts)} integers "
                                 f">= 0, got {counts!r}.")
        sample = state.get("sample")
        if not isinstance(sample, int) or sample != sum(counts):
            raise HFMixtureError(f"{where}: field 'sample' is {sample!r}, not the sum of field "
                                 f"'counts' ({sum(counts)}): the state is corrupt.")
        self.live.load_history_state(state, where)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.sample = sample
        self._block = _NO_BLOCK
        self._pending.clear()
        self._consumed = self._next = 0
        self._stopped_logged = False


_NO_BLOCK: tuple[int, np.ndarray, np.ndarray] = (-1, np.zeros(0, np.int64), np.zeros(0, np.int64))


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
