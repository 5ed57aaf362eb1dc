"""hf-mixture inspect: clustered corpora and token stores, as a table and as JSON."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from hf_mixture.cli import main
from hf_mixture.errors import HFMixtureError
from hf_mixture.formats.inspect import format_table, inspect_path
from hf_mixture.formats.tokenize import tokenize_corpus
from hf_mixture.formats.writer import write_clustered_corpus


@pytest.fixture
def corpus(tmp_path, tiny_text_dataset, tiny_tokenizer_path):
    return write_clustered_corpus(
        tiny_text_dataset,
        tmp_path / "corpus",
        tokenizer=tiny_tokenizer_path,
        descriptions={
            0: {"description": "scripture: lord, moses"},
            1: {"description": "code: def, return"},
        },
    )


def test_inspect_clustered_corpus(corpus):
    info = inspect_path(corpus)
    manifest = json.loads((corpus / "clusters.json").read_text())
    assert info["kind"] == "clustered_corpus" and info["layout"] == "hf_mixture"
    assert info["tokens"] == manifest["tokens"] and info["docs"] == 180
    rows = {r["name"]: r for r in info["components"]}
    assert set(rows) == {"cluster_0", "cluster_1", "cluster_2"}
    assert rows["cluster_1"]["description"] == "code: def, return"
    assert rows["cluster_2"]["description"] is None
    for entry in manifest["clusters"]:
        r = rows[entry["config_name"]]
        assert (r["docs"], r["tokens"]) == (entry["docs"], entry["tokens"])
        assert r["share"] == pytest.approx(entry["tokens"] / manifest["tokens"])
    assert sum(r["share"] for r in info["components"]) == pytest.approx(1.0)


def test_inspect_climblab_folder(climblab_dir):
    info = inspect_path(climblab_dir)
    assert info["layout"] == "climblab" and info["tokenizer"] is None
    want = {
        k: int(
            sum(
                pq.read_table(f).column("token_count").to_numpy().sum()
                for f in (climblab_dir / f"cluster_{k}").glob("*.parquet")
            )
        )
        for k in (1, 2, 3)
    }
    assert {r["cluster_id"]: r["tokens"] for r in info["components"]} == want
    assert info["tokens"] == sum(want.values())


def test_inspect_token_store(corpus, tiny_tokenizer_path, tmp_path):
    store = tokenize_corpus(
        corpus, tmp_path / "store", tiny_tokenizer_path, validation_fraction=0.1
    )
    info = inspect_path(store)
    assert info["kind"] == "token_store"
    total = {r["name"]: r["tokens"] + r["validation_tokens"] for r in info["components"]}
    corpus_info = {r["name"]: r["tokens"] for r in inspect_path(corpus)["components"]}
    assert total == corpus_info  # every token lands in exactly one split
    assert all(r["validation_docs"] >= 1 for r in info["components"])
    assert info["components"][0]["description"] == "scripture: lord, moses"
    assert sum(r["share"] for r in info["components"]) == pytest.approx(1.0)
    table = format_table(info)
    assert "val docs" in table and "scripture: lord, moses" in table
    assert table.splitlines()[-1].startswith("total")


def test_cli_table_and_json(corpus, capsys):
    assert main(["inspect", str(corpus)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("clustered corpus (hf_mixture layout)")
    assert lines[1].split()[:4] == ["cluster", "docs", "tokens", "share"]
    assert any(line.startswith("cluster_1") and "code: def, return" in line for line in lines)
    assert main(["inspect", str(corpus), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == json.loads(json.dumps(inspect_path(corpus)))


def test_cli_bad_paths(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-mixture inspect: error:") and "missing' does not exist" in err
    assert err.count("\n") == 0
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 2
    assert "not a clustered corpus" in capsys.readouterr().err


def test_long_descriptions_are_cut(corpus):
    info = inspect_path(corpus)
    info["components"][0]["description"] = "word " * 100
    row = next(
        line for line in format_table(info, width=30).splitlines() if line.startswith("cluster_0")
    )
    assert row.endswith("…") and len(row.split("  ")[-1]) <= 30


def test_unreadable_store_manifest(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "manifest.json").write_text("{oops")
    with pytest.raises(HFMixtureError, match="manifest.json is not valid JSON"):
        inspect_path(tmp_path / "s")


def test_cli_output_cut_short_by_a_pipe_is_silent(corpus):
    """`hf-mixture inspect --json | head -c 10`: no BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "hf_mixture", "inspect", str(corpus), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()  # the reader goes away before the output is complete
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
