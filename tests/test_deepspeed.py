"""DeepSpeed ZeRO-2 and ZeRO-3 for real: two CPU ranks over gloo, ``recipes/accelerate/cpu_zero*.yaml``.

Each launch carries several recipe runs (``tests/_launched_recipe.py``), because starting
DeepSpeed in two ranks costs more than a tiny run.  Per stage, two launches:

1. a run SIGKILLed by the out-of-memory killer's signal in the middle of saving checkpoint-8,
   with ``save_total_limit=1``;
2. its ``--resume`` (which must skip the half-written checkpoint-8 and continue from
   checkpoint-4, still there despite the rotation), the same run uninterrupted with a push
   to the recording Hub stand-in, every callback with live weight changes (ADO, DoReMi with
   a reference model and with reference losses, bandit, schedule, Aioli), and -- ZeRO-2 --
   bitsandbytes' 8-bit AdamW as DeepSpeed's client optimizer, stopped and resumed.

Then: losses, eval losses and weights history of the resumed run equal the uninterrupted
run's; every rank holds the same weights history; the saved ``model.safetensors`` loads in
plain transformers and holds the trained weights (those of DeepSpeed's own ZeRO checkpoint);
``run_info.json`` and the card give the true parameter count; only rank 0 pushed.
The same 8-bit stop-and-resume runs under plain DDP (``cpu_2proc.yaml``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import SMALL, make_store

pytest.importorskip("deepspeed", reason="deepspeed is in the test extra")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny_cpu.yaml"
DRIVER = Path(__file__).resolve().parent / "_launched_recipe.py"
# 12 steps, a checkpoint every 4 (only the newest kept), per-domain evals every 2: ADO's
# first fit (3 eval points) comes at step 6, so weights change before and after the kill.
RUN = [*SMALL, "training.max_steps=12", "training.save_steps=4", "training.eval_steps=2",
       "training.save_total_limit=1", "training.per_device_train_batch_size=2"]
ADO = "callbacks=[{name: ado, min_points: 3, fit_from_step: 0}]"


def _launch(config: str, spec: dict, tmp_path: Path, name: str, *, timeout: int = 400
            ) -> subprocess.CompletedProcess:
    spec_path = tmp_path / f"{name}.json"
    spec_path.write_text(json.dumps({"recipe": str(RECIPE), "results": str(tmp_path / "results"),
                                     **spec}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(DRIVER.parent)])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes" / "accelerate" / config), str(DRIVER), str(spec_path)]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _result(tmp_path: Path, name: str, rank: int = 0) -> dict:
    return json.loads((tmp_path / "results" / f"{name}.rank{rank}.json").read_text())


def _log(folder: Path) -> dict[str, dict[int, float]]:
    """The run's log history by metric and step (losses and per-domain eval losses)."""
    checkpoints = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    out: dict[str, dict[int, float]] = {}
    for entry in state["log_history"]:
        for key, value in entry.items():
            if key == "loss" or (key.startswith("eval_") and key.endswith("_loss")):
                out.setdefault(key, {})[entry["step"]] = value
    return out


def _true_parameter_count(store: Path) -> int:
    from hf_mixture.formats.token_store import TokenStore
    from hf_mixture.models import build_model, count_parameters
    from hf_mixture.recipe import load_train_config

    cfg = load_train_config(RECIPE, [*RUN, f"data.store={store}"])
    s = TokenStore(store)
    return count_parameters(build_model(cfg.model, vocab_size=s.vocab_size,
                                        eos_token_id=s.eos_token_id, device="meta"))


def _scenarios(tmp_path: Path, store: Path, stage: int) -> list[dict]:
    out = tmp_path / "runs"
    base = [*RUN, f"data.store={store}"]
    stages = tmp_path / "staged.yaml"
    stages.write_text("components: [{name: cluster_0}, {name: cluster_1}, {name: cluster_2}]\n"
                      "stages:\n"
                      "  - {start: 0, weights: {cluster_0: 1, cluster_1: 1, cluster_2: 1}}\n"
                      "  - {start: 0.5, weights: {cluster_0: 4, cluster_1: 1, cluster_2: 0}}\n")
    runs = [
        {"name": "resumed", "overrides": [*base, ADO, f"training.output_dir={out / 'killed'}",
                                          "training.resume_from_checkpoint=latest"]},
        {"name": "full", "hub": True,
         "overrides": [*base, ADO, f"training.output_dir={out / 'full'}", "hub.push=true",
                       "hub.model_repo=me/tiny-zero"]},
        {"name": "doremi_model", "overrides": [
            *base, f"training.output_dir={out / 'doremi_model'}",
            f"callbacks=[{{name: doremi, reference_model: {out / 'full'}}}]"]},
        {"name": "doremi_losses", "reference_losses": {"from": "full",
                                                       "path": str(tmp_path / "ref.json")},
         "overrides": [*base, f"training.output_dir={out / 'doremi_losses'}",
                       f"callbacks=[{{name: doremi, reference_losses: {tmp_path / 'ref.json'}}}]"]},
        {"name": "bandit", "overrides": [
            *base, f"training.output_dir={out / 'bandit'}",
            "callbacks=[{name: bandit, feedback: train, lr: 50.0}]"]},
        {"name": "schedule", "overrides": [
            *base, f"training.output_dir={out / 'schedule'}", f"data.mixture={stages}",
            "callbacks=[{name: schedule}]"]},
    ]
    from hf_mixture.callbacks import callback_names

    if "aioli" in callback_names():
        runs.append({"name": "aioli", "overrides": [
            *base, f"training.output_dir={out / 'aioli'}",
            # 12 steps: one LearnParams of 1 sweep x 3 groups x 1 step, then the EG update
            "callbacks=[{name: aioli, sweeps: 1, lp_steps: 1, eta: 1.0}]"]})
    if stage == 2:
        eight = [*base, "training.optim=adamw_8bit", "callbacks=[]"]
        runs += [
            {"name": "adam8_full", "overrides": [*eight, f"training.output_dir={out / 'a8f'}"]},
            {"name": "adam8_stop", "stop_at": 4,
             "overrides": [*eight, f"training.output_dir={out / 'a8'}"]},
            {"name": "adam8_resumed", "overrides": [
                *eight, f"training.output_dir={out / 'a8'}",
                "training.resume_from_checkpoint=latest"]},
        ]
    return runs


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_texts, tiny_tokenizer_path):
    return make_store(tmp_path_factory.mktemp("zero"), tiny_texts, tiny_tokenizer_path)


def _losses(metrics: dict) -> dict:
    """The final per-domain eval losses and perplexities (not the timings)."""
    return {k: v for k, v in metrics.items() if k.endswith(("_loss", "_perplexity"))}


def _same_log(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, steps in a.items():
        assert steps.keys() == b[key].keys(), key
        for step, value in steps.items():
            assert value == pytest.approx(b[key][step], rel=1e-6, abs=1e-7), (key, step)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("stage", [2, 3])
def test_zero_on_two_cpu_ranks(stage, store, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = f"cpu_zero{stage}.yaml"
    killed = tmp_path / "runs" / "killed"
    proc = _launch(config, {"scenarios": [
        {"name": "killed", "kill_in_save": 8, "overrides": [
            *RUN, f"data.store={store}", ADO, f"training.output_dir={killed}"]}]},
        tmp_path, "kill")
    assert proc.returncode != 0 and (killed / "checkpoint-8").is_dir(), \
        proc.stdout[-2000:] + proc.stderr[-3000:]
    # checkpoint-8 is half-written; the rotation (save_total_limit=1) kept checkpoint-4
    assert not (killed / "checkpoint-8" / "trainer_state.json").exists()
    assert (killed / "checkpoint-4" / "trainer_state.json").is_file()

    scenarios = _scenarios(tmp_path, store, stage)
    proc = _launch(config, {"scenarios": scenarios}, tmp_path, "runs")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    runs = tmp_path / "runs"

    # 1. resume after SIGKILL mid-save == the uninterrupted run
    full, resumed = _result(tmp_path, "full"), _result(tmp_path, "resumed")
    assert resumed["global_step"] == full["global_step"] == 12
    assert resumed["world_size"] == full["world_size"] == 2
    assert "ZeroOptimizer" in full["optimizer"] and \
        ("Stage3" in full["optimizer"]) == (stage == 3)
    _same_log(_log(runs / "killed"), _log(runs / "full"))
    assert resumed["history"] == full["history"]
    assert len(full["history"]) >= 3                 # ADO moved the weights, live
    assert _losses(resumed["metrics"]) == pytest.approx(_losses(full["metrics"]), rel=1e-6)

    # 2. every callback changes the weights, and the ranks agree on them
    for name in [s["name"] for s in scenarios]:
        ranks = [_result(tmp_path, name, r) for r in (0, 1)]
        assert ranks[0]["history"] == ranks[1]["history"], name
        if not name.startswith("adam8"):
            assert len(ranks[0]["history"]) >= 2, f"{name} never changed the weights"

    # 3. the saved model loads in plain transformers and holds the trained weights:
    #    those DeepSpeed's own ZeRO checkpoint of the last step reconstructs
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    model = AutoModelForCausalLM.from_pretrained(runs / "full")
    saved = load_file(runs / "full" / "model.safetensors")
    trained = get_fp32_state_dict_from_zero_checkpoint(str(runs / "full" / "checkpoint-12"))
    for key, value in model.state_dict().items():
        if key in trained:
            assert value.float().allclose(trained[key].float(), atol=1e-6), key
    assert any(not v.eq(0).all() for v in saved.values())

    # 4. the true parameter count (ZeRO-3 shards report numel 0) in run_info and the card
    true = _true_parameter_count(store)
    assert sum(p.numel() for p in model.parameters()) == true
    info = json.loads((runs / "full" / "run_info.json").read_text())
    assert info["num_parameters"] == true == full["num_parameters"]

    # 5. one push, from rank 0 only, whose card states the count
    assert _result(tmp_path, "full", 1)["hub_calls"] == [] and \
        _result(tmp_path, "full", 1)["pushed"] is None
    calls = full["hub_calls"]
    assert [c["call"] for c in calls] == ["create_repo", "create_commit"]
    card = calls[1]["files"]["README.md"]
    assert f"({true:,})" in card

    # 6. ZeRO-2: 8-bit AdamW as DeepSpeed's client optimizer, stopped at 4 and resumed
    if stage == 2:
        a8, a8_full = _result(tmp_path, "adam8_resumed"), _result(tmp_path, "adam8_full")
        assert "8" in a8_full["optimizer"] or "bnb" in a8_full["optimizer"].lower() or \
            "ZeroOptimizer" in a8_full["optimizer"]
        _same_log(_log(runs / "a8"), _log(runs / "a8f"))
        assert _losses(a8["metrics"]) == pytest.approx(_losses(a8_full["metrics"]), rel=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_eight_bit_adamw_resumes_exactly_under_ddp(store, tmp_path):
    runs = tmp_path / "runs"
    eight = [*RUN, f"data.store={store}", "training.optim=adamw_8bit"]
    proc = _launch("cpu_2proc.yaml", {"scenarios": [
        {"name": "full", "overrides": [*eight, f"training.output_dir={runs / 'full'}"]},
        {"name": "stop", "stop_at": 4, "overrides": [*eight, f"training.output_dir={runs / 'a'}"]},
        {"name": "resumed", "overrides": [*eight, f"training.output_dir={runs / 'a'}",
                                          "training.resume_from_checkpoint=latest"]},
    ]}, tmp_path, "ddp")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    full, resumed = _result(tmp_path, "full"), _result(tmp_path, "resumed")
    assert "bitsandbytes" in full["optimizer"] and "8-bit" in full["optimizer"]
    assert full["world_size"] == 2 and resumed["global_step"] == 12
    _same_log(_log(runs / "a"), _log(runs / "full"))
    assert _losses(resumed["metrics"]) == pytest.approx(_losses(full["metrics"]), rel=1e-6)
