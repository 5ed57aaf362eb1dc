"""A mixture over ``datasets`` streaming sources that are not tokenized yet.

:class:`MixtureIterableDataset` tokenizes text on the fly and packs it into
fixed-length sequences, with the same weights and state API as
:class:`~hf_mixture.mixture.MixtureDataset`: sample ``n`` comes from source
``c`` chosen by the counter-based uniform ``u(seed, n)`` on the weights in force
(``.live.set_weights`` applies from the next sample not yet yielded, i.e. the
next batch), and each sequence is filled from one source only, its documents
joined with EOS.

The state is exact and small: the sample counter, the weights history and, per
source, the epoch plus ``datasets``' own ``state_dict()`` taken just before the
document at the head of the packing buffer and the number of that document's
tokens already used.  Resuming re-reads and re-tokenizes at most one document
per source.  (``datasets`` cannot restore the content of shuffle buffers:
resume is exact for unshuffled sources.)

A source that runs out starts its next epoch (``set_epoch``), dropping the
tail that could not fill a sequence — as the token-store path does; with a
mixture, its ``max_epochs`` caps the source.  Tokenizing happens where the
sequences are consumed: use ``num_workers=0``.  For several ranks or for
speed, tokenize into a token store (``hf-mixture tokenize``) and use
:class:`~hf_mixture.mixture.MixtureDataset`.

>>> from datasets import load_dataset
>>> sources = {"code": load_dataset("json", data_files="code.jsonl", split="train", streaming=True),
...            "prose": load_dataset("parquet", data_files="prose.parquet", split="train",
...                                  streaming=True)}                       # doctest: +SKIP
>>> data = MixtureIterableDataset(sources, tokenizer, seq_len=512,
...                               weights={"code": 0.3, "prose": 0.7})      # doctest: +SKIP
>>> loader = torch.utils.data.DataLoader(data, batch_size=8)               # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from ..errors import HFMixtureError
from .live import LiveMixture, check_same_run
from .sampler import choose_components, counter_uniform

STATE_FORMAT = "hf_mixture.streaming_state"
STATE_VERSION = 1


class _Source:
    """One streaming source: its packing buffer and its exact position."""

    def __init__(self, name: str, dataset: Any, tokenize, eos: int, text_column: str):
        self.name, self.tokenize, self.eos, self.text_column = name, tokenize, eos, text_column
        self._pristine = dataset
        self.epoch = 0
        self._start(None, 0)

    def _start(self, state: dict | None, offset: int) -> None:
        """Iterate from ``state`` (None: the epoch's start), skipping ``offset`` tokens."""
        self.ds = copy.deepcopy(self._pristine)
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(self.epoch)
        if state is not None:
            self.ds.load_state_dict(state)
        self._it: Iterator | None = None
        self._after_last = state            # datasets' state after the last document read
        # Documents read but not all used: (state before the document, its tokens + EOS).
        self.buffer: deque[tuple[dict | None, np.ndarray]] = deque()
        self.offset = offset                # tokens of buffer[0] (read or not yet) already used

    def position(self) -> dict[str, Any]:
        head = self.buffer[0][0] if self.buffer else self._after_last
        return {"epoch": self.epoch, "state": copy.deepcopy(head), "offset": self.offset}

    def _read(self) -> bool:
        if self._it is None:
            self._it = iter(self.ds)
        before = self._after_last
        try:
            example = next(self._it)
        except StopIteration:
            return False
        self._after_last = self.ds.state_dict()
        text = example.get(self.text_column) if isinstance(example, Mapping) else None
        if not isinstance(text, str):
            raise HFMixtureError(f"Source {self.name!r}: an example has no text in column "
                                 f"{self.text_column!r} (keys: {', '.join(map(str, example))}).")
        ids = np.asarray(self.tokenize(text), dtype=np.int64)
        self.buffer.append((before, np.r_[ids, self.eos]))
        return True

    def take(self, n: int) -> np.ndarray | None:
        """The next ``n`` tokens of the stream; None when the epoch ends first."""
        while sum(len(t) for _, t in self.buffer) - self.offset < n:
            if not self._read():
                return None
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            _, tokens = self.buffer[0]
            k = min(n - filled, len(tokens) - self.offset)
            out[filled:filled + k] = tokens[self.offset:self.offset + k]
            filled += k
            self.offset += k
            if self.offset == len(tokens):
                self.buffer.popleft()
                self.offset = 0
        return out

    def next_epoch(self) -> None:
        self.epoch += 1
        self._start(None, 0)

    def restore(self, position: Mapping[str, Any]) -> None:
        self.epoch = int(position["epoch"])
        self._start(position.get("state"), int(position.get("offset", 0)))


class MixtureIterableDataset(torch.utils.data.IterableDataset):
    """Packed sequences mixed from ``datasets`` streaming sources, tokenized on the fly.

    Args:
        sources: name -> ``datasets.IterableDataset`` (or any iterable of dicts with
            ``text_column``) — typically ``load_dataset(..., streaming=True)``.
        tokenizer: a Hugging Face tokenizer (called without special tokens) or a
            function text -> token ids.
        seq_len: tokens per sequence (``labels`` is a copy of ``input_ids``).
        mixture: a :class:`~hf_mixture.mixture.Mixture` whose component names are
            the source names (weights, temperature, stages, ``max_epochs``, seed);
            or give ``weights`` (by source name; uniform by default) and ``seed``.
        eos_token_id: defaults to ``tokenizer.eos_token_id``.
        total_tokens: the run's length, to place stages given as fractions.

    >>> data = MixtureIterableDataset({"a": ds_a, "b": ds_b}, tok, seq_len=256)  # doctest: +SKIP
    >>> data.live.set_weights({"a": 3, "b": 1})                                 # doctest: +SKIP
    >>> state = data.state_dict()                                              # doctest: +SKIP
    """

    def __init__(self, sources: Mapping[str, Any], tokenizer: Any, *, seq_len: int,
                 mixture: Any = None, weights: Mapping[str, float] | None = None,
                 seed: int | None = None, text_column: str = "text",
                 eos_token_id: int | None = None, total_tokens: int | None = None):
        from .mixture import Component, Mixture

        if not isinstance(sources, Mapping) or not sources:
            raise HFMixtureError("sources must be a non-empty dict of name -> streaming dataset.")
        names = list(sources)
        if mixture is None:
            given = dict(weights) if weights is not None else {n: 1.0 for n in names}
            unknown = [k for k in given if k not in names]
            if unknown:
                raise HFMixtureError(f"weights name the unknown source {unknown[0]!r}; the "
                                     f"sources are {', '.join(names)}.")
            mixture = Mixture([Component(n, weight=given.get(n, 0.0)) for n in names],
                              seed=0 if seed is None else seed)
        elif weights is not None:
            raise HFMixtureError("Give either mixture or weights, not both.")
        if list(mixture.component_names) != names:
            raise HFMixtureError(f"The mixture's components {mixture.component_names} must be "
                                 f"the source names {names}, in the same order.")
        self.seed = mixture.seed if seed is None else int(seed)
        self.seq_len = int(seq_len)
        self.live = LiveMixture.from_mixture(mixture, seq_len=seq_len, total_tokens=total_tokens)
        self.live.attach(self)
        self.fingerprint = mixture.fingerprint
        self.max_epochs = [c.max_epochs for c in mixture.components]
        eos = getattr(tokenizer, "eos_token_id", None) if eos_token_id is None else eos_token_id
        if eos is None:
            raise HFMixtureError("The tokenizer has no eos_token_id; pass eos_token_id.")
        if callable(tokenizer) and hasattr(tokenizer, "eos_token_id"):  # a Hugging Face tokenizer
            def tokenize(text: str) -> list[int]:
                return tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            tokenize = tokenizer
        self._sources = [_Source(n, sources[n], tokenize, int(eos), text_column) for n in names]
        self.sample = 0
        self.counts = np.zeros(len(names), dtype=np.int64)
        self.exhausted = np.zeros(len(names), dtype=bool)

    # -- the LiveSampler protocol: nothing is decided ahead, so nothing to redo -------------
    def rewind_for_change(self) -> int:
        """The next sample (called by LiveMixture.set_weights)."""
        return self.sample

    def replay(self) -> None:
        """Nothing to decide again (called by LiveMixture.set_weights)."""

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if torch.utils.data.get_worker_info() is not None:
            raise HFMixtureError("MixtureIterableDataset tokenizes in the process that reads "
                                 "it: use num_workers=0 (or a token store for parallel loading).")
        while True:
            sample = self.next_sequence()
            if sample is None:
                return
            ids = torch.from_numpy(sample)
            yield {"input_ids": ids, "labels": ids.clone()}

    def next_sequence(self) -> np.ndarray | None:
        """The next packed sequence (None once every source with weight is exhausted)."""
        while True:
            n = self.sample
            w = self.live.weights_from(n) * ~self.exhausted
            if not w.sum() > 0:
                return None
            c = int(choose_components(counter_uniform(self.seed, n, 1), w)[0])
            source = self._sources[c]
            tokens = source.take(self.seq_len)
            if tokens is None:  # the source ran out: next epoch, or capped
                cap = self.max_epochs[c]
                if cap is not None and source.epoch + 1 >= cap:
                    self.exhausted[c] = True
                source.next_epoch()
                continue  # decide sample n again (same u, renormalized if capped)
            self.counts[c] += 1
            self.sample += 1
            return tokens

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Exact position: sample counter, weights history, and each source's place."""
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, "seed": self.seed,
            "seq_len": self.seq_len, "components": list(self.live.names),
            "mixture_fingerprint": self.fingerprint, "sample": self.sample,
            "counts": self.counts.tolist(), "exhausted": self.exhausted.tolist(),
            **self.live.history_state(),
            "sources": {s.name: s.position() for s in self._sources},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        where = "the streaming state"
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise HFMixtureError(f"{where}: field 'format' must be {STATE_FORMAT!r}.")
        mine = {"version": STATE_VERSION, "seed": self.seed, "seq_len": self.seq_len,
                "components": list(self.live.names), "mixture_fingerprint": self.fingerprint}
        check_same_run(state, mine, where, "dataset")
        positions = state.get("sources")
        if not isinstance(positions, Mapping) or set(positions) != set(self.live.names):
            raise HFMixtureError(f"{where}: field 'sources' must hold the sources "
                                 f"{', '.join(self.live.names)}.")
        self.live.load_history_state(state, where)
        self.sample = int(state["sample"])
        self.counts = np.asarray(state["counts"], dtype=np.int64)
        self.exhausted = np.asarray(state["exhausted"], dtype=bool)
        for source in self._sources:
            source.restore(positions[source.name])
