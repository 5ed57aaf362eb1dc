"""Clustered corpus: writer, README configs round-trip, reader validation, datasets builder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from hf_mixture.errors import HFMixtureError
from hf_mixture.formats import writer as writer_mod
from hf_mixture.formats.clustered import ClusteredCorpus, ClusteredCorpusBuilder
from hf_mixture.formats.tokenizers import tokenizer_fingerprint
from hf_mixture.formats.writer import write_clustered_corpus


def _no_leftovers(path: Path) -> None:
    """Nothing half-written: neither the output nor a temporary sibling exists."""
    assert not path.exists()
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]


@pytest.fixture
def written(tmp_path, tiny_text_dataset, tiny_tokenizer_path):
    descriptions = {
        0: {"description": "scripture", "top_terms": ["lord", "moses"]},
        2: "dictionary entries",
        9: {"description": "absent cluster: ignored"},
    }
    return write_clustered_corpus(
        tiny_text_dataset,
        tmp_path / "corpus",
        tokenizer=tiny_tokenizer_path,
        descriptions=descriptions,
        extra_manifest={"method": "kmeans", "k": 3},
    )


# ----------------------------------------------------------------------------- writer + round trip
def test_load_dataset_round_trip_offline(written, tiny_text_dataset, tiny_tokenizer, tmp_path):
    names = datasets.get_dataset_config_names(str(written))
    assert sorted(names) == ["cluster_0", "cluster_1", "cluster_2", "default"]
    cache = str(tmp_path / "hf-cache")
    for k in range(3):
        got = datasets.load_dataset(str(written), f"cluster_{k}", split="train", cache_dir=cache)
        want = tiny_text_dataset.filter(lambda r, k=k: r["cluster_id"] == k)
        assert got.column_names == [
            "tokens",
            "token_count",
            "cluster_id",
            "text",
            "source",
            "doc_id",
            "quality",
        ]
        assert len(got) == len(want) > 0
        for col in ("text", "source", "doc_id", "quality", "cluster_id"):
            assert got[col][:] == want[col][:], col  # values and row order kept
        encoded = tiny_tokenizer(want["text"][:], add_special_tokens=False)["input_ids"]
        assert got["tokens"][:] == encoded
        assert got["token_count"][:] == [len(x) for x in encoded]
    everything = datasets.load_dataset(str(written), "default", split="train", cache_dir=cache)
    assert len(everything) == len(tiny_text_dataset)
    assert sorted(everything["doc_id"][:]) == sorted(tiny_text_dataset["doc_id"][:])


def test_manifest_and_card(written, tiny_text_dataset, tiny_tokenizer):
    manifest = json.loads((written / "clusters.json").read_text())
    assert manifest["format"] == "hf_mixture.clustered_corpus" and manifest["version"] == 1
    assert manifest["tokenizer"] == tokenizer_fingerprint(tiny_tokenizer)
    assert manifest["method"] == "kmeans" and manifest["k"] == 3
    ids = np.asarray(tiny_text_dataset["cluster_id"][:])
    lengths = [
        len(x)
        for x in tiny_tokenizer(tiny_text_dataset["text"][:], add_special_tokens=False)["input_ids"]
    ]
    for entry in manifest["clusters"]:
        k = entry["id"]
        assert entry["config_name"] == f"cluster_{k}"
        assert entry["docs"] == int((ids == k).sum())
        assert entry["tokens"] == int(np.asarray(lengths)[ids == k].sum())
    by_id = {c["id"]: c for c in manifest["clusters"]}
    assert by_id[0]["description"] == "scripture" and by_id[0]["top_terms"] == ["lord", "moses"]
    assert by_id[2]["description"] == "dictionary entries"
    assert by_id[1]["description"] is None
    assert 9 not in by_id  # a description of an absent cluster does not create one

    text = (written / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    configs = {c["config_name"]: c["data_files"] for c in front["configs"]}
    assert configs["cluster_1"] == [{"split": "train", "path": "cluster_1/*.parquet"}]
    assert configs["default"] == [
        {
            "split": "train",
            "path": ["cluster_0/*.parquet", "cluster_1/*.parquet", "cluster_2/*.parquet"],
        }
    ]
    assert "| 0 | `cluster_0` | 60 |" in text and "scripture" in text


def test_climblab_file_naming_and_sharding(tmp_path, tiny_text_dataset, tiny_tokenizer_path):
    out = write_clustered_corpus(
        tiny_text_dataset, tmp_path / "c", tokenizer=tiny_tokenizer_path, max_rows_per_file=25
    )
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert all(
        re.fullmatch(r"cluster_(\d+)/cluster_\1_\d{3}\.tokenized\.parquet", f) for f in files
    )
    assert len([f for f in files if f.startswith("cluster_0/")]) == 3  # 60 rows / 25 per file
    schema = pq.read_schema(out / files[0])
    assert pa.types.is_list(schema.field("tokens").type)
    assert pa.types.is_integer(schema.field("tokens").type.value_type)
    assert pa.types.is_integer(schema.field("token_count").type)
    assert pa.types.is_integer(schema.field("cluster_id").type)
    corpus = ClusteredCorpus(out)
    rows = [
        r for _, _, b in corpus.iter_batches(0, columns=["doc_id"]) for r in b.column(0).to_pylist()
    ]
    assert rows == [
        d for d, c in zip(tiny_text_dataset["doc_id"], tiny_text_dataset["cluster_id"]) if c == 0
    ]


def test_given_tokens_are_kept_and_counted(tmp_path, tiny_tokenizer_path):
    ds = datasets.Dataset.from_dict(
        {"tokens": [[5, 6], [7], [8, 9, 10]], "cluster_id": [3, 3, 1], "note": ["a", "b", "c"]}
    )
    out = write_clustered_corpus(ds, tmp_path / "c")
    corpus = ClusteredCorpus(out)
    assert corpus.cluster_ids == [1, 3]
    assert corpus.num_tokens(3) == 3 and corpus.num_docs(3) == 2
    assert corpus.tokenizer_info is None
    got = corpus.load(3, cache_dir=tmp_path / "cache")
    assert got["tokens"][:] == [[5, 6], [7]] and got["note"][:] == ["a", "b"]

    bad_count = ds.add_column("token_count", [2, 2, 3])
    with pytest.raises(
        HFMixtureError, match=r"row 1: field 'token_count' is 2, but field 'tokens' holds 1"
    ):
        write_clustered_corpus(bad_count, tmp_path / "bad1")
    _no_leftovers(tmp_path / "bad1")
    too_big = datasets.Dataset.from_dict({"tokens": [[1], [2, 4000]], "cluster_id": [0, 0]})
    with pytest.raises(
        HFMixtureError, match=r"row 1: field 'tokens' holds id 4000, outside the vocabulary"
    ):
        write_clustered_corpus(too_big, tmp_path / "bad2", tokenizer=tiny_tokenizer_path)
    _no_leftovers(tmp_path / "bad2")


@pytest.mark.parametrize(
    "make_ds, message",
    [
        (lambda: datasets.Dataset.from_dict({"text": [], "cluster_id": []}), "empty dataset"),
        (lambda: datasets.Dataset.from_dict({"text": ["a"]}), "no field 'cluster_id'"),
        (
            lambda: datasets.Dataset.from_dict({"text": ["a"], "cluster_id": ["x"]}),
            "field 'cluster_id' has type string",
        ),
        (
            lambda: datasets.Dataset.from_dict({"text": ["a"], "cluster_id": [-1]}),
            "ids must be >= 0",
        ),
        (
            lambda: datasets.Dataset.from_dict({"text": ["a"], "cluster_id": [0]}),
            "needs tokenizer=",
        ),
        (
            lambda: datasets.Dataset.from_dict({"tokens": [["a"]], "cluster_id": [0]}),
            "field 'tokens' has type",
        ),
    ],
)
def test_writer_rejects_bad_input(tmp_path, make_ds, message):
    with pytest.raises(HFMixtureError, match=message):
        write_clustered_corpus(make_ds(), tmp_path / "out")
    _no_leftovers(tmp_path / "out")


def test_writer_overwrite_rules_and_atomicity(
    tmp_path, tiny_text_dataset, tiny_tokenizer_path, monkeypatch
):
    out = write_clustered_corpus(tiny_text_dataset, tmp_path / "c", tokenizer=tiny_tokenizer_path)
    with pytest.raises(HFMixtureError, match="already exists"):
        write_clustered_corpus(tiny_text_dataset, out, tokenizer=tiny_tokenizer_path)
    small = tiny_text_dataset.select(range(5))
    write_clustered_corpus(small, out, tokenizer=tiny_tokenizer_path, overwrite=True)
    assert ClusteredCorpus(out).num_docs(0) == 5
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(HFMixtureError, match="not a clustered corpus; refusing"):
        write_clustered_corpus(small, other, tokenizer=tiny_tokenizer_path, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"

    # A failure after the parquet files are written leaves nothing behind.
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer_mod, "_render_card", boom)
    with pytest.raises(RuntimeError):
        write_clustered_corpus(small, tmp_path / "half", tokenizer=tiny_tokenizer_path)
    _no_leftovers(tmp_path / "half")


# ----------------------------------------------------------------------------- reader: ClimbLab layout
def test_reads_climblab_layout(climblab_dir):
    corpus = ClusteredCorpus(climblab_dir)
    assert corpus.manifest is None
    assert corpus.cluster_ids == [1, 2, 3]
    for k, n in {1: 7, 2: 5, 3: 6}.items():
        assert corpus.num_docs(k) == n
        want = sum(
            pq.read_table(f).column("token_count").to_numpy().sum()
            for f in sorted((climblab_dir / f"cluster_{k}").glob("*.parquet"))
        )
        assert corpus.num_tokens(k) == want
    assert [c["config_name"] for c in corpus.clusters] == ["cluster_1", "cluster_2", "cluster_3"]


def _bad(tmp_path, name: str, table: pa.Table) -> Path:
    root = tmp_path / name
    (root / "cluster_0").mkdir(parents=True)
    pq.write_table(table, root / "cluster_0" / "cluster_0_000.tokenized.parquet")
    return root


@pytest.mark.parametrize(
    "table, field",
    [
        (pa.table({"body": ["x"], "cluster_id": [0]}), "field 'tokens' is missing"),
        (
            pa.table({"tokens": [["a", "b"]], "token_count": [2], "cluster_id": [0]}),
            "field 'tokens' has type",
        ),
        (pa.table({"tokens": [[1, 2]], "cluster_id": [0]}), "field 'token_count' is missing"),
        (
            pa.table({"tokens": [[1, 2]], "token_count": [2.0], "cluster_id": [0]}),
            "field 'token_count' has type",
        ),
        # (a file without cluster_id is valid since ClimbLab's releases: tests/test_climb_layouts.py)
        (pa.table({"tokens": [[1, 2]], "token_count": [2], "cluster_id": [3]}),
         "field 'cluster_id' holds 3, but the file is in folder cluster_0/"),
        (
            pa.table({"tokens": [[1, 2]], "token_count": [2], "cluster_id": ["zero"]}),
            "field 'cluster_id' has type",
        ),
    ],
)
def test_wrong_schema_names_file_and_field(tmp_path, table, field):
    root = _bad(tmp_path, "bad", table)
    with pytest.raises(HFMixtureError) as err:
        ClusteredCorpus(root)
    assert field in str(err.value)
    assert "cluster_0_000.tokenized.parquet" in str(err.value)


def test_corrupt_and_truncated_parquet(climblab_dir):
    victim = min((climblab_dir / "cluster_2").glob("*.parquet"))
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated: footer gone
    with pytest.raises(
        HFMixtureError, match=rf"'{re.escape(str(victim))}' is corrupt or truncated"
    ):
        ClusteredCorpus(climblab_dir)
    victim.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(HFMixtureError, match="corrupt or truncated"):
        ClusteredCorpus(climblab_dir)


def test_empty_cluster_folder_and_empty_files(tmp_path, make_climblab):
    root = make_climblab("a")
    (root / "cluster_9").mkdir()
    with pytest.raises(HFMixtureError, match=r"cluster_9' holds no parquet files"):
        ClusteredCorpus(root)
    root = make_climblab("b", clusters={1: 3, 4: 0}, files_per_cluster=1)
    with pytest.raises(
        HFMixtureError, match=r"cluster_4' is empty: its parquet files hold 0 documents"
    ):
        ClusteredCorpus(root)


def test_missing_path_and_not_a_corpus(tmp_path):
    with pytest.raises(HFMixtureError, match="does not exist"):
        ClusteredCorpus(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(HFMixtureError, match="not a clustered corpus"):
        ClusteredCorpus(tmp_path / "plain")
    # A Hub id is resolved through huggingface_hub; offline that fails with one sentence.
    with pytest.raises(HFMixtureError, match="could not be resolved as a Hub dataset"):
        ClusteredCorpus("nobody-here/no-such-corpus")


def test_manifest_problems(written):
    manifest_path = written / "clusters.json"
    good = manifest_path.read_text()
    manifest_path.write_text("{not json")
    with pytest.raises(HFMixtureError, match="clusters.json is not valid JSON"):
        ClusteredCorpus(written)
    m = json.loads(good)
    m["clusters"].append({"id": 7, "config_name": "cluster_7", "docs": 1, "tokens": 1})
    manifest_path.write_text(json.dumps(m))
    with pytest.raises(HFMixtureError, match="lists cluster 7"):
        ClusteredCorpus(written)
    m = json.loads(good)
    m["clusters"][0]["docs"] += 1
    manifest_path.write_text(json.dumps(m))
    with pytest.raises(HFMixtureError, match=r"field 'clusters\[id=0\]\.docs' is 61"):
        ClusteredCorpus(written)
    m = json.loads(good)
    m["clusters"] = m["clusters"][1:]
    manifest_path.write_text(json.dumps(m))
    with pytest.raises(HFMixtureError, match="is not listed in clusters.json"):
        ClusteredCorpus(written)


# ----------------------------------------------------------------------------- builder
def test_builder_on_climblab_layout_with_detokenize(
    climblab_dir, tiny_tokenizer_path, tiny_tokenizer, tmp_path
):
    builder = ClusteredCorpusBuilder(
        climblab_dir,
        "cluster_2",
        detokenize_with=tiny_tokenizer_path,
        cache_dir=str(tmp_path / "cache"),
    )
    assert sorted(builder.builder_configs) == ["cluster_1", "cluster_2", "cluster_3", "default"]
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
    want = pa.concat_tables(
        pq.read_table(f) for f in sorted((climblab_dir / "cluster_2").glob("*.parquet"))
    )
    assert len(ds) == 5
    assert ds["tokens"][:] == want.column("tokens").to_pylist()
    assert ds["text"][:] == [tiny_tokenizer.decode(t) for t in want.column("tokens").to_pylist()]
    assert set(ds["cluster_id"][:]) == {2}

    everything = ClusteredCorpusBuilder(climblab_dir, cache_dir=str(tmp_path / "cache"))
    everything.download_and_prepare()
    assert len(everything.as_dataset(split="train")) == 18


def test_builder_reads_our_layout_and_rejects_unknown_config(written, tiny_text_dataset, tmp_path):
    ds = ClusteredCorpus(written).load(1, cache_dir=tmp_path / "cache")
    want = tiny_text_dataset.filter(lambda r: r["cluster_id"] == 1)
    assert ds["doc_id"][:] == want["doc_id"][:]
    assert ds.column_names[:3] == ["tokens", "token_count", "cluster_id"]
    with pytest.raises(HFMixtureError, match="has no config 'cluster_5'"):
        ClusteredCorpusBuilder(written, "cluster_5", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(HFMixtureError, match="already has a field 'text'"):
        ClusteredCorpusBuilder(
            written, "cluster_1", detokenize_with=tmp_path, cache_dir=str(tmp_path / "c")
        )
