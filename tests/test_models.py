"""The model registry: shapes defined once, one builder and counter, the docs' table generated.

Fast: large shapes are built on the meta device; the only real model is a CPU proxy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hf_mixture import models
from hf_mixture.errors import HFMixtureError
from hf_mixture.models import (
    SHAPES,
    build_model,
    count_parameters,
    get_shape,
    model_fields,
    register_shape,
    shape_table,
)

ROOT = Path(__file__).resolve().parents[1]


def test_a_duplicate_shape_name_is_refused():
    before = dict(SHAPES)
    with pytest.raises(HFMixtureError, match="'62m' is already registered"):
        register_shape("62m", {"vocab_size": 8, "hidden_size": 8})
    assert SHAPES == before


def test_an_unknown_shape_is_one_sentence_naming_the_known_ones():
    with pytest.raises(HFMixtureError, match=r"'nope' is not registered; known shapes: .*62m"):
        get_shape("nope")
    with pytest.raises(HFMixtureError, match="recipe.yaml: Model shape 'nope'"):
        model_fields({"shape": "nope"}, where="recipe.yaml")


def test_fields_beside_the_shape_override_it():
    fields = model_fields({"shape": "62m", "num_hidden_layers": 2, "attn_implementation": "eager"})
    assert fields["num_hidden_layers"] == 2 and fields["hidden_size"] == 512
    assert fields["attn_implementation"] == "eager" and "shape" not in fields
    assert model_fields({"hidden_size": 8}) == {"hidden_size": 8}   # no shape: as given


@pytest.mark.parametrize("name, low, high", [
    # CLIMB's proxy sizes: the registry keeps the shapes nearest 62M and 350M.
    ("62m", 62e6, 64e6), ("350m", 349e6, 352e6),
    ("llama-3.2-1b", 1.235e9, 1.237e9),          # Llama-3.2-1B: 1,235,814,400
    ("llama-150m", 145e6, 155e6), ("llama-410m", 400e6, 415e6), ("llama-1b", 1.0e9, 1.1e9),
    ("cpu-1m", 0.7e6, 0.9e6),
])
def test_shape_parameter_counts(name, low, high):
    assert low <= get_shape(name).parameters() <= high


def test_llama_3_2_1b_is_the_published_architecture():
    model = build_model({"shape": "llama-3.2-1b"}, device="meta")
    c = model.config
    assert count_parameters(model) == 1_235_814_400
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.vocab_size) == \
        (16, 2048, 8192, 128256)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (32, 8, 64)
    assert c.tie_word_embeddings and c.rope_parameters["rope_theta"] == 500000.0


def test_non_embedding_count_leaves_out_the_tied_embedding_once():
    model = build_model({"shape": "62m"}, device="meta")
    total, inner = count_parameters(model), count_parameters(model, embeddings=False)
    assert total - inner == 50304 * 512


def test_untied_output_embedding_is_left_out_too():
    model = build_model({"shape": "cpu-1m", "tie_word_embeddings": False}, device="meta")
    assert count_parameters(model) - count_parameters(model, embeddings=False) == 2 * 8192 * 64


def test_build_model_is_seeded_and_leaves_the_global_rng_alone():
    import torch

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model({"shape": "cpu-1m", "vocab_size": 100}, seed=7)
    b = build_model({"shape": "cpu-1m", "vocab_size": 100}, seed=7)
    c = build_model({"shape": "cpu-1m", "vocab_size": 100}, seed=8)
    assert torch.equal(torch.random.get_rng_state(), before)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_a_search_proxy_is_the_registered_shape_at_the_store_vocabulary():
    from hf_mixture.search.proxy import ProxySettings, proxy_model

    for name in ("cpu-1m", "62m"):
        model = proxy_model(ProxySettings(model=name, seq_len=64), vocab_size=321, seed=0)
        config = model.config
        for key, value in get_shape(name).fields.items():
            if key != "vocab_size":
                assert getattr(config, key) == value, (name, key)
        assert config.vocab_size == 321 and config.max_position_embeddings == 64
    with pytest.raises(HFMixtureError, match="neither a registered shape"):
        proxy_model(ProxySettings(model="no-such-shape"), vocab_size=10, seed=0)


def test_search_proxy_defaults_are_written_once():
    from hf_mixture.search.config import SearchConfig
    from hf_mixture.search.proxy import ProxySettings

    assert SearchConfig().proxy_settings() == ProxySettings()
    names = {f"proxy_{f.name}" for f in dataclasses.fields(ProxySettings)}
    assert names <= {f.name for f in dataclasses.fields(SearchConfig)}


def test_gpu_search_trains_its_proxies_as_the_proxy_recipe_says():
    from hf_mixture.search.config import SearchConfig
    from hf_mixture.recipe import load_train_config, training_arguments

    gpu = SearchConfig.gpu().proxy_settings()
    recipe = load_train_config(ROOT / "recipes" / "proxy.yaml",
                               ["training.use_cpu=true", "training.optim=adamw_torch"])
    args = training_arguments(recipe)
    assert gpu.model == recipe.model["shape"] == "62m"
    assert gpu.seq_len == recipe.data.seq_len and gpu.batch_size == args.per_device_train_batch_size
    assert gpu.gradient_accumulation_steps == args.gradient_accumulation_steps
    assert gpu.steps == args.max_steps and gpu.sequences_per_step == 64
    assert (gpu.learning_rate, gpu.weight_decay, gpu.bf16) == \
        (args.learning_rate, args.weight_decay, args.bf16)
    assert gpu.warmup_fraction * gpu.steps == args.warmup_steps
    assert SearchConfig.gpu(proxy_tokens=10).proxy_tokens == 10   # overrides still win


def test_gpu_search_names_a_missing_or_unusable_recipe(tmp_path):
    from hf_mixture.search.config import SearchConfig

    with pytest.raises(HFMixtureError, match="does not exist"):
        SearchConfig.gpu(recipe=tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {shape: 62m, hidden_size: 8}\ndata: {seq_len: 8}\n"
                   "training: {max_steps: 2, per_device_train_batch_size: 2, "
                   "global_batch_size: 4, learning_rate: 0.1}\n")
    with pytest.raises(HFMixtureError, match="hidden_size"):
        SearchConfig.gpu(recipe=bad)


def test_docs_show_the_generated_shape_table():
    text = (ROOT / "docs" / "training.md").read_text()
    begin, end = "<!-- shapes:begin -->\n", "<!-- shapes:end -->"
    assert text[text.index(begin) + len(begin):text.index(end)] == shape_table(), \
        "docs/training.md's shape table is stale: paste hf_mixture.models.shape_table()"


@pytest.mark.parametrize("doc", ["README.md", "docs/training.md", "docs/search.md",
                                 "recipes/README.md"])
def test_docs_name_shapes_without_restating_a_different_count(doc):
    """A count written next to a shape name elsewhere would drift: the table is the one place."""
    import re

    text = (ROOT / doc).read_text()
    for name in SHAPES:
        for hit in re.finditer(rf"`{re.escape(name)}`[^|\n]{{0,30}}?(\d+(?:\.\d+)?)\s?([MB])\b",
                               text):
            row = text[text.rfind("\n", 0, hit.start()) + 1:hit.start()]
            assert row.startswith("| `") and doc == "docs/training.md", (doc, name, hit.group(0))


def test_the_registry_module_imports_nothing_above_it():
    import ast

    tree = ast.parse(Path(models.__file__).read_text())
    ours = {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level}
    assert ours <= {"errors"}
