"""The shipped playground corpus, its tokenizer and card, and the build's pure functions."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from hf_mixture import playground
from hf_mixture.cli import main as cli_main
from hf_mixture.errors import HFMixtureError

# The build script is a repository script (it runs apt-get download), not part of the wheel.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_playground as build

# stable_sample(wordnet w0..w99, 10, seed=0): fixed across processes and machines.
GOLDEN_SAMPLE = ["w5", "w7", "w18", "w23", "w29", "w45", "w52", "w66", "w69", "w70"]
EXPECTED_SOURCES = {
    "bible",
    "wordnet",
    "jargon",
    "foldoc",
    "python_docs",
    "python_code",
    "fortunes",
}


@pytest.fixture(scope="module")
def corpus():
    return playground.load()


@pytest.fixture(scope="module")
def tok():
    return playground.tokenizer()


# ---------------------------------------------------------------------------
# The shipped data
# ---------------------------------------------------------------------------
def test_load_columns_and_types(corpus):
    assert corpus.column_names == ["text", "source", "doc_id"]
    for column in corpus.column_names:
        assert corpus.features[column].dtype == "string"
    assert 12_000 <= len(corpus) <= 16_000


def test_seven_sources_with_sane_counts(corpus):
    assert set(playground.SOURCES) == EXPECTED_SOURCES
    counts = {}
    for source in corpus["source"]:
        counts[source] = counts.get(source, 0) + 1
    assert set(counts) == EXPECTED_SOURCES
    for source, n in counts.items():
        assert 1_000 <= n <= build.MAX_DOCS_PER_SOURCE, (source, n)


def test_documents_are_unique_bounded_and_well_named(corpus):
    texts, ids, sources = corpus["text"], corpus["doc_id"], corpus["source"]
    assert len(set(texts)) == len(texts), "duplicate texts in the playground"
    assert len(set(ids)) == len(ids), "duplicate doc_ids in the playground"
    assert all(build.MIN_CHARS <= len(t) <= build.MAX_CHARS for t in texts)
    assert all(t == t.strip("\n") and "\r" not in t for t in texts)
    assert all(i.startswith(s + "/") and "#" in i for i, s in zip(ids, sources))
    # Sorted by source order, so a slice of the file is one source's run.
    order = list(playground.SOURCES)
    ranks = [order.index(s) for s in sources]
    assert ranks == sorted(ranks)


def test_load_split_slicing_and_bad_split():
    assert len(playground.load("train[:10]")) == 10
    with pytest.raises(HFMixtureError, match="split"):
        playground.load("validation")


def test_size_budget():
    data = sum(p.stat().st_size for p in playground.data_dir().iterdir())
    tokenizer = sum(p.stat().st_size for p in playground.tokenizer_dir().iterdir())
    assert data + tokenizer <= 25 * 1024 * 1024
    assert sorted(p.name for p in playground.tokenizer_dir().iterdir()) == [
        "tokenizer.json",
        "tokenizer_config.json",
    ]


def test_load_dataset_reads_data_dir_offline():
    import datasets

    folder = str(playground.data_dir())
    assert datasets.get_dataset_config_names(folder) == ["default"]
    ds = datasets.load_dataset(folder, split="train")
    assert ds.column_names == ["text", "source", "doc_id"]
    assert len(ds) == len(playground.load())


def test_card_lists_every_source_with_license_and_counts(corpus):
    card = (playground.data_dir() / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "license: other" in card and "configs:" in card
    for name, info in playground.SOURCES.items():
        docs = sum(1 for s in corpus["source"] if s == name)
        row = next(
            line
            for line in card.splitlines()
            if line.startswith(f"| `{name}` | {info.description}")
        )
        assert info.license in row and f"{docs:,}" in row
    for package, _, _ in build.PACKAGES:
        assert f"`{package}`" in card


def test_missing_data_file_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(playground, "_PACKAGE_DIR", tmp_path)
    with pytest.raises(HFMixtureError, match=r"scripts/build_playground\.py"):
        playground.load()
    with pytest.raises(HFMixtureError, match=r"tokenizer\.json"):
        playground.tokenizer()


# ---------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------
def test_tokenizer_round_trip_eos_and_vocab(tok, corpus):
    from transformers import PreTrainedTokenizerFast

    assert isinstance(tok, PreTrainedTokenizerFast)
    assert len(tok) == build.VOCAB_SIZE
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    assert tok.bos_token_id == 0 and tok.pad_token == "<|pad|>" and tok.pad_token_id == 1
    samples = [corpus[i]["text"] for i in range(0, len(corpus), 1100)]
    samples.append("  def f(x):\n\treturn x   # héllo, 世界 😀\n\n\nIn the beginning")
    for text in samples:
        ids = tok(text)["input_ids"]
        assert 0 not in ids, "no special token is added implicitly"
        assert tok.decode(ids) == text
    assert tok("the end<|endoftext|>")["input_ids"][-1] == tok.eos_token_id
    # Trained on the corpus: common English and Python pieces are single tokens.
    assert len(tok(" the")["input_ids"]) == 1 and len(tok("def")["input_ids"]) == 1


def test_tokenizer_loads_through_auto_class():
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(playground.tokenizer_dir()))
    assert auto.eos_token_id == 0 and len(auto) == build.VOCAB_SIZE


def test_tokenizer_training_is_deterministic(corpus):
    texts = corpus[::50]["text"]  # ~300 documents of every source
    a = build.train_tokenizer(texts, vocab_size=600, show_progress=False)
    b = build.train_tokenizer(texts, vocab_size=600, show_progress=False)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert len(a) == 600 and a.convert_ids_to_tokens([0, 1]) == ["<|endoftext|>", "<|pad|>"]


# ---------------------------------------------------------------------------
# Pure functions of the build
# ---------------------------------------------------------------------------
def test_dictd_numbers_and_index(tmp_path):
    assert build.decode_dictd_number("A") == 0
    assert build.decode_dictd_number("/") == 63
    assert build.decode_dictd_number("BA") == 64
    assert build.decode_dictd_number("Gb9L") == ((6 * 64 + 27) * 64 + 61) * 64 + 11
    with pytest.raises(HFMixtureError, match="invalid digit"):
        build.decode_dictd_number("B-")

    entries = [("alpha", "alpha\n  the first letter\n"), ("beta", "beta\n  the second letter\n")]
    blob = "00-database-short\n  Toy dictionary\n" + "".join(text for _, text in entries)
    data = blob.encode("utf-8")

    def enc(n: int) -> str:
        digits = ""
        while True:
            digits = build._DICTD_ALPHABET[n % 64] + digits
            n //= 64
            if n == 0:
                return digits

    header = len("00-database-short\n  Toy dictionary\n")
    lines = [f"00-database-short\t{enc(0)}\t{enc(header)}"]
    offset = header
    for headword, text in entries:
        lines.append(f"{headword}\t{enc(offset)}\t{enc(len(text.encode()))}")
        offset += len(text.encode())
    lines.append(f"first letter\t{enc(header)}\t{enc(len(entries[0][1]))}")  # shares alpha's entry
    index_text = "\n".join(lines) + "\n"
    (tmp_path / "usr/share/dictd").mkdir(parents=True)
    (tmp_path / "usr/share/dictd/toy.index").write_text(index_text)
    with gzip.open(tmp_path / "usr/share/dictd/toy.dict.dz", "wb") as fh:
        fh.write(data)

    parsed = build.parse_dictd_index(index_text)
    assert [h for h, _, _ in parsed] == ["alpha", "beta", "first letter"]  # 00-database skipped
    assert parsed[0][1:] == (header, len(entries[0][1]))
    assert build.read_dictd(tmp_path, "toy") == [("alpha", entries[0][1]), ("beta", entries[1][1])]
    with pytest.raises(HFMixtureError, match="past the end"):
        build.dictd_entries(f"gamma\t{enc(len(data))}\tB\n", data)
    with pytest.raises(HFMixtureError, match="line 1"):
        build.parse_dictd_index("gamma only-two-fields\n")


def test_split_fortunes(tmp_path):
    text = "First fortune.\n\t-- Someone\n%\nSecond\none\n%\n%\n   \n%\nLast, no trailing percent"
    assert build.split_fortunes(text) == [
        "First fortune.\n\t-- Someone",
        "Second\none",
        "Last, no trailing percent",
    ]
    folder = tmp_path / "usr/share/games/fortunes"
    folder.mkdir(parents=True)
    (folder / "toy").write_text("A\n%\nB\n%\n")
    (folder / "toy.dat").write_bytes(b"\x00\x00\x00\x02binary index")
    (folder / "toy.u8").symlink_to("toy")
    assert build.read_fortunes(tmp_path) == [("toy:0", "A"), ("toy:1", "B")]


def test_split_bible_and_rst_sections():
    bible = "\nGenesis 1\n\n  1 In the beginning.\n  2 And the earth.\n\n1 Samuel 2\n\n  1 And Hannah prayed.\n"
    assert build.split_bible(bible) == [
        ("genesis-1", "Genesis 1\n\n1 In the beginning.\n2 And the earth."),
        ("1-samuel-2", "1 Samuel 2\n\n1 And Hannah prayed."),
    ]
    rst = "Title\n=====\n\nIntro.\n\n-----\n\nStill intro.\n\n=======\nPart 2\n=======\n\nBody.\n\nSub\n---\nEnd."
    sections = build.split_rst_sections(rst)
    assert [s.splitlines()[0] for s in sections] == ["Title", "=======", "Sub"]
    assert "-----" in sections[0]  # a transition does not start a section


def test_normalize_whitespace():
    raw = "\r\n    Hello\tworld   \r\n\n\n\n      indented\x07 B\bBold _\bu\n\n"
    assert build.normalize_whitespace(raw) == "Hello   world\n\n  indented Bold u"
    code = "def f():\n\treturn 1   \n\n\n\n\nx = 2\n"
    assert build.normalize_whitespace(code, code=True) == "def f():\n        return 1\n\n\nx = 2"


def test_chunking_limits_and_boundaries():
    paragraphs = [f"Paragraph {i}. " + "word " * (20 + i % 30) for i in range(60)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    chunks = build.chunk_text(text, max_chars=300)
    assert all(0 < len(c) <= 300 for c in chunks)
    assert "".join(chunks).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(
        " ", ""
    )
    assert all(c.startswith("Paragraph") for c in chunks)  # cut at blank lines only
    # A single line longer than the limit is cut at sentence ends, then spaces, then hard.
    assert all(len(c) <= 50 for c in build.chunk_text("A b. " * 40 + "x" * 120, max_chars=50))

    code = "\n\n".join(f"def f{i}():\n    a = {i}\n\n    return a" for i in range(40))
    code_chunks = build.chunk_text(code, max_chars=200, code=True)
    assert all(len(c) <= 200 for c in code_chunks)
    assert all(c.startswith("def f") for c in code_chunks)  # never split inside a def
    assert build.chunk_text("short", max_chars=1500) == ["short"]


def test_dedup_and_process_pipeline():
    docs = [
        build.Document("bible", "a", "same"),
        build.Document("jargon", "b", "same"),
        build.Document("jargon", "c", "other"),
    ]
    assert [d.name for d in build.dedup(docs)] == ["a", "c"]

    raw = {
        "fortunes": [
            (f"f:{i}", f"Fortune number {i} is a rather long saying, indeed.") for i in range(50)
        ]
        + [("f:dup", "Fortune number 3 is a rather long saying, indeed."), ("f:tiny", "too short")],
        "bible": [
            (
                "genesis-1",
                "Genesis 1\n\n" + "\n".join(f"{v} Verse {v} " + "x" * 60 for v in range(1, 40)),
            )
        ],
    }
    final, stats = build.process(raw, max_chars=500, min_chars=40, max_docs_per_source=20, seed=3)
    assert stats["fortunes"].raw == 52 and stats["fortunes"].after_dedup == 51
    assert stats["fortunes"].kept == 50 and stats["fortunes"].sampled == 20
    assert [d.source for d in final][: stats["bible"].sampled] == ["bible"] * stats["bible"].sampled
    assert all(len(d.text) <= 500 for d in final)
    assert len({d.doc_id for d in final}) == len(final)
    again, _ = build.process(raw, max_chars=500, min_chars=40, max_docs_per_source=20, seed=3)
    assert again == final  # deterministic
    other, _ = build.process(raw, max_chars=500, min_chars=40, max_docs_per_source=20, seed=4)
    assert [d.doc_id for d in other] != [d.doc_id for d in final]
    with pytest.raises(HFMixtureError, match="Unknown playground source"):
        build.process({"reddit": []})


def test_stable_sample_is_seeded_ordered_and_hash_independent():
    docs = [build.Document("wordnet", f"w{i}", f"text {i}") for i in range(100)]
    sample = build.stable_sample(docs, 10, seed=0)
    assert len(sample) == 10 and sample == build.stable_sample(docs, 10, seed=0)
    assert [docs.index(d) for d in sample] == sorted(docs.index(d) for d in sample)
    assert sample != build.stable_sample(docs, 10, seed=1)
    assert build.stable_sample(docs[:5], 10, seed=0) == docs[:5]
    # A golden value: the choice depends only on seed and doc_id (Python's hash()
    # of str is salted per process and would change it from run to run).
    assert [d.name for d in sample] == GOLDEN_SAMPLE


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def test_cli_json(capsys, corpus):
    assert cli_main(["playground", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary["sources"]) == EXPECTED_SOURCES
    assert summary["total"]["documents"] == len(corpus)
    assert summary["total"]["characters"] == sum(len(t) for t in corpus["text"])
    assert abs(sum(r["token_share"] for r in summary["sources"].values()) - 1) < 1e-9
    # Byte-level BPE on English/code: between 2 and 6 characters per token.
    assert 2 < summary["total"]["characters"] / summary["total"]["tokens"] < 6
    assert summary["sources"]["bible"]["license"] == "public-domain"


def test_cli_table(capsys, corpus, tok, monkeypatch):
    from hf_mixture.playground import cli

    # Every 25th document: the same code path, a fraction of the tokenizing time.
    small = corpus.select(range(0, len(corpus), 25))
    expected = cli.summarize(small, tok)
    monkeypatch.setattr(cli, "summarize", lambda: expected)
    assert cli_main(["playground"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["source", "docs", "characters", "tokens", "share"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == EXPECTED_SOURCES | {"total"}
    assert rows["total"][1] == f"{len(small):,}"
    assert rows["wordnet"][3] == f"{expected['sources']['wordnet']['tokens']:,}"


def test_cli_export_is_loadable_and_refuses_non_empty(tmp_path, capsys):
    import datasets

    target = tmp_path / "copy"
    assert cli_main(["playground", "--export", str(target), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"exported_to": str(target)}
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "playground.parquet"]
    assert len(datasets.load_dataset(str(target), split="train")) == len(playground.load())
    assert cli_main(["playground", "--export", str(target)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli_main(["playground", "--export", str(target), "--overwrite", "--json"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


@pytest.mark.slow
def test_import_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, hf_mixture.playground, hf_mixture.playground.cli\n"
        "print(sorted(m for m in ('datasets', 'transformers', 'torch', 'pyarrow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
