"""The CLIMB search: candidates, a tiny real search end to end, resume, failed runs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_mixture.cli import main as cli_main
from hf_mixture.errors import HFMixtureError
from hf_mixture.executors import ExecutorConfig
from hf_mixture.search import SearchConfig, run_search
from hf_mixture.search.candidates import (
    dirichlet_candidates,
    project_to_caps,
    repetition_caps,
    token_prior,
)

# -- candidates (pure functions) ---------------------------------------------------------------
token_lists = st.lists(st.integers(1, 10**6), min_size=2, max_size=8)


@settings(deadline=None, max_examples=40)
@given(token_lists, st.floats(0.3, 3.0), st.floats(0.05, 10.0), st.integers(0, 2**31))
def test_candidates_sum_to_one_and_respect_the_caps(tokens, epochs, concentration, seed):
    run_tokens = int(sum(tokens) * 0.8)  # caps bind for the smaller components
    try:
        caps = repetition_caps(tokens, run_tokens, epochs)
    except HFMixtureError:
        assert epochs * sum(tokens) / run_tokens < 1 + 1e-9  # infeasible: rightly refused
        return
    X = dirichlet_candidates(200, token_prior(tokens), concentration=concentration, caps=caps,
                             seed=seed)
    assert X.shape == (200, len(tokens))
    assert np.all(X >= 0)
    np.testing.assert_allclose(X.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(X <= caps + 1e-9)
    assert np.array_equal(X, dirichlet_candidates(200, token_prior(tokens),
                                                  concentration=concentration, caps=caps, seed=seed))


def test_prior_temperature_and_projection():
    assert token_prior([1, 3]).round(6).tolist() == [0.25, 0.75]
    flat = token_prior([1, 100], temperature=1000.0)
    assert abs(flat[0] - flat[1]) < 0.01
    X = project_to_caps(np.array([[0.9, 0.1, 0.0], [0.0, 0.0, 1.0]]), np.array([0.5, 0.6, 0.4]))
    np.testing.assert_allclose(X.sum(axis=1), 1.0)
    assert np.all(X <= [0.5, 0.6, 0.4 + 1e-12])
    assert X[0, 1] > X[0, 2]  # excess goes to components in proportion to their weight
    with pytest.raises(HFMixtureError, match="too few for a 1000-token run"):
        repetition_caps([100, 100], run_tokens=1000, max_epochs=2.0)
    # Small concentrations give sparse mixtures, large ones stay near the prior.
    prior = np.full(4, 0.25)
    sparse = dirichlet_candidates(500, prior, concentration=0.1, seed=0)
    dense = dirichlet_candidates(500, prior, concentration=50.0, seed=0)
    assert (sparse.max(axis=1) > 0.9).mean() > 0.5
    assert np.abs(dense - 0.25).max() < 0.2


# -- a tiny store ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, tiny_texts, tiny_tokenizer_path) -> Path:
    """Three word-distinct domains as cluster_0..2 (the domain is the cluster, for tests only)."""
    import datasets

    from hf_mixture.formats import tokenize_corpus, write_clustered_corpus

    root = tmp_path_factory.mktemp("search_store")
    sources = sorted({s for s, _ in tiny_texts})
    ds = datasets.Dataset.from_dict({
        "text": [t for _, t in tiny_texts],
        "doc_id": [f"d{i}" for i in range(len(tiny_texts))],
        "cluster_id": [sources.index(s) for s, _ in tiny_texts],
    })
    write_clustered_corpus(ds, root / "corpus", tokenizer=str(tiny_tokenizer_path))
    return tokenize_corpus(root / "corpus", root / "store", str(tiny_tokenizer_path),
                           validation_fraction=0.2)


ONE = ExecutorConfig(workers=1)  # the proxies in this process: the fastest on tiny runs


def tiny_config(**overrides) -> SearchConfig:
    """Proxies of a few thousand tokens: 2 rounds of 2 runs, two components."""
    base = {"rounds": [2, 2], "exclude": ["cluster_2"], "predictor": "linear", "candidates": 500,
                "final_top_k": 10, "proxy_tokens": 1024, "proxy_seq_len": 32, "proxy_batch_size": 4,
                "proxy_eval_points": 3, "proxy_eval_tokens": 128, "target_max_tokens": 256,
                "proxy_learning_rate": 5e-3}
    base.update(overrides)
    return SearchConfig(**base)


@pytest.fixture
def target_file(tmp_path, tiny_texts) -> Path:
    """Held-out text of the excluded domain (the search must pick what helps it)."""
    path = tmp_path / "target.jsonl"
    texts = [t for s, t in tiny_texts if s == "scripture"][:20]
    path.write_text("".join(json.dumps({"text": t, "source": "ignored"}) + "\n" for t in texts))
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_search_writes_mixture_runs_and_report(tiny_store, target_file, tmp_path):
    from hf_mixture.mixture import Mixture

    out = tmp_path / "search"
    result = run_search(tiny_store, str(target_file), out, tiny_config(), executor=ONE,
                        progress=False)
    assert result.status == "complete"
    mixture = Mixture.load(out / "mixture.yaml")
    assert mixture.component_names == ["cluster_0", "cluster_1"]
    assert sum(mixture.weights().values()) == pytest.approx(1.0)
    assert all(c.max_epochs == 4.0 for c in mixture.components)
    runs = _read_jsonl(out / "runs.jsonl")
    assert [r["run"] for r in runs] == ["r1-000", "r1-001", "r2-000", "r2-001"]
    assert all(r["status"] == "finished" and np.isfinite(r["target"]) for r in runs)
    assert all(set(r["weights"]) == {"cluster_0", "cluster_1"} for r in runs)
    assert runs[2]["predicted"] is not None  # round 2 came from the predictor
    metrics = json.loads((out / "runs" / "r1-000" / "metrics.json").read_text())
    assert [p["step"] for p in metrics["curve"]] == [1, 3, 8]
    assert set(metrics["domains"]) == {"cluster_0", "cluster_1"}
    assert metrics["num_params"] > 0 and metrics["tokens"] == 1024
    report = (out / "report.md").read_text()
    assert "## Iterations" in report and "| 2 | 2 | 2 | 0 |" in report
    assert "Predictor quality" in report and "linear (used)" in report
    assert (out / "weights.png").stat().st_size > 0
    assert (out / "predicted_vs_actual.png").stat().st_size > 0
    # The laws fit on the runs' eval curves.
    assert cli_main(["fit-laws", str(out), "--predict-steps", "1000"]) == 0


def test_the_answer_is_trained_and_a_resumed_search_does_not_retrain_it(tiny_store, tmp_path,
                                                                        capsys):
    from hf_mixture.mixture import Mixture

    out = tmp_path / "search"
    result = run_search(tiny_store, "mean", out, tiny_config(rounds=[3, 2]), executor=ONE,
                        progress=False)
    v = result.verification
    assert set(v["candidates"]) == {"predicted_best", "top_k_average", "best_run"}
    observed = {k: c["observed"] for k, c in v["candidates"].items()}
    assert all(np.isfinite(x) for x in observed.values())
    assert observed[v["winner"]] == min(observed.values())
    # The best run is reused, not trained again; the others are proxy runs of their own.
    assert v["candidates"]["best_run"]["runs"] == [f"runs/{result.best_run['run']}"]
    trained = sorted((out / "verify").glob("*/metrics.json"))
    assert 1 <= len(trained) <= 2
    # The returned mixture is the winner's, and it says so.
    mixture = Mixture.load(out / "mixture.yaml")
    winner_weights = v["candidates"][v["winner"]]["weights"]
    assert mixture.weights() == pytest.approx(winner_weights, abs=1e-6)
    assert f"{v['winner']} won with observed target {observed[v['winner']]:.4f}" \
        in mixture.description
    assert mixture.name == "search"  # named after its folder, not "search-search"
    assert result.observed_target <= result.best_run["target"]
    report = (out / "report.md").read_text()
    assert "## Verification" in report and f"{v['winner']} **(winner)**" in report
    # A resumed search trains none of them again.
    stamps = [p.stat().st_mtime_ns for p in trained]
    again = run_search(tiny_store, "mean", out, tiny_config(rounds=[3, 2]), executor=ONE,
                        progress=False)
    assert [p.stat().st_mtime_ns for p in trained] == stamps
    assert again.verification == v
    # More seeds train more runs; the CLI summary names the winner and the predictor's error.
    assert cli_main(["search", "--store", str(tiny_store), "--target", "mean", "--output",
                     str(out), "--config", str(_config_file(tmp_path, rounds=[3, 2])),
                     "--verify-seeds", "2"]) == 0
    printed = capsys.readouterr().out
    assert "winner: " in printed and "(trained, 2 seed(s))" in printed
    assert "predictor off by" in printed
    assert len(list((out / "verify").glob("*-seed1/metrics.json"))) == 3


def test_transfer_check_reports_same_scale_and_transfer_spearman(tiny_store, tmp_path):
    out = tmp_path / "search"
    result = run_search(tiny_store, "mean", out,
                        tiny_config(rounds=[4], transfer_check=True, transfer_runs=3,
                                    transfer_model="cpu-5m", verify_seeds=0), executor=ONE,
                        progress=False)
    t = result.transfer
    assert t["runs"] == ["r1-000", "r1-001", "r1-002"] and not t["failed"]
    assert t["num_params"] > t["small_num_params"]  # a larger model
    for name in ("hybrid", "mixing_law", "lightgbm", "linear"):
        assert name in t["spearman"] or name in t["errors"]
    spec = json.loads((out / "transfer" / "r1-000" / "spec.json").read_text())
    assert spec["proxy"]["model"] == "cpu-5m" and spec["small_run"] == "r1-000"
    report = (out / "report.md").read_text()
    assert "| predictor | same-scale Spearman | MAE | transfer Spearman |" in report
    assert "`cpu-5m`" in report


@pytest.mark.slow
def test_two_workers_train_the_same_runs_as_one_process(tiny_store, tmp_path):
    """The proxy stage on two datatrove worker processes gives exactly the in-process results."""
    config = tiny_config(rounds=[2, 2])
    here = run_search(tiny_store, "mean", tmp_path / "one" / "search", config, executor=ONE,
                      progress=False)
    pool = run_search(tiny_store, "mean", tmp_path / "pool" / "search", config,
                      executor=ExecutorConfig(workers=2), progress=False)
    assert [r["target"] for r in here.runs] == [r["target"] for r in pool.runs]
    assert [r["domains"] for r in here.runs] == [r["domains"] for r in pool.runs]
    assert (here.output_dir / "mixture.yaml").read_text() == \
        (pool.output_dir / "mixture.yaml").read_text()
    stats = json.loads((pool.output_dir / "logs" / "proxies-r1" / "stats.json").read_text())
    assert stats  # the proxies ran as datatrove tasks
    assert SearchConfig(proxy_device="cpu", proxy_threads=1).default_workers() >= 1


def test_interrupted_search_resumes_without_redoing_finished_runs(tiny_store, tmp_path):
    calls = []

    def interrupt_second(model, tokenizer):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the second run
        return float(sum(p.detach().float().abs().mean() for p in model.parameters()))

    out = tmp_path / "search"
    with pytest.raises(KeyboardInterrupt):
        run_search(tiny_store, interrupt_second, out, tiny_config(rounds=[3], verify_seeds=0),
                   progress=False)
    first = out / "runs" / "r1-000" / "metrics.json"
    assert first.is_file()
    assert not (out / "runs" / "r1-001" / "metrics.json").exists()
    stamp = first.stat().st_mtime_ns
    result = run_search(tiny_store, interrupt_second, out, tiny_config(rounds=[3], verify_seeds=0),
                        progress=False)
    assert result.status == "complete"
    assert first.stat().st_mtime_ns == stamp  # not redone
    assert len(calls) == 4  # 1 + the interrupted one + the two left
    # Extending the rounds reuses everything done so far.
    more = run_search(tiny_store, interrupt_second, out, tiny_config(rounds=[3, 1], verify_seeds=0),
                      progress=False)
    assert [r["run"] for r in more.runs] == ["r1-000", "r1-001", "r1-002", "r2-000"]
    assert len(calls) == 5


def test_a_crashing_run_is_recorded_failed_and_the_search_goes_on(tiny_store, tmp_path):
    calls = []

    def crash_on_second(model, tokenizer):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in the proxy")
        return float(len(calls))

    out = tmp_path / "search"
    result = run_search(tiny_store, crash_on_second, out, tiny_config(rounds=[4], verify_seeds=0),
                        progress=False)
    statuses = [r["status"] for r in _read_jsonl(out / "runs.jsonl")]
    assert statuses == ["finished", "failed", "finished", "finished"]
    failed = json.loads((out / "runs" / "r1-001" / "failed.json").read_text())
    assert failed["status"] == "failed" and "boom in the proxy" in failed["error"]
    assert result.status == "complete"
    assert "## Failed runs" in (out / "report.md").read_text()
    # A rerun does not retry the failure unless asked.
    run_search(tiny_store, crash_on_second, out, tiny_config(rounds=[4], verify_seeds=0),
               progress=False)
    assert len(calls) == 4
    run_search(tiny_store, crash_on_second, out,
               tiny_config(rounds=[4], retry_failed=True, verify_seeds=0), progress=False)
    assert len(calls) == 5
    assert (out / "runs" / "r1-001" / "metrics.json").is_file()
    assert not (out / "runs" / "r1-001" / "failed.json").exists()


def test_too_few_finished_runs_is_an_error_and_the_folder_stays_resumable(tiny_store, tmp_path):
    state = {"fail": True}

    def flaky(model, tokenizer):
        if state["fail"]:
            raise RuntimeError("evaluation server down")
        return 1.0 + float(next(model.parameters()).detach().float().mean())

    out = tmp_path / "search"
    with pytest.raises(HFMixtureError, match=r"only 0 proxy run\(s\) finished \(2 failed"):
        run_search(tiny_store, flaky, out, tiny_config(), progress=False)
    assert not (out / "rounds" / "round_2.json").exists()
    state["fail"] = False
    result = run_search(tiny_store, flaky, out, tiny_config(rounds=[2, 1], retry_failed=True),
                        progress=False)
    assert result.status == "complete" and len(result.runs) == 3


def test_every_round_is_a_stage_of_one_task_per_run(tiny_store, tmp_path):
    out = tmp_path / "search"
    run_search(tiny_store, "mean", out, tiny_config(rounds=[3, 2]), executor=ONE, progress=False)
    logs = out / "logs"
    for stage, tasks in (("plan-r1", 1), ("proxies-r1", 3), ("plan-r2", 1), ("proxies-r2", 2)):
        assert len(list((logs / stage / "completions").iterdir())) == tasks, stage
    final = [p.name for p in logs.iterdir() if p.name.startswith("proxies-final-")]
    assert len(final) == 1 and len(list((logs / final[0] / "completions").iterdir())) == 3
    assert json.loads((out / "rounds" / "final.json").read_text())  # the verification runs


def test_a_rerun_while_slurm_jobs_hold_the_search_reports_it_and_submits_nothing(
        tiny_store, tmp_path, monkeypatch, capsys):
    import hf_mixture.executors as ex

    out = tmp_path / "search"
    run_search(tiny_store, "mean", out, tiny_config(rounds=[2]), executor=ONE, progress=False)
    lock = tmp_path / ".search.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "t", "jobs": ["41", "42"]}))
    monkeypatch.setattr(ex, "slurm_job_states", lambda jobs: {"42": "PENDING"})
    submitted = []
    monkeypatch.setattr(ex, "submit_stages", lambda *a, **k: submitted.append(a) or ["1"])
    result = run_search(tiny_store, "mean", out, tiny_config(rounds=[2, 2]), executor=ONE,
                        progress=False)
    assert result.status == "queued" and not submitted
    assert "already queued; nothing submitted" in result.state
    assert "42 pending" in result.state and "2 finished, 0 failed, 0 pending" in result.state
    assert cli_main(["search", "--store", str(tiny_store), "--target", "mean", "--output",
                     str(out), "--config", str(_config_file(tmp_path, rounds=[2]))]) == 0
    assert "already queued" in capsys.readouterr().out
    assert lock.is_file()
    # Once none of its jobs is queued or running (a stage failed), the lock is taken over.
    monkeypatch.setattr(ex, "slurm_job_states", lambda jobs: {})
    done = run_search(tiny_store, "mean", out, tiny_config(rounds=[2, 2]), executor=ONE,
                      progress=False)
    assert done.status == "complete" and len(done.runs) == 4 and not lock.exists()


def test_executor_options_are_checked_before_anything_runs(tiny_store, tmp_path, capsys):
    out = str(tmp_path / "out")
    base = ["search", "--store", str(tiny_store), "--target", "mean", "--output", out]
    err = _cli(capsys, *base, "--tasks", "4")
    assert "--tasks does not apply to hf-mixture search" in err
    err = _cli(capsys, *base, "--slurm-partition", "gpu")
    assert "only apply with --executor slurm" in err
    err = _cli(capsys, *base, "--executor", "ray", "--ray-address", "127.0.0.1:9")
    assert "--ray-address '127.0.0.1:9' does not answer" in err
    assert not (tmp_path / "out" / "runs").exists()


def _config_file(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "tiny_search.yaml"
    data = {k: v for k, v in tiny_config(**overrides).to_dict().items()
            if v is not None and v != getattr(SearchConfig(), k)}
    path.write_text(yaml.safe_dump(data))
    return path


# -- bad input ----------------------------------------------------------------------------------
def _cli(capsys, *argv) -> str:
    assert cli_main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_search_end_to_end_with_config_file(tiny_store, tmp_path, capsys):
    cfg = tmp_path / "search.yaml"
    settings_ = {k: v for k, v in tiny_config().to_dict().items()
                 if k in ("exclude", "predictor", "candidates", "proxy_tokens", "proxy_seq_len",
                          "proxy_batch_size", "proxy_eval_points", "proxy_eval_tokens", "workers")}
    cfg.write_text(yaml.safe_dump({**settings_, "rounds": [3], "predictor": "auto"}))
    out = tmp_path / "cli"
    assert cli_main(["search", "--store", str(tiny_store), "--target", "worst", "--output",
                     str(out), "--config", str(cfg), "--proxy-tokens", "512"]) == 0
    printed = capsys.readouterr().out
    assert "mixture:" in printed and "report:" in printed
    # auto: the predictor with the best held-out Spearman on these 3 runs chose the winner.
    result = json.loads((out / "result.json").read_text())
    assert result["predictor"] in ("linear", "loglinear", "mixing_law")
    assert "(auto: best held-out Spearman)" in (out / "report.md").read_text()
    runs = _read_jsonl(out / "runs.jsonl")
    assert len(runs) == 3 and runs[0]["tokens"] == 512
    # The same folder with different settings is refused (a new --output starts afresh).
    err = _cli(capsys, "search", "--store", str(tiny_store), "--target", "worst", "--output",
               str(out), "--config", str(cfg), "--proxy-tokens", "1024")
    assert "proxy_tokens = 512, not 1024" in err


def test_bad_inputs_are_one_sentence_and_exit_2(tiny_store, tmp_path, capsys):
    store = str(tiny_store)
    out = str(tmp_path / "out")
    bad_cfg = tmp_path / "search.yaml"
    bad_cfg.write_text("rounds: [2]\nproxy_tokenz: 5\n")
    err = _cli(capsys, "search", "--store", store, "--target", "mean", "--output", out,
               "--config", str(bad_cfg))
    assert "unknown key(s) 'proxy_tokenz'" in err
    err = _cli(capsys, "search", "--store", store, "--target", "mean", "--output", out,
               "--exclude", "cluster_0", "cluster_1", "cluster_2")
    assert "pool is empty" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n{"text": "   "}\n')
    err = _cli(capsys, "search", "--store", store, "--target", str(empty), "--output", out,
               "--proxy-tokens", "1024")
    assert "no usable text" in err
    no_col = tmp_path / "nocol.jsonl"
    no_col.write_text('{"body": "hello there"}\n')
    err = _cli(capsys, "search", "--store", store, "--target", str(no_col), "--output", out,
               "--proxy-tokens", "1024")
    assert "no column 'text'" in err
    pool = tmp_path / "pool.yaml"
    pool.write_text("components:\n- {name: cluster_0}\n- {name: cluster_9}\n")
    err = _cli(capsys, "search", "--store", store, "--target", "mean", "--output", out,
               "--pool", str(pool))
    assert "cluster_9" in err and str(pool) in err
    err = _cli(capsys, "search", "--store", str(tmp_path / "nostore"), "--target", "mean",
               "--output", out)
    assert "does not exist" in err
    err = _cli(capsys, "search", "--store", store, "--target", "no_such_module:fn", "--output", out,
               "--proxy-tokens", "1024")
    assert "cannot be imported" in err
    err = _cli(capsys, "search", "--store", store, "--target", "mean", "--output", out,
               "--predictor", "forest")
    assert "'forest'" in err and "lightgbm" in err
    err = _cli(capsys, "search", "--store", store, "--target", "mean", "--output", out)
    assert "too few for a 150000-token run" in err
    with pytest.raises(HFMixtureError, match="'rounds'"):
        SearchConfig(rounds=[])
    with pytest.raises(HFMixtureError, match="'final'"):
        SearchConfig(final="best")
    # Nothing was planned or run by any of the failures.
    assert not (tmp_path / "out" / "runs").exists()



# -- a real Slurm ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_search_on_a_real_slurm_equals_local(tiny_store, tmp_path, real_slurm, capsys):
    """One command submits the whole chain; a rerun while it is queued submits nothing; the
    result (run folders, targets, mixture.yaml) equals the in-process search's."""
    import subprocess
    import sys

    from conftest import wait_for_slurm_chain

    config = tiny_config(rounds=[2, 1])
    local = run_search(tiny_store, "mean", tmp_path / "local" / "search", config, executor=ONE,
                       progress=False)
    slurm = ExecutorConfig(executor="slurm", slurm_partition=real_slurm["partition"],
                           slurm_cpus_per_task=1, slurm_mem_per_cpu_gb=1,
                           slurm_time="00:30:00",
                           slurm_env_command=f"export PATH={Path(sys.executable).parent}:$PATH")
    out = tmp_path / "slurm" / "search"
    queued = run_search(tiny_store, "mean", out, config, executor=slurm, progress=False)
    assert queued.status == "queued" and queued.jobs
    # stages after the first wait for the one before
    show = subprocess.run(["scontrol", "show", "job", "-o", queued.jobs[-1]], check=False,
                          capture_output=True, text=True).stdout
    assert "afterok:" in show or "JobState=COMPLETED" in show or not show, show
    again = run_search(tiny_store, "mean", out, config, executor=slurm, progress=False)
    if again.status == "queued":  # (unless the chain already ended)
        assert "nothing submitted" in again.state
    wait_for_slurm_chain(out.with_name(".search.lock"), out)
    assert (out / "mixture.yaml").read_text() == (local.output_dir / "mixture.yaml").read_text()
    ran, here = _read_jsonl(out / "runs.jsonl"), local.runs
    assert [r["run"] for r in ran] == [r["run"] for r in here]
    assert [r["target"] for r in ran] == pytest.approx([r["target"] for r in here], abs=1e-6)
    assert json.loads((out / "result.json").read_text())["winner"] == local.verification["winner"]
    # Bad input is one sentence before anything is submitted.
    with pytest.raises(HFMixtureError, match="Slurm has no partition 'nope'"):
        run_search(tiny_store, "mean", tmp_path / "bad", config,
                   executor=ExecutorConfig(executor="slurm", slurm_partition="nope"))
    with pytest.raises(HFMixtureError, match="--slurm-env-command 'false' fails here"):
        run_search(tiny_store, "mean", tmp_path / "bad", config,
                   executor=ExecutorConfig(executor="slurm", slurm_partition="local",
                                           slurm_env_command="false"))
    with pytest.raises(HFMixtureError, match="has none"):
        run_search(tiny_store, "mean", tmp_path / "bad", config,
                   executor=ExecutorConfig(executor="slurm", slurm_partition="local",
                                           slurm_gpus_per_task=1))
    assert not (tmp_path / "bad").exists()


def test_jobs_waiting_on_a_failed_stage_do_not_hold_the_output(tmp_path, monkeypatch):
    """squeue's DependencyNeverSatisfied jobs can never start: cancelled, not alive."""
    import os
    import stat

    from hf_mixture.executors import slurm_job_states

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cancelled = tmp_path / "scancel.txt"
    (bin_dir / "squeue").write_text("#!/bin/sh\necho '7 RUNNING None'\n"
                                    "echo '8 PENDING DependencyNeverSatisfied'\n"
                                    "echo '9 PENDING Dependency'\n")
    (bin_dir / "scancel").write_text(f"#!/bin/sh\necho \"$@\" >> {cancelled}\n")
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert slurm_job_states(["7", "8", "9", "10"]) == {"7": "RUNNING", "9": "PENDING"}
    assert cancelled.read_text().split() == ["8"]


@pytest.mark.slow
def test_search_on_a_real_ray_instance_equals_local(tiny_store, tmp_path):
    ray = pytest.importorskip("ray")
    config = tiny_config(rounds=[2, 1])
    local = run_search(tiny_store, "mean", tmp_path / "local" / "search", config, executor=ONE,
                       progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_search(tiny_store, "mean", tmp_path / "ray" / "search", config,
                            executor=ExecutorConfig(executor="ray"), progress=False)
    finally:
        ray.shutdown()
    assert on_ray.status == "complete"
    assert [r["run"] for r in on_ray.runs] == [r["run"] for r in local.runs]
    assert [r["target"] for r in on_ray.runs] == pytest.approx(
        [r["target"] for r in local.runs], abs=1e-6)
    assert (on_ray.output_dir / "mixture.yaml").read_text() == \
        (local.output_dir / "mixture.yaml").read_text()
    with pytest.raises(HFMixtureError, match="asks for more GPUs than the Ray cluster has"):
        ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
        try:
            run_search(tiny_store, "mean", tmp_path / "bad", config,
                       executor=ExecutorConfig(executor="ray", ray_gpus_per_task=1))
        finally:
            ray.shutdown()
