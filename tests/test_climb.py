"""`hf-mixture climb`: the whole chain on a tiny corpus, resumable, with clear errors."""

from __future__ import annotations

import json

import pytest
import yaml

from hf_mixture.cli import main
from hf_mixture.formats import ClusteredCorpus, TokenStore
from hf_mixture.mixture import Mixture

SEARCH = {"rounds": [2, 2], "predictor": "linear", "candidates": 500, "final_top_k": 10,
          "proxy_tokens": 1024, "proxy_seq_len": 32, "proxy_batch_size": 4, "proxy_eval_points": 3,
          "proxy_eval_tokens": 128, "proxy_learning_rate": 5e-3}


@pytest.fixture
def climb_config(tmp_path, tiny_texts, tiny_tokenizer_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "source": s}) + "\n" for s, t in tiny_texts))
    config = {
        "input": str(corpus), "output": str(tmp_path / "out"), "seed": 3,
        "tokenizer": str(tiny_tokenizer_path),
        "cluster": {"num_clusters": 6, "final_clusters": 3, "max_seq_length": 32, "prune": False},
        "tokenize": {"validation_fraction": 0.2},
        "search": SEARCH,
    }
    path = tmp_path / "climb.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_climb_runs_every_stage_then_skips_them_on_rerun(climb_config, tmp_path, capsys):
    assert main(["climb", "--config", str(climb_config)]) == 0
    out = tmp_path / "out"
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    for key in ("mixture", "plan", "report", "cluster_report", "store", "clusters"):
        assert summary[key] in printed
    # Four labelled stages, the search's answer in one line, and a last line with the time.
    for label in ("[1/4] cluster", "[2/4] tokenize", "[3/4] search", "[4/4] plan"):
        assert label in printed
    assert "winner: " in printed and "predictor off by" in printed
    last = printed.strip().splitlines()[-1]
    assert last.startswith("done in ") and " min: " in last and summary["mixture"] in last
    assert ClusteredCorpus(out / "clusters").cluster_ids == [0, 1, 2]
    store = TokenStore(out / "store")
    assert store.manifest["seed"] == 3
    mixture = Mixture.load(out / "mixture.yaml")
    assert sorted(mixture.component_names) == store.components
    assert mixture.name == "climb-out"
    # Components carry their cluster's description, and the plan shows it beside the name.
    clusters = json.loads((out / "clusters" / "clusters.json").read_text())
    assert all(c.description for c in mixture.components), clusters
    assert f"{mixture.components[0].name} — {mixture.components[0].description}" \
        in (out / "plan.md").read_text()
    assert abs(sum(mixture.weights().values()) - 1) < 1e-9
    assert "effective" in (out / "plan.md").read_text().lower()
    runs = (out / "search" / "runs.jsonl").read_text().splitlines()
    assert len(runs) == 4

    # A rerun with the same settings redoes nothing: clusters are skipped, the store is
    # current and every proxy run is finished.
    before = (out / "clusters" / "clusters.json").stat().st_mtime_ns
    assert main(["climb", "--config", str(climb_config)]) == 0
    assert "cluster: up to date" in capsys.readouterr().out
    assert (out / "clusters" / "clusters.json").stat().st_mtime_ns == before
    assert (out / "search" / "runs.jsonl").read_text().splitlines() == runs


def test_climb_bad_config_is_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "clustr": {}}))
    assert main(["climb", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "clustr" in err and str(bad) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()

    bad.write_text(yaml.safe_dump({"output": str(tmp_path / "out"), "cluster": {"num_clustrs": 3}}))
    assert main(["climb", "--config", str(bad)]) == 2
    assert "num_clustrs" in capsys.readouterr().err


def test_climb_missing_input_names_it(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["climb", "--input", str(missing), "--output", str(tmp_path / "out")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


def test_climb_rerun_after_the_input_changed_redoes_every_later_stage(climb_config, tmp_path,
                                                                      capsys):
    assert main(["climb", "--config", str(climb_config)]) == 0
    out = tmp_path / "out"
    first_store = TokenStore(out / "store").fingerprint
    capsys.readouterr()
    corpus = tmp_path / "corpus.jsonl"  # the same path, other content
    lines = corpus.read_text().splitlines(keepends=True)
    corpus.write_text("".join(lines[::2]))
    assert main(["climb", "--config", str(climb_config)]) == 0
    printed = capsys.readouterr().out
    assert "clustering again" in printed and "the clusters changed" in printed
    assert "the token store changed since it began; starting the search again" in printed
    store = TokenStore(out / "store")
    assert store.fingerprint != first_store
    search = json.loads((out / "search" / "search.json").read_text())
    assert search["store_fingerprint"] == store.fingerprint
    assert len((out / "search" / "runs.jsonl").read_text().splitlines()) == 4
    assert sum(store.num_docs(c) + store.num_docs(c, "validation")
               for c in store.components) == len(lines[::2])


def test_climb_refuses_a_missing_target_before_clustering(climb_config, tmp_path, capsys):
    code = main(["climb", "--config", str(climb_config), "--target",
                 str(tmp_path / "held_out.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "held_out.jsonl" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
