"""Hub publishing, up to the network call: the exact files of the commit, the rendered cards,
and loading them back from a local folder.  Only ``HfApi.create_commit`` (and, once,
``create_repo``) is replaced; nothing reaches the network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_mixture.errors import HFMixtureError
from hf_mixture.hub import (
    commit_operations,
    load_mixture,
    push_mixture_to_hub,
    push_model_to_hub,
    render_mixture_card,
)
from hf_mixture.mixture import Component, Mixture, Stage

TOKEN = "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"


@pytest.fixture
def store(tiny_store):
    return tiny_store


@pytest.fixture
def mixture():
    return Mixture([Component("code", "source == 'code'", weight=3, max_epochs=8),
                    Component("rest", "source != 'code'", weight=1)],
                   stages=[Stage(0, {"code": 3, "rest": 1}),
                           Stage(0.5, {"code": 1, "rest": 1}, name="anneal")],
                   seed=7, name="code-heavy", description="More code than prose.")


def test_dry_run_writes_the_commit_and_loads_back(tmp_path, mixture, store):
    import datasets

    report = tmp_path / "search"
    report.mkdir()
    (report / "report.md").write_text("# Search\nround 1: 64 runs\n")
    (report / "runs.json").write_text("[]\n")
    (report / "weights.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 32)
    (report / "runs" / "r0-000").mkdir(parents=True)      # proxy runs: not uploaded
    (report / "runs" / "r0-000" / "config.json").write_text("{}")
    out = push_mixture_to_hub(mixture, "me/code-heavy", store=store, total_tokens=20_000,
                              report=report, source_revision="abc123",
                              materialize_tokens=32 * 10, seq_len=32,
                              local_dir=tmp_path / "repo")
    repo = Path(out)
    files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    assert files == ["README.md", "data/train-00000-of-00001.parquet", "mixture.yaml",
                     "report/report.md", "report/runs.json", "report/weights.png"]

    # The mixture round-trips through the folder, as from_pretrained would read it.
    assert load_mixture(repo) == mixture
    assert load_mixture(repo / "mixture.yaml").fingerprint == mixture.fingerprint
    assert Mixture.from_pretrained(str(repo)) == mixture

    card = (repo / "README.md").read_text()
    for needle in ("code-heavy", "| code |", "75.00%", "anneal", mixture.fingerprint,
                   "sampling seed: 7", "`abc123`", "transformers", "datasets",
                   "effective tokens", "![report/weights.png](report/weights.png)",
                   "load_mixture(\"me/code-heavy\")", "-m hf_mixture train"):
        assert needle in card, needle
    # The source corpus comes from the store's record when not given.
    assert str(store.manifest["source"]["path"]) in card

    # The mixed shards load with plain datasets (README configs), in training order.
    ds = datasets.load_dataset(str(repo), split="train")
    assert len(ds) == 10 and len(ds[0]["input_ids"]) == 32
    assert ds["sample"] == list(range(10))
    assert set(ds["component"]) <= {"code", "rest"}
    from hf_mixture.mixture import MixtureDataset

    data = MixtureDataset(store, mixture, seq_len=32, total_tokens=20_000)
    comps, ks, _ = data.sampler.choose(10)
    assert ds["input_ids"] == data.collate(comps, ks)["input_ids"].tolist()


def test_push_is_one_commit_with_exactly_the_staged_files(tmp_path, mixture, store, monkeypatch,
                                                          caplog, capsys):
    from huggingface_hub import CommitOperationAdd, HfApi

    calls = []

    def fake_create_commit(self, repo_id, operations, **kwargs):
        operations = list(operations)
        calls.append((self.token, repo_id, kwargs, {
            op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}))
        assert all(isinstance(op, CommitOperationAdd) for op in operations)
        return "https://huggingface.co/datasets/me/code-heavy/commit/0"

    monkeypatch.setattr(HfApi, "create_commit", fake_create_commit)
    caplog.set_level("DEBUG")
    url = push_mixture_to_hub(mixture, "me/code-heavy", store=store, total_tokens=20_000,
                              token=TOKEN, create_repo=False)
    assert url.endswith("/commit/0")
    assert len(calls) == 1
    token, repo_id, kwargs, uploaded = calls[0]
    assert token == TOKEN and repo_id == "me/code-heavy" and kwargs["repo_type"] == "dataset"
    assert sorted(uploaded) == ["README.md", "mixture.yaml"]
    # The same bytes as the dry run.
    local = Path(push_mixture_to_hub(mixture, "me/code-heavy", store=store, total_tokens=20_000,
                                     local_dir=tmp_path / "dry"))
    assert uploaded == {name: (local / name).read_bytes() for name in uploaded}
    assert Mixture.from_yaml(uploaded["mixture.yaml"].decode()) == mixture
    out = capsys.readouterr()
    assert TOKEN not in caplog.text + out.out + out.err


def test_push_creates_the_repo_privately_then_commits(mixture, monkeypatch):
    from huggingface_hub import HfApi

    log = []
    monkeypatch.setattr(HfApi, "create_repo",
                        lambda self, repo_id, **kw: log.append(("create_repo", repo_id, kw)))
    monkeypatch.setattr(HfApi, "create_commit",
                        lambda self, repo_id, ops, **kw: log.append(("create_commit", repo_id)))
    mixture.push_to_hub("me/mix", token=TOKEN)   # the method delegates to push_mixture_to_hub
    assert [entry[0] for entry in log] == ["create_repo", "create_commit"]
    assert log[0][2] == {"repo_type": "dataset", "private": True, "exist_ok": True}


def test_other_ranks_do_not_push(mixture, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(HfApi, "create_commit", lambda *a, **k: pytest.fail("rank 1 pushed"))
    assert push_mixture_to_hub(mixture, "me/mix", create_repo=False) is None


def test_load_mixture_from_a_hub_id_goes_through_snapshot_download(tmp_path, mixture, monkeypatch):
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    mixture.save(snapshot / "mixture.yaml")
    seen = {}

    def fake_snapshot_download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert load_mixture("me/code-heavy", revision="v1") == mixture
    assert seen["repo_type"] == "dataset" and seen["revision"] == "v1"
    assert "mixture.yaml" in seen["allow_patterns"]


def test_load_mixture_offline_miss_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(HFMixtureError, match="me/not-cached"):
        load_mixture("me/not-cached")


@pytest.mark.parametrize("bad", ["not a repo", "a/b/c", ""])
def test_bad_targets(bad, mixture, tmp_path):
    with pytest.raises(HFMixtureError):
        push_mixture_to_hub(mixture, bad, local_dir=tmp_path / "x")
    with pytest.raises(HFMixtureError):
        load_mixture(bad or "missing-file.yaml")


def test_stage_failure_leaves_nothing_behind(mixture, tmp_path):
    with pytest.raises(HFMixtureError, match="does not exist"):
        push_mixture_to_hub(mixture, "me/mix", report=tmp_path / "missing",
                            local_dir=tmp_path / "repo")
    with pytest.raises(HFMixtureError, match="store"):
        push_mixture_to_hub(mixture, "me/mix", materialize_tokens=100, local_dir=tmp_path / "r")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_card_without_store_says_what_is_not_recorded(mixture):
    card = str(render_mixture_card(mixture, "me/mix"))
    assert "source corpus: not recorded" in card and "## What a run draws" not in card
    assert card.startswith("---\n") and "hf-mixture" in card.split("---")[1]


def _fake_model_dir(path: Path, mixture: Mixture) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(path)
    mixture.save(path / "mixture.yaml")
    (path / "mixture_history.json").write_text(json.dumps([
        {"sample": 0, "tokens": 0, "weights": [0.75, 0.25], "reason": "initial", "stage": 0},
        {"sample": 40, "tokens": 1280, "weights": [0.5, 0.5], "reason": "ado: step 10",
         "stage": 0}]))
    (path / "eval_results.json").write_text(json.dumps({
        "eval_code_loss": 2.5, "eval_code_perplexity": 12.18, "eval_rest_loss": 3.0}))
    (path / "run_info.json").write_text(json.dumps({"num_parameters": 2432, "global_step": 20}))
    (path / "recipe.yaml").write_text("model:\n  hidden_size: 16\n")
    (path / "training_args.bin").write_bytes(b"pickle: never uploaded")
    (path / "checkpoint-10").mkdir()
    (path / "checkpoint-10" / "optimizer.pt").write_bytes(b"x")
    return path


def test_model_push_card_and_files(tmp_path, mixture, monkeypatch):
    from huggingface_hub import HfApi, ModelCard

    model_dir = _fake_model_dir(tmp_path / "run", mixture)
    calls = []
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, ops, **kw: calls.append(
        (repo_id, kw["repo_type"], sorted(op.path_in_repo for op in ops))) or "url")
    push_model_to_hub(model_dir, "me/tiny-llama", mixture_repo="me/code-heavy",
                      recipe_name="recipes/tiny_cpu.yaml", token=TOKEN, create_repo=False)
    assert calls == [("me/tiny-llama", "model",
                      ["README.md", "config.json", "eval_results.json", "generation_config.json",
                       "mixture.yaml", "mixture_history.json", "model.safetensors",
                       "recipe.yaml", "run_info.json"])]
    local = Path(push_model_to_hub(model_dir, "me/tiny-llama", mixture_repo="me/code-heavy",
                                   recipe_name="recipes/tiny_cpu.yaml",
                                   local_dir=tmp_path / "model_repo"))
    card = ModelCard.load(local / "README.md")
    assert card.data.datasets == ["me/code-heavy"]
    text = card.text
    for needle in ("https://huggingface.co/datasets/me/code-heavy", mixture.fingerprint,
                   "| code | 75.00% | 50.00% |", "changed 1 times", "| code | 2.5000 | 12.18 |",
                   "| rest | 3.0000 | - |", "tiny_cpu.yaml", "hidden_size: 16", "20 optimizer steps",
                   "AutoModelForCausalLM.from_pretrained(\"me/tiny-llama\")"):
        assert needle in text, needle
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(local).config.hidden_size == 16


def test_commit_operations_are_sorted_and_skip_hidden(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "junk").write_text("j")
    assert [op.path_in_repo for op in commit_operations(tmp_path)] == ["a/x.txt", "b.txt"]


def _http_error(status: int):
    from types import SimpleNamespace

    from huggingface_hub.errors import HfHubHTTPError

    response = SimpleNamespace(status_code=status, headers={}, url="https://hub/api/repos/create",
                               request=None, text="", json=lambda: {})
    return HfHubHTTPError(f"{status} Client Error", response=response)


@pytest.mark.parametrize("case, expected", [
    ("offline", "offline mode is on (HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE"),
    ("no network", "could not be reached"),
    ("no token", "no Hub token; run `hf auth login`"),
    ("bad token", "rejected the token (401)"),
    ("no permission", "no write permission there (403)"),
])
def test_push_failures_are_one_sentence_naming_what_to_do(case, expected, mixture, monkeypatch):
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", case == "offline")
    token = None if case == "no token" else TOKEN
    if case == "no network":  # a real request to a port nothing listens on
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    if case == "no token":
        monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    status = {"no token": 401, "bad token": 401, "no permission": 403}.get(case)
    if status or case == "offline":
        def refuse(self, repo_id, **kw):
            if case == "offline":
                from huggingface_hub.errors import OfflineModeIsEnabled
                raise OfflineModeIsEnabled("Cannot reach the Hub: offline mode is enabled.")
            raise _http_error(status)

        monkeypatch.setattr(HfApi, "create_repo", refuse)
    with pytest.raises(HFMixtureError) as info:
        mixture.push_to_hub("me/mix", token=token)
    message = str(info.value)
    assert expected in message and "'me/mix'" in message
    assert len(message.splitlines()) == 1 and TOKEN not in message
