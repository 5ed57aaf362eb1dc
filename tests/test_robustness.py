"""Nothing silently wrong: what is read is checked, writers lock, interrupted saves resume.

Each case is a fault a hostile user (or a SIGKILL) produces: the answer is one sentence naming
the file/field, a non-zero exit, and nothing half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hf_mixture import cli
from hf_mixture._io import output_lock, remove_stale_temporaries
from hf_mixture.errors import HFMixtureError
from hf_mixture.formats import TokenStore, TokenStoreWriter

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def store_path(tmp_path) -> Path:
    path = tmp_path / "store"
    rng = np.random.default_rng(0)
    with TokenStoreWriter(path, vocab_size=300, eos_token_id=0, tokenizer_name="t") as w:
        for i in range(10):
            w.add("cluster_0", "train", rng.integers(1, 300, 20), {"cluster_id": 0})
            w.add("cluster_0", "validation", rng.integers(1, 300, 5), {"cluster_id": 0})
    return path


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path: Path, m: dict) -> None:
    (path / "manifest.json").write_text(json.dumps(m))


def _validate(capsys, *args) -> tuple[int, str]:
    code = cli.main(["validate", *args])
    return code, capsys.readouterr().err.strip()


def test_store_offsets_past_the_end(store_path, capsys):
    idx = np.memmap(store_path / "cluster_0" / "train.idx", dtype="<i8", mode="r+")
    idx[-1] += 1000
    idx.flush()
    code, err = _validate(capsys, "--store", str(store_path))
    assert code == 2 and "train.idx': the offsets run from 0 to 1200" in err


def test_store_offsets_that_decrease(store_path, capsys):
    idx = np.memmap(store_path / "cluster_0" / "train.idx", dtype="<i8", mode="r+")
    idx[3], idx[4] = idx[4], idx[3]
    idx.flush()
    code, err = _validate(capsys, "--store", str(store_path))
    assert code == 2 and "offset 4 is smaller than offset 3" in err


def test_store_bin_short_with_the_manifest_edited_to_match(store_path, capsys):
    bin_path = store_path / "cluster_0" / "train.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:-100])  # 50 uint16 tokens short
    m = _manifest(store_path)
    m["components"]["cluster_0"]["train"]["tokens"] -= 50
    _write_manifest(store_path, m)
    code, err = _validate(capsys, "--store", str(store_path))
    assert code == 2 and "the offsets run from 0 to 200, but 'train.bin' holds 150 tokens" in err


def test_store_metadata_with_twice_the_rows(store_path, capsys):
    meta = store_path / "cluster_0" / "train.meta.parquet"
    table = pq.read_table(meta)
    pq.write_table(pa.concat_tables([table, table]), meta)
    code, err = _validate(capsys, "--store", str(store_path))
    assert code == 2 and "train.meta.parquet' has 20 rows, but the store holds 10" in err


@pytest.mark.parametrize("field, value, match", [
    ("eos_token_id", 70000, "field 'tokenizer.eos_token_id' is 70000, outside the vocabulary"),
    ("vocab_size", 70000, "more ids than dtype u2 holds"),
])
def test_store_manifest_tokenizer_facts(store_path, capsys, field, value, match):
    m = _manifest(store_path)
    m["tokenizer"][field] = value
    _write_manifest(store_path, m)
    code, err = _validate(capsys, "--store", str(store_path))
    assert code == 2 and match in err


def test_store_manifest_shape_errors_are_one_sentence(store_path, capsys):
    m = _manifest(store_path)
    m["components"] = ["cluster_0"]
    _write_manifest(store_path, m)
    code, err = _validate(capsys, "--store", str(store_path))
    assert code == 2 and "field 'components' must be a non-empty mapping" in err
    del m["dtype"]
    _write_manifest(store_path, m)
    code, err = _validate(capsys, "--store", str(store_path))
    assert code == 2 and "field 'dtype' is None" in err


def test_a_vocabulary_smaller_than_the_ids_is_refused_when_the_store_opens(store_path, capsys):
    m = _manifest(store_path)
    m["tokenizer"]["vocab_size"] = 100  # the ids go up to 299
    _write_manifest(store_path, m)
    with pytest.raises(HFMixtureError, match=r"max_id' is 29\d, outside the vocabulary of "
                                             r"size 100"):
        TokenStore(store_path)
    code, err = _validate(capsys, "--store", str(store_path))
    assert code == 2 and "outside the vocabulary of size 100" in err
    # a manifest without the recorded largest id: the bounded read of the files finds one
    for split in m["components"]["cluster_0"].values():
        split.pop("max_id")
    _write_manifest(store_path, m)
    with pytest.raises(HFMixtureError, match=r"component 'cluster_0' \(train\): token 0 is id "
                                             r"\d+, outside the vocabulary of size 100"):
        TokenStore(store_path)


def test_training_on_a_store_whose_vocabulary_lies_is_one_sentence(store_path, tmp_path,
                                                                   capsys):
    m = _manifest(store_path)
    m["tokenizer"]["vocab_size"] = 100
    _write_manifest(store_path, m)
    mix = tmp_path / "m.yaml"
    mix.write_text("components:\n  - name: cluster_0\n    weight: 1\n")
    code = cli.main(["train", str(TESTS.parent / "recipes" / "tiny_cpu.yaml"), "--store",
                     str(store_path), "--mixture", str(mix), "--output-dir",
                     str(tmp_path / "run"), "--max-steps", "1", "--seq-len", "16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "vocabulary of size 100" in err, err
    assert not (tmp_path / "run").exists()


def test_validate_deep_reads_every_id(tmp_path, capsys):
    store_path = tmp_path / "big"
    with TokenStoreWriter(store_path, vocab_size=300, eos_token_id=0, tokenizer_name="t") as w:
        w.add("cluster_0", "train", np.arange(300_000) % 299 + 1, {"cluster_id": 0})
        w.add("cluster_0", "validation", [1, 2, 3], {"cluster_id": 0})
    bin_path = store_path / "cluster_0" / "train.bin"
    ids = np.fromfile(bin_path, dtype="<u2")
    ids[150_000] = 400  # in the middle, past the vocabulary of 300; the manifest says 299
    ids.tofile(bin_path)
    assert _validate(capsys, "--store", str(store_path))[0] == 0  # cheap checks pass
    code, err = _validate(capsys, "--store", str(store_path), "--deep")
    assert code == 2 and "token 150000 is id 400, outside the vocabulary of size 300" in err


def test_duplicate_yaml_keys_are_refused(tmp_path):
    from hf_mixture.mixture import Mixture

    path = tmp_path / "m.yaml"
    path.write_text("components:\n  - name: a\n    weight: 1\n    weight: 9\n")
    with pytest.raises(HFMixtureError, match=r"m.yaml line 4: key 'weight' appears twice"):
        Mixture.load(path)


@pytest.mark.parametrize("query, match", [
    ("(" * 2000 + "cluster_id == 1" + ")" * 2000, "too many nested parentheses"),
    ("not " * 3000 + "cluster_id == 1", "nested too deep"),
])
def test_a_query_nested_thousands_deep_is_one_sentence(tmp_path, capsys, query, match):
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps({"components": [{"name": "a", "query": query}]}))
    code = cli.main(["validate", str(path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and match in err and len(err) < 400, err


def test_an_output_path_that_cannot_be_written_is_one_sentence(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = cli.main(["playground", "--export", str(blocker / "sub")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(blocker) in err, err


def test_a_second_writer_gets_one_sentence_and_a_dead_ones_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(HFMixtureError, match=f"is being written by process {os.getpid()}"):
            with output_lock(out):
                pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket

    (tmp_path / ".out.lock").write_text(json.dumps({"pid": int(dead),
                                                    "host": socket.gethostname()}))
    (tmp_path / f".out.tmp-{dead}-abcd1234").mkdir()  # what a SIGKILLed writer leaves
    with output_lock(out):
        assert not (tmp_path / f".out.tmp-{dead}-abcd1234").exists()
    assert not (tmp_path / ".out.lock").exists()
    assert remove_stale_temporaries(out) == []


def test_two_tokenize_runs_on_one_output_do_not_both_write(tmp_path, make_climblab,
                                                           tiny_tokenizer_path):
    from hf_mixture.formats.tokenize import tokenize

    corpus = make_climblab()
    with output_lock(tmp_path / "store"):  # another run is writing it
        with pytest.raises(HFMixtureError, match="is being written by process"):
            tokenize(corpus, tmp_path / "store", str(tiny_tokenizer_path))
    assert not (tmp_path / "store").exists()


def test_inspect_checks_clusters_json_against_the_files(tmp_path, capsys):
    import datasets

    from hf_mixture.formats import write_clustered_corpus

    out = write_clustered_corpus(datasets.Dataset.from_dict(
        {"tokens": [[1, 2, 3]] * 4, "cluster_id": [0, 0, 1, 1]}), tmp_path / "c")
    m = json.loads((out / "clusters.json").read_text())
    m["clusters"][0]["tokens"] *= 10
    (out / "clusters.json").write_text(json.dumps(m))
    code = cli.main(["inspect", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "field 'clusters[id=0].tokens' is 60, but the files of cluster_0/ " \
                         "hold 6 tokens" in err


_DYING = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from _trainer_helpers import Recording, small_store, small_trainer

    class Dying(Recording):  # killed in the middle of writing checkpoint-4
        def _save_rng_state(self, output_dir):
            super()._save_rng_state(output_dir)
            if str(output_dir).endswith("checkpoint-4"):
                os.kill(os.getpid(), signal.SIGKILL)

    store = small_store({store!r})
    trainer, _ = small_trainer(store, {out!r}, trainer_class=Dying, save_total_limit=1)
    trainer.train()
""")


def test_sigkill_during_a_save_resumes_from_the_previous_complete_checkpoint(tmp_path, caplog):
    from _trainer_helpers import small_store, small_trainer

    out = tmp_path / "run"
    script = tmp_path / "dying.py"
    script.write_text(_DYING.format(tests=str(TESTS), store=str(tmp_path / "store"),
                                    out=str(out)))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    # checkpoint-4 is half-written (no trainer_state.json); with save_total_limit=1 the old
    # rotation would already have deleted checkpoint-2 -- it must still be there, complete.
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-4" /
                                                    "trainer_state.json").exists()
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()

    torch.set_num_threads(1)
    store = small_store(tmp_path / "store2")
    full, _ = small_trainer(store, tmp_path / "full")
    full.train()
    resumed, _ = small_trainer(store, out)
    resumed.train(resume_from_checkpoint=True)
    assert "Skipping" in caplog.text and "checkpoint-4" in caplog.text
    assert len(resumed.seen) == 6  # steps 3..5 from checkpoint-2
    for a, b in zip(resumed.seen, full.seen[4:]):
        assert torch.equal(a, b)
    losses = {e["step"]: e["loss"] for e in full.state.log_history if "loss" in e}
    again = {e["step"]: e["loss"] for e in resumed.state.log_history if "loss" in e}
    for step in (3, 4, 5):
        assert again[step] == pytest.approx(losses[step], rel=1e-4)


def test_a_tokenizer_of_another_vocabulary_is_refused(tmp_path, tiny_store, tiny_tokenizer_path):
    from transformers import PreTrainedTokenizerFast

    from hf_mixture.formats.tokenizers import check_tokenizer_matches, load_tokenizer
    from hf_mixture.search.target import store_tokenizer

    same = load_tokenizer(str(tiny_tokenizer_path))
    check_tokenizer_matches(same, tiny_store, "test")  # the store's own tokenizer passes
    from hf_mixture import playground

    other = playground.tokenizer()  # 8,192 ids, not the tiny store's
    assert isinstance(other, PreTrainedTokenizerFast)
    with pytest.raises(HFMixtureError, match="is not the tokenizer of token store"):
        check_tokenizer_matches(other, tiny_store, "saved beside the model")
    with pytest.raises(HFMixtureError, match="tokenizing the search target"):
        store_tokenizer(tiny_store, str(playground.tokenizer_dir()))


@pytest.mark.parametrize("field, value", [("dirichlet_concentration", float("inf")),
                                          ("proxy_weight_decay", float("nan")),
                                          ("proxy_weight_decay", -0.1)])
def test_search_settings_are_checked_before_anything_is_recorded(tmp_path, tiny_store, field,
                                                                 value):
    from hf_mixture.search import SearchConfig, run_search

    with pytest.raises(HFMixtureError, match=f"Field '{field}'"):
        run_search(tiny_store, "mean", tmp_path / "search", SearchConfig(**{field: value}))
    assert not (tmp_path / "search").exists()


def test_a_long_text_is_tokenized_in_pieces_with_the_same_ids(tiny_tokenizer_path, monkeypatch):
    from hf_mixture.formats import tokenizers as clustered

    backend = clustered.load_tokenizer(str(tiny_tokenizer_path)).backend_tokenizer
    text = " ".join(f"word{i % 97} and\nmore" for i in range(3000))
    whole = clustered.encode_texts(backend, [text])[0]
    monkeypatch.setattr(clustered, "ENCODE_PIECE_CHARS", 1000)
    assert len(clustered._pieces(text)) > 10
    assert clustered.encode_texts(backend, [text, "short"])[0] == whole


def test_small_faults_are_one_sentence(store_path, tmp_path):
    from hf_mixture.mixture.cli import parse_tokens

    with pytest.raises(HFMixtureError, match="has the splits train, validation, not 'test'"):
        TokenStore(store_path).num_docs("cluster_0", split="test")
    with pytest.raises(HFMixtureError, match="too large to be a token count"):
        parse_tokens("1e400")


def test_a_rerun_of_tokenize_with_overwrite_leaves_a_current_store_alone(
        tmp_path, make_climblab, tiny_tokenizer_path):
    from hf_mixture.formats.tokenize import tokenize

    corpus = make_climblab()
    first = tokenize(corpus, tmp_path / "store", str(tiny_tokenizer_path))
    mtime = (tmp_path / "store" / "manifest.json").stat().st_mtime_ns
    again = tokenize(corpus, tmp_path / "store", str(tiny_tokenizer_path), overwrite=True)
    assert first.written and not again.written
    assert (tmp_path / "store" / "manifest.json").stat().st_mtime_ns == mtime


def test_a_replaced_input_file_changes_the_cluster_stage_fingerprint(tmp_path):
    from hf_mixture.clustering.reader import plan_input

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(300)]}), path)
    before = plan_input(str(path)).fingerprint
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(60)]}), path)
    assert plan_input(str(path)).fingerprint != before  # same path, new content


class _Payload:  # what a hostile pickle carries: a class torch's weights_only loader refuses
    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.mark.parametrize("name", ["rng_state.pth", "scheduler.pt"])
def test_a_checkpoint_file_holding_a_pickle_payload_is_one_sentence(tmp_path, capsys, name):
    import pickle

    from _trainer_helpers import small_store, small_trainer

    torch.set_num_threads(1)
    store = small_store(tmp_path / "store")
    trainer, _ = small_trainer(store, tmp_path / "run", max_steps=2)
    trainer.train()
    ckpt = tmp_path / "run" / "checkpoint-2"
    (ckpt / name).write_bytes(pickle.dumps({"python": _Payload()}))
    again, _ = small_trainer(store, tmp_path / "run", max_steps=4)
    with pytest.raises(HFMixtureError, match=f"Checkpoint file '.*{name}' cannot be loaded "
                                             "safely: it holds something other than tensors"):
        again.train(resume_from_checkpoint=True)
    assert "this ran while loading" not in capsys.readouterr().out


# -- validate before working: nothing runs, and nothing is left, for a refused input ---------
def _cluster_cli(capsys, path, out, *extra) -> tuple[int, str]:
    code = cli.main(["cluster", str(path), "--output", str(out), "--quiet", *extra])
    return code, capsys.readouterr().err.strip()


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


_TEXTS = [{"text": f"document {i} about topic {i % 7} and words {i * 13}"} for i in range(40)]


@pytest.mark.parametrize("case, match", [
    ("ints", "row 0: field 'text' holds int, not a string"),
    ("null_late", "row 37: field 'text' is null, not a string"),
    ("missing_model", "Embedding model '/nonexistent/model' does not exist"),
    ("empty_model_folder", "holds neither modules.json (sentence-transformers) nor config.json"),
    ("k_too_large", "num_clusters=500 exceeds the number of documents in INPUT 'in' (at most 40"),
    ("bad_tokenizer", "Tokenizer '/nonexistent/tok' could not be loaded"),
    ("parquet_duplicate", "has the column name 'text' twice"),
    ("parquet_null", "row 2: field 'text' is null"),
])
def test_cluster_refuses_before_the_first_stage_and_leaves_no_work_folder(
        tmp_path, capsys, monkeypatch, case, match):
    from hf_mixture.executors import run_stages  # noqa: F401 - patched below

    ran = []
    monkeypatch.setattr("hf_mixture.clustering.pipeline.run_stages",
                        lambda *a, **k: ran.append(a[1][0].name))
    extra = ["--embedding-model", "hashing"]
    path = tmp_path / "in.jsonl"
    if case == "ints":
        _jsonl(path, [{"text": i} for i in range(40)])
    elif case == "null_late":
        _jsonl(path, _TEXTS[:37] + [{"text": None}] + _TEXTS[38:])
    else:
        _jsonl(path, _TEXTS)
    if case == "missing_model":
        extra = ["--embedding-model", "/nonexistent/model"]
    elif case == "empty_model_folder":
        (tmp_path / "model").mkdir()
        extra = ["--embedding-model", str(tmp_path / "model")]
    elif case == "k_too_large":
        extra += ["--num-clusters", "500"]
    elif case == "bad_tokenizer":
        extra += ["--tokenizer", "/nonexistent/tok"]
    elif case == "parquet_duplicate":
        path = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_arrays([pa.array(["a b"] * 5), pa.array(["c"] * 5)],
                                            names=["text", "text"]), path)
    elif case == "parquet_null":
        path = tmp_path / "in.parquet"
        pq.write_table(pa.table({"text": ["a b", "c d", None, "e f"]}), path)
    code, err = _cluster_cli(capsys, path, tmp_path / "out", *extra)
    assert code == 2 and len(err.splitlines()) == 1 and match in err, err
    assert ran == []  # refused before the first stage
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()


def test_a_refused_input_found_by_a_stage_removes_only_the_work_it_made(tmp_path, capsys,
                                                                        monkeypatch):
    from hf_mixture.clustering import reader

    monkeypatch.setattr(reader, "PREFLIGHT_FULL_BYTES", 0)  # a "large" input: first rows only
    monkeypatch.setattr(reader, "PREFLIGHT_ROWS", 5)
    path = _jsonl(tmp_path / "in.jsonl", _TEXTS[:30] + [{"text": 7}] + _TEXTS[31:])
    code, err = _cluster_cli(capsys, path, tmp_path / "out", "--embedding-model", "hashing")
    assert code == 2 and "row 30: field 'text' holds int" in err, err
    assert not (tmp_path / "out.work").exists()
    # a work folder holding an earlier valid run's finished tasks is kept for its resume
    keep = tmp_path / "out.work" / "earlier-run"
    keep.mkdir(parents=True)
    (keep / "plan.json").write_text("{}")
    code, err = _cluster_cli(capsys, path, tmp_path / "out", "--embedding-model", "hashing")
    assert code == 2 and (keep / "plan.json").is_file()
    assert [p.name for p in (tmp_path / "out.work").iterdir()] == ["earlier-run"]


@pytest.mark.parametrize("option, match", [
    (["--proxy_model", "/nonexistent/model"],
     "Field 'proxy_model' is '/nonexistent/model', neither a registered shape"),
    (["--proxy_init_from", "/nonexistent"],
     "Field 'proxy_init_from' is '/nonexistent', which is not a model folder"),
    (["--transfer_check", "--transfer_model", "/nonexistent/m"], "Field 'transfer_model'"),
    (["--tokenizer", "/nonexistent/tok"], "Tokenizer '/nonexistent/tok' could not be loaded"),
])
def test_search_checks_its_models_before_anything_is_recorded(tmp_path, tiny_store, capsys,
                                                              option, match):
    code = cli.main(["search", "--store", str(tiny_store.path), "--target", "mean", "--output",
                     str(tmp_path / "search"), "--rounds", "2", "--run_tokens", "2000",
                     "--proxy_tokens", "512", *option])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and match in err, err
    assert not (tmp_path / "search").exists()


def test_tokenize_on_an_executor_leaves_no_work_folder_for_a_refused_input(
        tmp_path, tiny_tokenizer_path, capsys):
    corpus = tmp_path / "corpus"
    for k in (0, 1):
        (corpus / f"cluster_{k}").mkdir(parents=True)
        pq.write_table(pa.table({"text": ["a b", None if k else "c", "d"],
                                 "cluster_id": [k] * 3}),
                       corpus / f"cluster_{k}" / "part.parquet")
    code = cli.main(["tokenize", str(corpus), "--output", str(tmp_path / "store"), "--tokenizer",
                     str(tiny_tokenizer_path), "--executor", "local", "--tasks", "2",
                     "--workers", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "row 1: field 'text' is None, not a string" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


def test_a_duplicated_column_in_a_clustered_corpus_is_one_sentence(tmp_path, capsys):
    (tmp_path / "c" / "cluster_0").mkdir(parents=True)
    pq.write_table(pa.Table.from_arrays(
        [pa.array(["a b"] * 3), pa.array([0] * 3), pa.array([0] * 3)],
        names=["text", "cluster_id", "cluster_id"]), tmp_path / "c" / "cluster_0" / "a.parquet")
    code = cli.main(["inspect", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and \
        "has the column name 'cluster_id' twice" in err, err


@pytest.mark.parametrize("query", ["sourse == 'code'", "not sourse == 'code'",
                                   "cluster_id == 0 or sourse == 'code'", {"sourse": ["code"]}])
def test_a_query_on_a_field_no_component_has_is_an_error(store_path, tmp_path, capsys, query):
    path = tmp_path / "m.yaml"
    path.write_text(json.dumps({"components": [{"name": "a", "query": query},
                                               {"name": "b", "query": "cluster_id == 0"}]}))
    code, err = _validate(capsys, str(path), "--store", str(store_path))
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "names the field 'sourse', which no component of token store" in err
    assert "its fields are cluster_id" in err


def test_num_clusters_of_a_large_input_is_checked_when_counted_before_embedding(
        tmp_path, capsys, monkeypatch):
    from hf_mixture.clustering import reader

    monkeypatch.setattr(reader, "PREFLIGHT_FULL_BYTES", 0)  # not counted before the stages
    path = _jsonl(tmp_path / "in.jsonl", _TEXTS)
    code, err = _cluster_cli(capsys, path, tmp_path / "out", "--embedding-model", "hashing",
                             "--num-clusters", "500")
    assert code == 2 and "num_clusters=500 exceeds the number of documents in INPUT 'in' (40, " \
                         "before deduplication)" in err, err
    assert not (tmp_path / "out.work").exists()
    assert not (tmp_path / "out").exists()


def test_store_metadata_keeps_a_field_the_first_document_lacks(tmp_path):
    from hf_mixture.mixture.query import select

    with TokenStoreWriter(tmp_path / "s", vocab_size=300, eos_token_id=0,
                          tokenizer_name="t") as w:
        w.add("c", "train", [1, 2], {})
        w.add("c", "train", [3], {"source": "code"})
        w.add("c", "validation", [4], {"source": "docs"})
    store = TokenStore(tmp_path / "s")
    assert store.metadata("c").column("source").to_pylist() == [None, "code"]
    assert select(store, "source == 'code'")["c"].tolist() == [1]
