"""hf-mixture tokenize: clustered corpus (ClimbLab ids or text) -> token store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_mixture.cli import main
from hf_mixture.errors import HFMixtureError
from hf_mixture.formats.token_store import TokenStore
from hf_mixture.formats.tokenize import tokenize, tokenize_corpus, validation_mask
from hf_mixture.formats.tokenizers import tokenizer_fingerprint
from hf_mixture.formats.writer import write_clustered_corpus


def _no_leftovers(path: Path) -> None:
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]


def _cluster_table(root: Path, k: int) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(f) for f in sorted((root / f"cluster_{k}").glob("*.parquet"))
    )


def _text_corpus(root: Path, texts_by_cluster: dict[int, list[str]]) -> Path:
    """A text-only clustered corpus (no tokens column), e.g. a raw-text ClimbLab mirror."""
    for k, texts in texts_by_cluster.items():
        (root / f"cluster_{k}").mkdir(parents=True)
        pq.write_table(
            pa.table(
                {
                    "text": texts,
                    "cluster_id": [k] * len(texts),
                    "doc_id": [f"{k}-{i}" for i in range(len(texts))],
                }
            ),
            root / f"cluster_{k}" / f"cluster_{k}_000.parquet",
        )
    return root


def test_climblab_ids_convert_without_retokenizing(
    climblab_dir, tiny_tokenizer_path, tiny_tokenizer, tmp_path
):
    out = tokenize_corpus(
        climblab_dir, tmp_path / "store", tiny_tokenizer_path, validation_fraction=0.2
    )
    store = TokenStore(out)
    assert store.components == ["cluster_1", "cluster_2", "cluster_3"]
    assert store.dtype == np.dtype("<u2") and store.eos_token_id == tiny_tokenizer.eos_token_id
    for k in (1, 2, 3):
        c = f"cluster_{k}"
        table = _cluster_table(climblab_dir, k)
        # The headline property: store tokens == sum of token_count.
        assert store.num_tokens(c, "train") + store.num_tokens(c, "validation") == int(
            table.column("token_count").to_numpy().sum()
        )
        assert store.num_docs(c, "train") + store.num_docs(c, "validation") == table.num_rows
        assert store.num_docs(c, "validation") >= 1 and store.num_docs(c, "train") >= 1
        assert store.info(c)["cluster_id"] == k
        # Ids are copied: every document appears, in order, in exactly one split.
        docs = {
            s: [store.document(c, i, s).tolist() for i in range(store.num_docs(c, s))]
            for s in ("train", "validation")
        }
        want = table.column("tokens").to_pylist()
        val = validation_mask([f"{k}/{i}" for i in range(len(want))], 0.2, seed=0)
        assert docs["train"] == [d for d, v in zip(want, val) if not v]
        assert docs["validation"] == [d for d, v in zip(want, val) if v]
        assert store.metadata(c, "train").column("cluster_id").to_pylist() == [k] * store.num_docs(
            c
        )
    m = store.manifest
    assert m["tokenizer"]["sha256"] == tokenizer_fingerprint(tiny_tokenizer)["sha256"]
    assert m["source"]["path"] == str(climblab_dir) and m["source"]["revision"] is None
    assert m["validation_fraction"] == 0.2 and m["seed"] == 0
    assert m["conversion"].startswith("token ids copied")


def test_text_corpus_is_tokenized(tmp_path, tiny_texts, tiny_tokenizer_path, tiny_tokenizer):
    texts = {
        0: [t for s, t in tiny_texts if s == "code"][:20],
        5: [t for s, t in tiny_texts if s == "scripture"][:9],
    }
    root = _text_corpus(tmp_path / "text", texts)
    store = TokenStore(
        tokenize_corpus(root, tmp_path / "store", tiny_tokenizer_path, validation_fraction=0.1)
    )
    for k, docs in texts.items():
        c = f"cluster_{k}"
        ids = tiny_tokenizer(docs, add_special_tokens=False)["input_ids"]
        meta = {
            s: store.metadata(c, s).column("doc_id").to_pylist() for s in ("train", "validation")
        }
        by_id = {f"{k}-{i}": x for i, x in enumerate(ids)}
        for s in ("train", "validation"):
            assert [store.document(c, i, s).tolist() for i in range(store.num_docs(c, s))] == [
                by_id[d] for d in meta[s]
            ]
        assert set(meta["train"]).isdisjoint(meta["validation"])  # never trained on
        assert store.num_tokens(c) + store.num_tokens(c, "validation") == sum(map(len, ids))
    assert store.manifest["validation_key"] == "doc_id"
    assert "text" not in store.metadata("cluster_0").column_names  # text is not copied


def test_written_corpus_round_trip_and_metadata(tmp_path, tiny_text_dataset, tiny_tokenizer_path):
    corpus = write_clustered_corpus(
        tiny_text_dataset,
        tmp_path / "c",
        tokenizer=tiny_tokenizer_path,
        descriptions={1: {"description": "code"}},
    )
    store = TokenStore(tokenize_corpus(corpus, tmp_path / "s", tiny_tokenizer_path))
    assert store.info("cluster_1")["description"] == "code"
    meta = store.metadata("cluster_0")
    assert set(meta.column_names) == {"cluster_id", "source", "doc_id", "quality"}
    assert set(meta.column("source").to_pylist()) == {"scripture"}
    manifest = json.loads((corpus / "clusters.json").read_text())
    for entry in manifest["clusters"]:
        c = f"cluster_{entry['id']}"
        assert store.num_tokens(c) + store.num_tokens(c, "validation") == entry["tokens"]


def test_validation_split_is_deterministic_and_seeded(
    tmp_path, tiny_text_dataset, tiny_tokenizer_path
):
    corpus = write_clustered_corpus(
        tiny_text_dataset, tmp_path / "c", tokenizer=tiny_tokenizer_path
    )

    def held_out(name, seed):
        store = TokenStore(
            tokenize_corpus(
                corpus, tmp_path / name, tiny_tokenizer_path, validation_fraction=0.1, seed=seed
            )
        )
        return sorted(
            d
            for c in store.components
            for d in store.metadata(c, "validation").column("doc_id").to_pylist()
        )

    a, b, c = held_out("s-a", 0), held_out("s-b", 0), held_out("s-c", 1)
    assert a == b and a != c
    assert 9 <= len(a) <= 30  # ~10% of 180


def test_validation_mask_properties():
    keys = [f"doc-{i}" for i in range(1000)]
    mask = validation_mask(keys, 0.1, seed=3)
    assert 60 < mask.sum() < 140
    # Membership depends on the key, not on its position.
    shuffled = keys[::-1]
    assert [k for k, m in zip(shuffled, validation_mask(shuffled, 0.1, seed=3)) if m] == [
        k for k, m in zip(keys, mask) if m
    ][::-1]
    assert validation_mask(["only"], 0.5, seed=0).sum() == 0
    assert validation_mask(["a", "b"], 0.001, seed=0).sum() == 1
    assert validation_mask(["a", "b"], 0.999, seed=0).sum() == 1
    assert validation_mask(keys[:5], 0.0, seed=0).sum() == 0


def test_single_doc_cluster_trains_only(tmp_path, make_climblab, tiny_tokenizer_path):
    root = make_climblab("one", clusters={1: 1, 2: 4}, files_per_cluster=1)
    store = TokenStore(
        tokenize_corpus(root, tmp_path / "s", tiny_tokenizer_path, validation_fraction=0.5)
    )
    assert store.num_docs("cluster_1") == 1 and store.num_docs("cluster_1", "validation") == 0


def test_rerun_is_idempotent_and_settings_are_guarded(climblab_dir, tiny_tokenizer_path, tmp_path):
    out = tmp_path / "store"
    first = tokenize(climblab_dir, out, tiny_tokenizer_path)
    assert first.written
    stamp = (out / "manifest.json").stat().st_mtime_ns
    again = tokenize(climblab_dir, out, tiny_tokenizer_path)
    assert not again.written and again.fingerprint == first.fingerprint
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(HFMixtureError, match="different inputs or settings; pass overwrite=True"):
        tokenize_corpus(climblab_dir, out, tiny_tokenizer_path, seed=7)
    assert TokenStore(out).manifest["seed"] == 0  # untouched
    tokenize_corpus(climblab_dir, out, tiny_tokenizer_path, seed=7, overwrite=True)
    assert TokenStore(out).manifest["seed"] == 7
    other = tmp_path / "notes"
    other.mkdir()
    (other / "x.txt").write_text("mine")
    with pytest.raises(HFMixtureError, match="not a token store; refusing"):
        tokenize_corpus(climblab_dir, other, tiny_tokenizer_path, overwrite=True)


def test_cli_tokenize_then_rerun(climblab_dir, tiny_tokenizer_path, tmp_path, capsys):
    args = [
        "tokenize",
        str(climblab_dir),
        "--tokenizer",
        str(tiny_tokenizer_path),
        "--output",
        str(tmp_path / "store"),
        "--validation-fraction",
        "0.25",
        "--seed",
        "3",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "wrote token store" in out and "cluster_3" in out
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert TokenStore(tmp_path / "store").manifest["validation_fraction"] == 0.25


# ----------------------------------------------------------------------------- bad input via the CLI
def _run_cli_error(capsys, corpus: Path, tokenizer: Path, out: Path) -> str:
    code = main(["tokenize", str(corpus), "--tokenizer", str(tokenizer), "--output", str(out)])
    stderr = capsys.readouterr().err
    assert code == 2
    # Progress bars may precede it; the error itself is one line, one sentence.
    errors = [line for line in re.split(r"[\r\n]", stderr) if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("hf-mixture tokenize: error: ")
    assert "Traceback" not in stderr
    _no_leftovers(out)
    return errors[0]


def test_ids_beyond_vocab(make_climblab, tiny_tokenizer_path, tiny_tokenizer, tmp_path, capsys):
    root = make_climblab("big", clusters={1: 4, 2: 50}, vocab_size=5000)  # ids the tiny vocab lacks
    err = _run_cli_error(capsys, root, tiny_tokenizer_path, tmp_path / "store")
    assert "cluster_1_001.tokenized.parquet row" in err
    assert (
        "field 'tokens' holds id" in err
        and "outside the vocabulary" in err
        and f"(size {len(tiny_tokenizer)})" in err
    )


def test_token_count_mismatch(make_climblab, tiny_tokenizer_path, tmp_path, capsys):
    root = make_climblab("tc", clusters={1: 4}, files_per_cluster=1)
    f = root / "cluster_1" / "cluster_1_001.tokenized.parquet"
    t = pq.read_table(f)
    counts = t.column("token_count").to_pylist()
    counts[2] += 1
    pq.write_table(t.set_column(1, "token_count", pa.array(counts, type=pa.int64())), f)
    err = _run_cli_error(capsys, root, tiny_tokenizer_path, tmp_path / "store")
    assert f"{f} row 2: field 'token_count' is {counts[2]}" in err


def test_missing_path(tmp_path, tiny_tokenizer_path, capsys):
    err = _run_cli_error(capsys, tmp_path / "nothing", tiny_tokenizer_path, tmp_path / "store")
    assert "nothing' does not exist" in err


def test_wrong_schema(tmp_path, tiny_tokenizer_path, capsys):
    root = tmp_path / "bad"
    (root / "cluster_0").mkdir(parents=True)
    pq.write_table(
        pa.table({"ids": [[1, 2]], "cluster": [0]}),  # neither tokens nor text
        root / "cluster_0" / "part.parquet",
    )
    err = _run_cli_error(capsys, root, tiny_tokenizer_path, tmp_path / "store")
    assert "part.parquet: field 'tokens' is missing (and there is no 'text' field" in err
    assert not (tmp_path / "store").exists()


def test_corrupt_parquet(climblab_dir, tiny_tokenizer_path, tmp_path, capsys):
    victim = max((climblab_dir / "cluster_3").glob("*.parquet"))
    victim.write_bytes(victim.read_bytes()[:-40])
    err = _run_cli_error(capsys, climblab_dir, tiny_tokenizer_path, tmp_path / "store")
    assert str(victim) in err and "corrupt or truncated" in err


def test_corrupt_data_pages_fail_midway_without_leftovers(
    make_climblab, tiny_tokenizer_path, tmp_path, capsys
):
    # Footer intact, column data overwritten: found while converting, after other clusters
    # were already written to the temporary store; nothing may remain.
    root = make_climblab("mid", clusters={1: 30, 2: 30}, files_per_cluster=1)
    victim = root / "cluster_2" / "cluster_2_001.tokenized.parquet"
    data = bytearray(victim.read_bytes())
    data[4:200] = b"\xff" * 196
    victim.write_bytes(bytes(data))
    err = _run_cli_error(capsys, root, tiny_tokenizer_path, tmp_path / "store")
    assert str(victim) in err


def test_empty_cluster(make_climblab, tiny_tokenizer_path, tmp_path, capsys):
    root = make_climblab("empty")
    (root / "cluster_4").mkdir()
    err = _run_cli_error(capsys, root, tiny_tokenizer_path, tmp_path / "store")
    assert "cluster_4' holds no parquet files" in err


def test_tokenizer_mismatch_with_corpus_manifest(
    tmp_path, tiny_text_dataset, tiny_tokenizer_path, tiny_texts
):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = write_clustered_corpus(
        tiny_text_dataset, tmp_path / "c", tokenizer=tiny_tokenizer_path
    )
    other = Tokenizer(models.BPE())
    other.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    other.train_from_iterator(
        [t for _, t in tiny_texts],
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>"],
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=other, eos_token="<|endoftext|>")
    with pytest.raises(
        HFMixtureError, match="field 'tokenizer.sha256' says its tokens were made with"
    ):
        tokenize_corpus(corpus, tmp_path / "s", fast)
    _no_leftovers(tmp_path / "s")


def test_bad_settings(climblab_dir, tiny_tokenizer_path, tmp_path):
    for bad in (-0.1, 1.0, "x"):
        with pytest.raises(HFMixtureError, match="validation_fraction"):
            tokenize_corpus(
                climblab_dir, tmp_path / "s", tiny_tokenizer_path, validation_fraction=bad
            )
    with pytest.raises(HFMixtureError, match="could not be loaded"):
        tokenize_corpus(climblab_dir, tmp_path / "s", tmp_path / "no-tokenizer")
    _no_leftovers(tmp_path / "s")


@pytest.mark.slow
def test_num_proc_gives_the_same_store(tmp_path, tiny_texts, tiny_tokenizer_path):
    texts = {0: [t for _, t in tiny_texts][:90], 1: [t for _, t in tiny_texts][90:]}
    root = _text_corpus(tmp_path / "text", texts)
    one = TokenStore(tokenize_corpus(root, tmp_path / "one", tiny_tokenizer_path, batch_size=16))
    two = TokenStore(
        tokenize_corpus(root, tmp_path / "two", tiny_tokenizer_path, batch_size=16, num_proc=2)
    )
    for c in one.components:
        for s in ("train", "validation"):
            assert np.array_equal(one.tokens(c, s), two.tokens(c, s))
            assert np.array_equal(one.offsets(c, s), two.offsets(c, s))
