"""The tiny recipe under ``accelerate launch`` with two CPU processes (gloo).

The two ranks share each global batch (the sampler gives each rank its disjoint half),
so after the same number of steps the sampler state equals that of one process with
twice the per-device batch, and the training loss agrees up to float rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import SMALL, make_store

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["training.max_steps=4", "training.save_steps=4", "training.eval_steps=4"]


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_double_batch(tmp_path, tiny_texts,
                                                                tiny_tokenizer_path):
    store = make_store(tmp_path, tiny_texts, tiny_tokenizer_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    overrides = [o for o in SMALL if "per_device_train_batch_size" not in o] + STEPS
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"), "-m", "hf_mixture", "train",
           str(ROOT / "recipes" / "tiny_cpu.yaml"), "--store", str(store), "--output-dir",
           str(two), "training.per_device_train_batch_size=2", *overrides]
    proc = subprocess.run(cmd, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((two / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 4

    one = tmp_path / "one"
    cmd = [sys.executable, "-m", "hf_mixture", "train", str(ROOT / "recipes" / "tiny_cpu.yaml"),
           "--store", str(store), "--output-dir", str(one),
           "training.per_device_train_batch_size=4", *overrides]
    proc = subprocess.run(cmd, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    state_two = json.loads((two / "checkpoint-4" / "hf_mixture_sampler.json").read_text())
    state_one = json.loads((one / "checkpoint-4" / "hf_mixture_sampler.json").read_text())
    assert state_two["sample"] == state_one["sample"] == 4 * 4     # 4 steps x 4 sequences
    assert state_two["counts"] == state_one["counts"]
    assert json.loads((two / "mixture_history.json").read_text()) == \
        json.loads((one / "mixture_history.json").read_text())

    def losses(folder: Path) -> list[float]:
        history = json.loads((folder / "checkpoint-4" / "trainer_state.json").read_text())
        return [e["loss"] for e in history["log_history"] if "loss" in e]

    a, b = losses(two), losses(one)
    assert len(a) == len(b) == 4
    assert a == pytest.approx(b, rel=2e-3, abs=2e-3)
    ev_two = json.loads((two / "eval_results.json").read_text())
    ev_one = json.loads((one / "eval_results.json").read_text())
    assert ev_two["eval_cluster_0_loss"] == pytest.approx(ev_one["eval_cluster_0_loss"], rel=5e-3)
