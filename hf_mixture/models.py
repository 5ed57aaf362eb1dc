"""Named model shapes, defined once: recipes and the search refer to them by name.

A shape is the architecture of a Llama (the ``LlamaConfig`` fields that fix its
parameters, plus the vocabulary it is stated at).  A recipe names one under
``model.shape`` and may override any field::

    model: {shape: 62m, max_position_embeddings: 2048, attn_implementation: sdpa}

the search names one in ``proxy_model``.  :func:`build_model` and
:func:`count_parameters` are the only model builder and parameter counter of the
library; :func:`shape_table` is the table the docs show.

>>> sorted(SHAPES)[:3]
['350m', '62m', 'cpu-1m']
>>> model_fields({"shape": "cpu-1m", "num_hidden_layers": 2})["num_hidden_layers"]
2
>>> count_parameters(build_model(model_fields({"shape": "cpu-1m"}), device="meta"))  # doctest: +SKIP
790208
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import HFMixtureError

# Model keys that are not LlamaConfig fields but say how to build the model.
BUILD_KEYS = ("attn_implementation",)
# The key of a model section that names a registered shape.
SHAPE_KEY = "shape"


@dataclass(frozen=True)
class ModelShape:
    """A named Llama architecture; ``fields`` are LlamaConfig fields (``vocab_size`` included:
    the vocabulary the parameter count is stated at; recipes and the search may replace it)."""

    name: str
    fields: Mapping[str, Any]
    description: str = field(default="")

    def parameters(self, vocab_size: int | None = None) -> int:
        """Parameters (tied weights once) at ``vocab_size`` (default: the shape's own)."""
        fields_ = dict(self.fields)
        if vocab_size is not None:
            fields_["vocab_size"] = vocab_size
        return count_parameters(build_model(fields_, device="meta", where=f"shape {self.name!r}"))


SHAPES: dict[str, ModelShape] = {}


def register_shape(name: str, fields: Mapping[str, Any], description: str = "") -> ModelShape:
    """Add a named shape; a name that is already registered is an error.

    >>> register_shape("62m", {"hidden_size": 8})
    Traceback (most recent call last):
    ...
    hf_mixture.errors.HFMixtureError: A model shape named '62m' is already registered.
    """
    if name in SHAPES:
        raise HFMixtureError(f"A model shape named {name!r} is already registered.")
    if "vocab_size" not in fields:
        raise HFMixtureError(f"Model shape {name!r} states no vocab_size (the vocabulary its "
                             "parameter count is stated at).")
    shape = ModelShape(name, dict(fields), description)
    SHAPES[name] = shape
    return shape


def get_shape(name: str) -> ModelShape:
    """The registered shape ``name``; an unknown name is one sentence listing the known ones."""
    if name not in SHAPES:
        raise HFMixtureError(f"Model shape {name!r} is not registered; known shapes: "
                             f"{', '.join(SHAPES)}.")
    return SHAPES[name]


# -- the shapes --------------------------------------------------------------------------------
# CPU proxies of the search (the vocabulary is the token store's; 8192 is the playground
# tokenizer's).  "cpu-1m" is the CPU default: ≈0.8M parameters, about two thirds of them
# the tied embedding, ≈5k tokens/s on 2 cores.
_CPU = {"vocab_size": 8192, "tie_word_embeddings": True}
register_shape("cpu-tiny", {**_CPU, "hidden_size": 64, "intermediate_size": 176,
                            "num_hidden_layers": 2, "num_attention_heads": 4,
                            "num_key_value_heads": 2},
               "recipes/tiny_cpu.yaml: the test suite's 2-process CPU run")
register_shape("cpu-1m", {**_CPU, "hidden_size": 64, "intermediate_size": 256,
                          "num_hidden_layers": 4, "num_attention_heads": 4,
                          "num_key_value_heads": 4},
               "the CPU search's default proxy")
register_shape("cpu-5m", {**_CPU, "hidden_size": 192, "intermediate_size": 512,
                          "num_hidden_layers": 6, "num_attention_heads": 6,
                          "num_key_value_heads": 6},
               "the CPU search's transfer-check proxy")
register_shape("cpu-20m", {**_CPU, "hidden_size": 384, "intermediate_size": 1024,
                           "num_hidden_layers": 8, "num_attention_heads": 6,
                           "num_key_value_heads": 6},
               "a third CPU size, for scaling laws")

# CLIMB's proxies (Diao et al., 2025: 62M and 350M) on GPT-2 token ids (50257, padded to
# 50304 as in ClimbLab).  Two shapes were once written under each name; these are the ones
# whose counts are nearest CLIMB's sizes: 11 x 512 with FFN 1536 has 63.3M parameters (the
# 12-layer FFN-1376 variant had 63.7M), and 24 x 1024 with FFN 2688 has 350.4M (FFN 2816
# gave 359.8M).
_GPT2 = {"vocab_size": 50304, "hidden_act": "silu", "rms_norm_eps": 1.0e-5,
         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
         "tie_word_embeddings": True, "initializer_range": 0.02}
register_shape("62m", {**_GPT2, "hidden_size": 512, "intermediate_size": 1536,
                       "num_hidden_layers": 11, "num_attention_heads": 8,
                       "num_key_value_heads": 8},
               "CLIMB's small proxy (the GPU search's default)")
register_shape("350m", {**_GPT2, "hidden_size": 1024, "intermediate_size": 2688,
                        "num_hidden_layers": 24, "num_attention_heads": 16,
                        "num_key_value_heads": 16},
               "CLIMB's large proxy")

# Llama-3.2-1B (16 layers, hidden 2048, GQA 32/8, SwiGLU 8192, tied embeddings, vocabulary
# 128256), with Llama 3's RoPE base and default RoPE (the llama3 frequency scaling is for
# long-context use).
_LLAMA3 = {"hidden_act": "silu", "rms_norm_eps": 1.0e-5, "head_dim": 64,
           "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
           "tie_word_embeddings": True, "initializer_range": 0.02}
_LLAMA_3_2_1B = {**_LLAMA3, "hidden_size": 2048, "intermediate_size": 8192,
                 "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8}
register_shape("llama-3.2-1b", {**_LLAMA_3_2_1B, "vocab_size": 128256},
               "the Llama-3.2-1B shape (recipes/pretrain_1b.yaml)")
# A 150M / 410M / 1B family on GPT-2 ids: everything but depth and width shared, so the
# members' results compare (recipes/family/).
register_shape("llama-150m", {**_LLAMA3, "vocab_size": 50304, "hidden_size": 768,
                              "intermediate_size": 2048, "num_hidden_layers": 18,
                              "num_attention_heads": 12, "num_key_value_heads": 4},
               "the family's 150M member")
register_shape("llama-410m", {**_LLAMA3, "vocab_size": 50304, "hidden_size": 1024,
                              "intermediate_size": 3584, "num_hidden_layers": 26,
                              "num_attention_heads": 16, "num_key_value_heads": 4},
               "the family's 410M member")
register_shape("llama-1b", {**_LLAMA_3_2_1B, "vocab_size": 50304},
               "the family's 1B member: Llama-3.2-1B at GPT-2's vocabulary")


# -- from a model section to a model ------------------------------------------------------------
def model_fields(section: Mapping[str, Any], *, where: str = "the model section") -> dict[str, Any]:
    """A model section with its named ``shape`` expanded: the shape's fields, then the overrides."""
    rest = dict(section)
    name = rest.pop(SHAPE_KEY, None)
    if name is None:
        return rest
    if not isinstance(name, str):
        raise HFMixtureError(f"{where}: model.shape must be a shape name, got {name!r}.")
    try:
        shape = get_shape(name)
    except HFMixtureError as err:
        raise HFMixtureError(f"{where}: {err}") from None
    return {**dict(shape.fields), **rest}


def llama_config(section: Mapping[str, Any], *, vocab_size: int | None = None,
                 eos_token_id: int | None = None, where: str = "the model section"):
    """The ``LlamaConfig`` of a model section; ``vocab_size: auto`` takes ``vocab_size``.

    ``section`` may name a ``shape``.  Unknown keys are an error that names them
    (LlamaConfig would store them silently).
    """
    from transformers import LlamaConfig

    fields_ = model_fields(section, where=where)
    known = {f.name for f in dataclasses.fields(LlamaConfig)} | set(BUILD_KEYS)
    unknown = sorted(set(fields_) - known)
    if unknown:
        raise HFMixtureError(f"{where}: model has the unknown key(s) {', '.join(map(repr, unknown))}"
                             "; use LlamaConfig field names (hidden_size, num_hidden_layers, ...).")
    kwargs = {k: v for k, v in fields_.items() if k not in BUILD_KEYS}
    if kwargs.get("vocab_size", "auto") == "auto":
        if vocab_size is None:
            raise HFMixtureError(f"{where}: model.vocab_size is 'auto' but no token store was "
                                 "given to take it from (data.store / --store).")
        # A multiple of 64 keeps the embedding and LM-head matmuls on fast tensor-core shapes.
        kwargs["vocab_size"] = int(math.ceil(vocab_size / 64) * 64)
    elif vocab_size is not None and int(kwargs["vocab_size"]) < vocab_size:
        raise HFMixtureError(f"{where}: model.vocab_size {kwargs['vocab_size']} is smaller than "
                             f"the token store's vocabulary ({vocab_size}).")
    if eos_token_id is not None:
        kwargs.setdefault("eos_token_id", eos_token_id)
        kwargs.setdefault("bos_token_id", None)
    try:
        config = LlamaConfig(**kwargs)
    except (TypeError, ValueError) as err:
        raise HFMixtureError(f"{where}: the model section is not a valid LlamaConfig ({err}).") \
            from None
    attn = fields_.get("attn_implementation")
    if attn is not None:
        config._attn_implementation = attn
    return config


def build_model(model: Any, *, vocab_size: int | None = None, eos_token_id: int | None = None,
                seed: int = 0, device: str | None = None, where: str = "the model section"):
    """A randomly initialized causal LM (no weights are downloaded).

    ``model`` is a model section (a mapping of LlamaConfig fields, optionally naming a
    ``shape``; see :func:`llama_config`) or a ready ``PretrainedConfig``.
    ``device="meta"`` builds it without memory (parameter counts of large shapes).
    Initialization draws from a private copy of torch's generator seeded with ``seed``,
    so building a model leaves the global RNG untouched.

    >>> model = build_model({"shape": "llama-3.2-1b"}, device="meta")   # doctest: +SKIP
    >>> round(count_parameters(model) / 1e9, 3)                         # doctest: +SKIP
    1.236
    """
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {}
    if isinstance(model, Mapping):
        config = llama_config(model, vocab_size=vocab_size, eos_token_id=eos_token_id, where=where)
        attn = model_fields(model, where=where).get("attn_implementation")
        if attn:
            kwargs["attn_implementation"] = attn
    else:
        config = model
    if device == "meta":
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, **kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, **kwargs)


def count_parameters(model: Any, *, embeddings: bool = True) -> int:
    """Parameters of ``model``, tied weights counted once; ``embeddings=False`` leaves out the
    input and output embedding matrices (the "non-embedding" count of scaling laws).

    Under DeepSpeed ZeRO-3 a rank holds only its shard and ``numel()`` of a partitioned
    parameter is 0; its full size is ``ds_numel``, which is what is counted then.
    """
    skip: set[int] = set()
    if not embeddings:
        skip.add(id(model.get_input_embeddings().weight))
        out = model.get_output_embeddings()
        if out is not None:
            skip.add(id(out.weight))
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            if id(p) not in skip:
                total += int(getattr(p, "ds_numel", None) or p.numel())
    return int(total)


def format_parameters(n: int) -> str:
    """``63254016`` -> ``"63.3M"``, ``1235814400`` -> ``"1.236B"``.

    >>> format_parameters(63254016), format_parameters(1235814400), format_parameters(616768)
    ('63.3M', '1.236B', '0.62M')
    """
    if n >= 1e9:
        return f"{n / 1e9:.3f}B"
    if n >= 1e7:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e6:.2f}M"


def shape_table() -> str:
    """The Markdown table of every registered shape, as the docs show it."""
    rows = ["| shape | layers x hidden | heads (q/kv) | FFN | vocabulary | parameters | what |",
            "|---|---|---|---:|---:|---:|---|"]
    for shape in SHAPES.values():
        f = shape.fields
        heads = f["num_attention_heads"]
        kv = f.get("num_key_value_heads") or heads
        rows.append(f"| `{shape.name}` | {f['num_hidden_layers']} x {f['hidden_size']} | "
                    f"{heads}/{kv} | {f['intermediate_size']} | {f['vocab_size']} | "
                    f"{format_parameters(shape.parameters())} | {shape.description} |")
    return "\n".join(rows) + "\n"
