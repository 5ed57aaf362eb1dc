"""Throughput of a training run: tokens/s, MFU and the share of time spent waiting for data.

:func:`throughput_callback_class` gives the ``TrainerCallback`` that logs ``perf/*`` beside the
loss and writes ``throughput.json``; the trainer of :mod:`hf_mixture.train` times its batch
iterator with :class:`TimedIterator`.  MFU counts :func:`model_flops_per_token` against the
bf16 peak of the device (:data:`PEAK_BF16_FLOPS`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Peak dense bf16 tensor-core FLOP/s, for MFU (vendor data sheets, no sparsity).  A name
# matches its longest key: "H100 PCIe" (756) before "H100" (the SXM part, 989).
PEAK_BF16_FLOPS = {"H100": 989e12, "H100 PCIe": 756e12, "H200": 989e12, "A100": 312e12,
                   "L40S": 362e12, "GH200": 989e12, "B200": 2250e12}


def model_flops_per_token(config: Any, seq_len: int) -> float:
    """Training FLOPs per token: ``6 N + 12 L H S`` (PaLM, appendix B).

    ``N`` counts the matmul parameters (every layer and the LM head; the input
    embedding lookup does no FLOPs), ``L`` layers, ``H`` the attention width
    (heads x head dim), ``S`` the sequence length (the attention scores).

    >>> from transformers import LlamaConfig
    >>> c = LlamaConfig(vocab_size=100, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
    ...                 num_attention_heads=2, num_key_value_heads=1)
    >>> model_flops_per_token(c, seq_len=4)   # 6 * (layer 576 + head 800) + 12 * 1 * 8 * 4
    8640.0
    """
    h = config.hidden_size
    heads = config.num_attention_heads
    kv = config.num_key_value_heads or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2          # q, o and k, v
    mlp = 3 * h * config.intermediate_size                            # gate, up, down
    n = config.num_hidden_layers * (attn + mlp) + h * config.vocab_size  # + LM head
    return float(6 * n + 12 * config.num_hidden_layers * heads * head_dim * seq_len)


class TimedIterator:
    """Wraps the Trainer's batch iterator and adds the time spent waiting in ``next``."""

    def __init__(self, iterator: Iterator, sink: Any):  # sink: a ThroughputCallback
        self.iterator = iterator
        self.sink = sink

    def __iter__(self) -> TimedIterator:
        return self

    def __next__(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self.iterator)
        finally:
            self.sink.data_seconds += time.perf_counter() - start


def throughput_callback_class():
    from transformers import TrainerCallback

    class ThroughputCallback(TrainerCallback):
        """Tokens/s, MFU and the share of time spent waiting for data, logged as ``perf/*``.

        ``data_seconds`` is the time the training loop spent inside ``next(batches)``
        (the trainer adds to it); the share is over the time between the first and the
        last optimizer step.  On a GPU the loop runs ahead of the device, so this is
        an upper bound on the time the device waits for data.
        """

        def __init__(self, *, flops_per_token: float, tokens_per_step: int,
                     peak_flops: float | None, output_dir: str | None = None,
                     warmup_steps: int = 2):
            self.flops_per_token = flops_per_token
            self.tokens_per_step = tokens_per_step
            self.peak_flops = peak_flops
            self.output_dir = output_dir
            self.warmup_steps = warmup_steps  # the first steps pay for allocation and warm-up
            self.data_seconds = 0.0
            self.world_size = 1
            self._first = 0
            self._t0: float | None = None
            self._d0 = 0.0
            self._s0 = 0
            self.summary: dict[str, Any] = {}

        def _sync(self) -> None:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()

        def on_step_end(self, args, state, control, **kwargs):
            if self._t0 is None and state.global_step >= self._first + self.warmup_steps:
                self._sync()
                self._t0, self._d0, self._s0 = (time.perf_counter(), self.data_seconds,
                                                state.global_step)

        def measure(self, state) -> dict[str, Any]:
            if self._t0 is None or state.global_step <= self._s0:
                return {}
            self._sync()
            elapsed = time.perf_counter() - self._t0
            steps = state.global_step - self._s0
            tokens_per_second = steps * self.tokens_per_step / elapsed
            out = {"perf/tokens_per_second": tokens_per_second,
                   "perf/step_seconds": elapsed / steps,
                   "perf/data_wait_fraction": (self.data_seconds - self._d0) / elapsed}
            if self.peak_flops:
                out["perf/mfu"] = (tokens_per_second * self.flops_per_token
                                   / (self.peak_flops * self.world_size))
            return out

        def on_train_begin(self, args, state, control, **kwargs):
            self.world_size = max(1, int(args.world_size))
            self._first = int(state.global_step)   # a resumed run starts counting here

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and "loss" in logs:
                logs.update(self.measure(state))

        def on_train_end(self, args, state, control, **kwargs):
            self.summary = {**self.measure(state), "measured_steps": state.global_step - self._s0,
                            "warmup_steps": self.warmup_steps,
                            "flops_per_token": self.flops_per_token,
                            "tokens_per_step": self.tokens_per_step,
                            "peak_flops_per_device": self.peak_flops,
                            "world_size": int(args.world_size)}
            if self.output_dir and state.is_world_process_zero:
                from ._io import atomic_write_json

                atomic_write_json(Path(self.output_dir) / "throughput.json", self.summary)

    return ThroughputCallback


def peak_flops_for_name(name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU by its device name, or None when it is not known.

    >>> peak_flops_for_name("NVIDIA H100 80GB HBM3"), peak_flops_for_name("NVIDIA H100 PCIe")
    (989000000000000.0, 756000000000000.0)
    >>> peak_flops_for_name("cpu") is None
    True
    """
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_FLOPS[key]
    return None


def peak_flops_for_device() -> float | None:
    """The bf16 peak of the local GPU by its name (``HF_MIXTURE_PEAK_FLOPS`` overrides), or None."""
    env = os.environ.get("HF_MIXTURE_PEAK_FLOPS")
    if env:
        return float(env)
    import torch

    if not torch.cuda.is_available():
        return None
    return peak_flops_for_name(torch.cuda.get_device_name())

