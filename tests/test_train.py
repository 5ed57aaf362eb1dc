"""``hf-mixture train`` on CPU: a tiny recipe end to end, exact resume, 8-bit AdamW, the CLI.

Each run is a real transformers Trainer run of a ~30k-parameter Llama over a
token store made from the shared tiny corpus (a few seconds each).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hf_mixture.errors import HFMixtureError
from hf_mixture.train import load_train_config, train

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny_cpu.yaml"
# Smaller than the recipe so that each run takes seconds on two shared cores.
SMALL = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_attention_heads=2",
         "model.num_key_value_heads=1", "data.seq_len=32", "data.eval_sequences=2",
         "training.per_device_train_batch_size=2", "training.per_device_eval_batch_size=2",
         "training.logging_steps=1", "training.disable_tqdm=true"]


def make_store(root: Path, texts, tokenizer_path) -> Path:
    import datasets

    from hf_mixture.formats import tokenize_corpus, write_clustered_corpus
    from hf_mixture.formats.tokenizers import load_tokenizer

    sources = sorted({s for s, _ in texts})
    ds = datasets.Dataset.from_dict({
        "text": [t for _, t in texts], "source": [s for s, _ in texts],
        "cluster_id": [sources.index(s) for s, _ in texts]})
    write_clustered_corpus(ds, root / "corpus", tokenizer=load_tokenizer(tokenizer_path))
    return tokenize_corpus(root / "corpus", root / "store", str(tokenizer_path),
                           validation_fraction=0.2)


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_texts, tiny_tokenizer_path):
    return make_store(tmp_path_factory.mktemp("train"), tiny_texts, tiny_tokenizer_path)


def _config(store, out, *extra):
    return load_train_config(RECIPE, [*SMALL, f"data.store={store}",
                                      f"training.output_dir={out}", *extra])


def test_tiny_recipe_end_to_end(store, tmp_path):
    from hf_mixture.hub import push_model_to_hub

    cfg = _config(store, tmp_path / "run", "training.max_steps=4", "training.save_steps=2",
                  "training.eval_steps=2", "callbacks=[{name: bandit}]")
    result = train(cfg)
    out = Path(result.output_dir)
    assert result.global_step == 4 and result.world_size == 1
    domains = ["cluster_0", "cluster_1", "cluster_2"]   # natural mixture over the store
    for d in domains:
        assert 0 < result.metrics[f"eval_{d}_loss"] < 10
        assert result.metrics[f"eval_{d}_perplexity"] > 1
    # The bandit changed the weights at the evaluations; every change is recorded.
    assert len(result.weights_history) >= 2
    assert json.loads((out / "mixture_history.json").read_text()) == result.weights_history
    for name in ("config.json", "model.safetensors", "mixture.yaml", "recipe.yaml",
                 "eval_results.json", "run_info.json", "throughput.json", "tokenizer.json",
                 "checkpoint-2/hf_mixture_sampler.json", "checkpoint-4/hf_mixture_bandit.json"):
        assert (out / name).is_file(), name
    perf = json.loads((out / "throughput.json").read_text())
    assert perf["perf/tokens_per_second"] > 0 and 0 <= perf["perf/data_wait_fraction"] < 1
    assert perf["tokens_per_step"] == 2 * 32
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size % 64 == 0 and model.config.hidden_size == 32
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|endoftext|>"
    # The model card names the per-domain metrics and the recipe.
    repo = Path(push_model_to_hub(out, "me/tiny", mixture_repo="me/mix",
                                  local_dir=tmp_path / "card"))
    card = (repo / "README.md").read_text()
    assert all(f"| {d} | {result.metrics[f'eval_{d}_loss']:.4f} |" in card for d in domains)
    assert "4 optimizer steps" in card and "name: bandit" in card


def test_aioli_with_a_text_target_from_a_recipe(store, tmp_path, tiny_texts):
    from hf_mixture.hub import push_model_to_hub

    target = tmp_path / "my_target.jsonl"
    source = min({s for s, _ in tiny_texts})
    target.write_text("\n".join(json.dumps({"text": t}) for s, t in tiny_texts if s == source))
    cfg = _config(store, tmp_path / "run", "training.max_steps=8", "training.save_steps=8",
                  "training.eval_steps=8",
                  f"callbacks=[{{name: aioli, target: {target}, rounds: 1, sweeps: 1, "
                  "lp_steps: 1, lp_fraction: 0.5}]")
    result = train(cfg)
    out = Path(result.output_dir)
    saved = json.loads((out / "eval_results.json").read_text())
    assert 0 < saved["eval_target_loss"] < 10 and saved["eval_target_perplexity"] > 1
    reasons = [c["reason"] for c in result.weights_history]
    assert sum("LearnParams" in r for r in reasons) == 3 and reasons[-1] == "aioli: step 4: round 0"
    state = json.loads((out / "checkpoint-8" / "hf_mixture_aioli.json").read_text())
    assert all("target" in e for e in state["eval_history"])   # the target's row was measured
    repo = Path(push_model_to_hub(out, "me/tiny", local_dir=tmp_path / "card"))
    assert "Target loss (`eval_target_loss`" in (repo / "README.md").read_text()
    assert f"{saved['eval_target_loss']:.4f}" in (repo / "README.md").read_text()

    (tmp_path / "empty.jsonl").write_text("")
    bad = _config(store, tmp_path / "bad", "training.max_steps=8",
                  f"callbacks=[{{name: aioli, target: {tmp_path / 'empty.jsonl'}}}]")
    with pytest.raises(HFMixtureError, match="callbacks\\[0\\]: Target .*empty.jsonl"):
        train(bad)
    assert not (tmp_path / "bad" / "checkpoint-1").exists()


def test_resume_continues_the_same_samples_and_weights(store, tmp_path):
    """Stop after step 3, resume: the sampler state, mixture weights and model equal an
    uninterrupted run's at step 6."""
    from safetensors.numpy import load_file

    extra = ["training.max_steps=6", "training.save_steps=3", "training.eval_steps=3",
             "callbacks=[{name: bandit}]"]
    full = train(_config(store, tmp_path / "full", *extra))
    part = tmp_path / "resumed"
    part.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-3", part / "checkpoint-3")
    resumed = train(_config(store, part, *extra, "training.resume_from_checkpoint=latest"))
    assert resumed.global_step == 6
    for name in ("hf_mixture_sampler.json", "hf_mixture_bandit.json"):
        a = json.loads((tmp_path / "full" / "checkpoint-6" / name).read_text())
        b = json.loads((part / "checkpoint-6" / name).read_text())
        assert a == b, name
    assert resumed.weights_history == full.weights_history
    wa = load_file(str(tmp_path / "full" / "model.safetensors"))
    wb = load_file(str(part / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert abs(wa[key] - wb[key]).max() <= 1e-6, key


def test_eight_bit_adamw_on_cpu(store, tmp_path):
    pytest.importorskip("bitsandbytes")
    result = train(_config(store, tmp_path / "bnb", "training.max_steps=2",
                           "training.optim=adamw_8bit", "training.save_strategy=no",
                           "training.eval_strategy=no", "data.eval_sequences=0"))
    assert result.optimizer.startswith("bitsandbytes.") and "(8-bit states)" in result.optimizer
    assert result.metrics == {} and result.global_step == 2


def test_extra_callbacks_steer_the_live_mixture(store, tmp_path):
    """A callback made from the run's LiveMixture changes the weights mid-run; it is recorded."""
    from transformers import TrainerCallback

    seen = []

    class Flip(TrainerCallback):
        def __init__(self, live):
            self.live = live
            seen.append(live)

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                self.live.set_weights({"cluster_0": 1.0}, reason="flip")

    result = train(_config(store, tmp_path / "flip", "training.max_steps=3",
                           "training.save_strategy=no", "training.eval_strategy=no",
                           "data.eval_sequences=0"), extra_callbacks=[Flip])
    assert len(seen) == 1 and result.global_step == 3
    assert [c["reason"] for c in result.weights_history] == ["initial", "flip"]
    assert result.weights_history[-1]["weights"][0] == 1.0


def test_resume_without_checkpoint_is_one_clear_error(store, tmp_path):
    with pytest.raises(HFMixtureError, match="no checkpoint"):
        train(_config(store, tmp_path / "empty", "training.resume_from_checkpoint=latest"))


def test_missing_store_is_named(tmp_path):
    with pytest.raises(HFMixtureError, match="data.store"):
        train(load_train_config(RECIPE, [f"training.output_dir={tmp_path}"]))


def test_cli_dry_run_and_errors(store, tmp_path, capsys):
    from hf_mixture.cli import main

    assert main(["train", str(RECIPE), "--store", str(store), "--dry-run",
                 "model.num_hidden_layers=3", "--seq-len", "16"]) == 0
    out = capsys.readouterr().out
    assert "num_hidden_layers: 3" in out and "seq_len: 16" in out and "# parameters:" in out
    assert main(["train", str(RECIPE), "--store", str(store), "--dry-run",
                 "model.hidden_sise=3"]) == 2
    assert "hidden_sise" in capsys.readouterr().err
    assert main(["train", str(RECIPE), "--store", str(tmp_path / "nope"),
                 "--output-dir", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("change, message", [
    ({"stage": 5}, "stage"),
    ({"overlapp_comm": True}, "overlapp_comm"),
])
def test_a_zero_config_deepspeed_rejects_is_one_sentence_before_training(change, message, store,
                                                                        tmp_path, capsys):
    """DeepSpeed's own config classes judge the filled JSON before any model is built."""
    pytest.importorskip("deepspeed")
    from hf_mixture.cli import main

    config = json.loads((RECIPE.parent / "deepspeed" / "zero3.json").read_text())
    config["zero_optimization"].update(change)
    bad = tmp_path / "zero.json"
    bad.write_text(json.dumps(config))
    out = tmp_path / "run"
    code = main(["train", str(RECIPE), "--store", str(store), "--output-dir", str(out), *SMALL,
                 f"training.deepspeed={bad}"])
    err = capsys.readouterr().err
    assert code == 2 and f"DeepSpeed rejects {bad}" in err and message in err
    assert "Traceback" not in err and not list(out.glob("checkpoint-*"))
