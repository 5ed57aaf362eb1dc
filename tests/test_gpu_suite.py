"""benchmarks/gpu_suite.py --dry-run: every section runs on the CPU (or records why not), the
report renders, a failing section is recorded while the others run, docs markers work."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_mixture.errors import HFMixtureError

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(out: Path, *flags: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SUITE), "--dry-run", "--output", str(out), *flags],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    # A made-up 1 TFLOP/s peak: the CPU has none, and MFU must still be computed end to end.
    # The zero section (four two-rank DeepSpeed launches on the CPU) is left out here: the
    # same launchers and JSONs run in tests/test_deepspeed.py.
    proc = _run(out, "--peak-tflops", "1", "--sections", ",".join(_module().SECTIONS[:-1]))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_dry_run_records_every_section(dry):
    suite = _module()
    report = json.loads((dry / "gpu_suite.json").read_text())
    assert report["dry_run"] is True and report["date"]
    for key in ("device", "driver", "torch", "cuda"):
        assert key in report["environment"]
    assert suite.SECTIONS[-1] == "zero"
    assert list(report["sections"]) == list(suite.SECTIONS[:-1])
    for name, sec in report["sections"].items():
        assert sec["status"] == "ok", (name, sec)
        assert (dry / sec["log"]).is_file()
    s = report["sections"]
    train = s["pretrain_1b"]["results"]
    assert train["recipe"] == "recipes/pretrain_1b.yaml" and train["peak_flops"] == 1e12
    for run in ("static", "live_weights"):
        r = train["runs"][run]
        for key in ("tokens_per_second", "step_seconds", "mfu", "peak_memory_gib", "last_loss"):
            assert _finite_positive(r[key]), (run, key, r[key])
        assert 0 <= r["data_wait_fraction"] < 1
    live = train["runs"]["live_weights"]
    steps, every = report["sizes"]["train_steps"], report["sizes"]["live_every"]
    # Every change went through LiveMixture.set_weights and is in the run's history.
    assert live["weight_changes"] == steps // every
    assert live["history_entries"] == 1 + steps // every
    proxy = s["proxy_62m"]["results"]
    assert proxy["model"] == "cpu-1m" and proxy["steps"] == report["sizes"]["proxy_steps"]
    assert _finite_positive(proxy["tokens_per_second"]) and proxy["eval_points"] >= 1
    cb = s["callbacks_62m"]["results"]
    assert cb["shape"] == "cpu-1m" and list(cb["runs"]) == ["natural", "uniform", "aioli"]
    assert all(math.isfinite(x["mean_loss"]) for x in cb["runs"].values())
    assert cb["runs"]["aioli"]["callback_share"] > 0 and len(cb["runs"]["aioli"]["vs_natural"]) == 1
    embed = s["embed"]["results"]
    assert embed["docs"] == report["sizes"]["embed_docs"]
    assert all(_finite_positive(embed[t]["docs_per_second"]) for t in ("default", "batch_256"))
    km = s["kmeans"]["results"]
    assert (km["n"], km["dim"]) == (2000, 32) and km["cpu"]["seconds"] >= 0
    assert "skipped" in km["gpu"] or _finite_positive(km["speedup"])


def test_markdown_table_renders(dry):
    report = json.loads((dry / "gpu_suite.json").read_text())
    text = (dry / "gpu_suite.md").read_text()
    assert text == _module().render_markdown(report)
    assert "| section | measurement | value |" in text and "**Dry run**" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and ln.count("|") == 4]
    for name in report["sections"]:
        assert any(row.startswith(f"| {name} |") for row in rows), name
    mfu = report["sections"]["pretrain_1b"]["results"]["runs"]["static"]["mfu"]
    assert f"| pretrain_1b | static weights: MFU | {100 * mfu:.1f}% |" in text
    assert "--output DIR --dry-run" in text and str(dry) not in text


def test_a_failing_section_is_recorded_and_the_others_run(tmp_path):
    proc = _run(tmp_path, "--sections", "embed,kmeans", "--time-box", "embed=0.5")
    assert proc.returncode == 1, proc.stderr[-2000:]
    sections = json.loads((tmp_path / "gpu_suite.json").read_text())["sections"]
    assert sections["embed"]["status"] == "failed"
    assert sections["embed"]["error"].startswith("timed out after 0.5 s")
    assert sections["kmeans"]["status"] == "ok"
    assert "| embed | failed | timed out" in (tmp_path / "gpu_suite.md").read_text()


def test_docs_markers_are_replaced_in_place():
    suite = _module()
    docs = (ROOT / "docs" / "benchmarks.md").read_text()
    begin, end = suite.MARKERS
    assert docs.count(begin) == 1 and docs.count(end) == 1
    once = suite.replace_between_markers(docs, "| a | b | c |\n")
    assert "| a | b | c |" in once and once.split(begin)[0] == docs.split(begin)[0]
    assert once.split(end)[1] == docs.split(end)[1]
    assert suite.replace_between_markers(once, "| a | b | c |\n") == once
    with pytest.raises(HFMixtureError, match="marker pair"):
        suite.replace_between_markers("no markers here", "x")


@pytest.mark.parametrize("flags, message", [
    (["--update-docs"], "do not belong"),
    (["--time-box", "embed"], "NAME=SECONDS"),
    (["--sections", "embed,warp"], "'warp'"),
    (["--peak-tflops", "-3"], "must be > 0"),
])
def test_bad_input_is_one_sentence(tmp_path, capsys, flags, message):
    suite = _module()
    assert suite.main(["--dry-run", "--output", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_real_run_refuses_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the real run would start")
    proc = subprocess.run([sys.executable, str(SUITE), "--output", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "No CUDA GPU is visible" in proc.stderr
    assert not (tmp_path / "gpu_suite.json").exists()
