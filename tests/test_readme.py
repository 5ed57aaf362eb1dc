"""Every Python block of README.md runs, on a tiny stand-in for the main job's outputs.

The README's paths (``runs/climb/...``) are made in a temporary folder: a clustered
corpus of 4 clusters, its token store and the natural mixture.  The training block
runs 40 steps of 32-token sequences instead of 200 of 256 (evaluating every 5) and must
still show its point: the loss goes down and ADO changes the weights during the run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# (text in the README, what the test runs instead): sizes only, so the block stays itself.
SMALLER = [("max_steps=200", "max_steps=40"), ("logging_steps=20", "logging_steps=5"),
           ("eval_steps=20", "eval_steps=5"), ("seq_len=256", "seq_len=32"),
           ("fit_from_step=50", "fit_from_step=10")]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def climb_outputs(tmp_path, tiny_text_dataset, tiny_tokenizer_path, monkeypatch):
    from hf_mixture.formats import tokenize_corpus, write_clustered_corpus
    from hf_mixture.mixture import Mixture

    # A fourth cluster (half of domain 0) so that "cluster_3" exists as in the README.
    ds = tiny_text_dataset.map(lambda row, i: {"cluster_id": 3 if row["cluster_id"] == 0 and i % 2
                                               else row["cluster_id"]}, with_indices=True)
    root = tmp_path / "runs" / "climb"
    write_clustered_corpus(ds, root / "clusters", tokenizer=str(tiny_tokenizer_path),
                           descriptions={k: {"description": f"terms of cluster {k}"}
                                         for k in range(4)})
    store = tokenize_corpus(root / "clusters", root / "store", str(tiny_tokenizer_path),
                            validation_fraction=0.2)
    from hf_mixture.formats import TokenStore

    Mixture.from_store(TokenStore(store), weights="natural").save(root / "mixture.yaml")
    monkeypatch.chdir(tmp_path)
    return root


def test_the_readme_has_the_blocks_this_test_knows():
    blocks = python_blocks()
    assert len(blocks) == 3
    for text, _ in SMALLER:
        assert text in blocks[0], text


def test_every_readme_python_block_runs(climb_outputs, monkeypatch, capsys):
    from huggingface_hub import HfApi

    pushed = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: pushed.append(repo_id))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, repo_id, ops, **kw: pushed.append(
        sorted(op.path_in_repo for op in ops)))
    blocks = python_blocks()
    train = blocks[0]
    for text, smaller in SMALLER:
        train = train.replace(text, smaller)
    exec(compile(train, "README.md[training]", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    losses = [float(m) for m in re.findall(r"loss (\d+\.\d+)", printed)]
    weights = re.findall(r"weights ([\d. ]+)", printed)
    assert len(losses) >= 6 and losses[-1] < losses[0] - 0.5, printed   # it learns
    assert len(weights) == 8, printed                  # one compact line per evaluation
    assert weights[-1] != weights[0], printed          # ADO moved the weights during the run
    assert "{" not in printed                          # no dicts from the Trainer's printer

    exec(compile(blocks[1], "README.md[mixture]", "exec"), {"__name__": "readme"})
    assert "proportion" in capsys.readouterr().out     # the plan table
    assert pushed[0] == "me/my-mixture" and "mixture.yaml" in pushed[1]

    exec(compile(blocks[2], "README.md[datasets]", "exec"), {"__name__": "readme"})
    from datasets import get_dataset_config_names, load_dataset

    names = get_dataset_config_names("runs/climb/clusters")
    assert names[0] == "cluster_0" and names[-1] == "default"   # the order the README shows
    assert len(load_dataset("runs/climb/clusters", "cluster_3", split="train")) > 0
