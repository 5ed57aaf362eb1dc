"""Which representation and merge separate what users call different domains: a study.

For each labelled corpus (the playground, or parquet files with a ``source`` column such as
``benchmarks/corpora.py`` writes), the documents are embedded once with the pipeline's MiniLM
(cached in ``--work-dir``), and then every variant below is clustered with the pipeline's own
pieces -- :class:`LexicalFeaturizer`, :func:`combine_views`, :class:`KMeansClusterer`
(k = the pipeline's default rule) and :class:`CentroidMerger` (final clusters = the number of
sources) -- and scored by NMI and purity against the sources, beside a majority-vote merge of
that variant's k-means clusters (each given its majority source: the best purity any merge can
reach; its NMI is a guide, not a bound): when it is low, the representation fails, not the merge.

Variants: the lexical view's weight (0 = embeddings only, CLIMB's representation) and
dimensions, the language view's weight (:class:`LanguageView`; the pipeline turns it on by
itself where the corpus holds several languages), the layout view's weight and dimensions
(:class:`LayoutFeaturizer`), and the merge's linkage (``boundary``: the graph of documents
between clusters that the assign stage counts, :mod:`hf_mixture.clustering.merge`).  No
pruning and no deduplication: the representation alone.

    python benchmarks/representations.py --work-dir runs/repr
    python benchmarks/representations.py --work-dir runs/repr --corpus playground runs/corpora/code.parquet
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEIGHTS = (0.0, 0.5, 1.0, 2.0)
DIMS = (64, 128)
LINKAGES = ("boundary", "ward", "average", "complete")
LANGUAGE_WEIGHTS = (0.0, 0.5, 1.0)  # the language view (tried with ward only)
LAYOUT = ((0.0, 64), (0.5, 64), (1.0, 32), (1.0, 64), (1.5, 64))  # (weight, dims), ward only,
# language view off


def load(corpus: str, label_column: str):
    import datasets

    from hf_mixture import playground

    data = playground.load() if corpus == "playground" else datasets.load_dataset(
        "parquet", data_files=corpus, split="train")
    return list(data["text"]), list(data[label_column])


def embeddings(texts: list[str], work: Path):
    """MiniLM embeddings as the pipeline computes them, cached by the texts' content."""
    import numpy as np

    from hf_mixture.clustering import SentenceEmbedder
    from hf_mixture.clustering.embed import compute_threads

    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = work / f"emb-{digest}.npy"
    if path.is_file():
        return np.load(path)
    start = time.perf_counter()
    with compute_threads():
        emb = SentenceEmbedder().embed(texts)
    print(f"  embedded {len(texts)} documents in {time.perf_counter() - start:.0f} s")
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, emb)
    os.replace(tmp, path)
    return emb


def majority_vote(labels, truth) -> dict[str, float]:
    """Scores of the majority-vote merge of ``labels``: each cluster becomes its majority source
    (the best purity any merge reaches; not an upper bound on NMI)."""
    import numpy as np

    from hf_mixture.clustering import clustering_scores

    truth = np.asarray(truth)
    best = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        values, counts = np.unique(truth[labels == c], return_counts=True)
        best[labels == c] = values[np.argmax(counts)]
    return clustering_scores(best.astype(str), truth)


def not_default_lexical(weight: float, dims: int) -> bool:
    """Not the default lexical view (weight 1, 64 dims): the layout view is not tried there."""
    return (weight, dims) != (1.0, 64)


def study(corpus: str, label_column: str, work: Path, seed: int) -> list[dict]:
    import numpy as np

    from hf_mixture.clustering import (
        CentroidMerger,
        ClusterConfig,
        KMeansClusterer,
        clustering_scores,
    )
    from hf_mixture.clustering.language import LanguageView
    from hf_mixture.clustering.layout import LayoutFeaturizer
    from hf_mixture.clustering.lexical import LexicalFeaturizer, combine_views
    from hf_mixture.clustering.merge import BoundaryCounter, boundary_matrix, boundary_neighbours

    texts, truth = load(corpus, label_column)
    truth = np.asarray(truth)
    sources = len(set(truth.tolist()))
    emb = embeddings(texts, work)
    k = ClusterConfig().resolved_num_clusters(len(texts))
    rows = []
    lexical_views = {}
    for dims in DIMS:
        lexical_views[dims] = LexicalFeaturizer(dims, seed=seed).transform(texts)  # fits too
    language = LanguageView().transform(texts)
    layouts = {d: LayoutFeaturizer(d, seed=seed).transform(texts) for d in {d for _, d in LAYOUT}}
    for weight, dims, lang_w, (page_w, page_d) in itertools.product(WEIGHTS, DIMS,
                                                                    LANGUAGE_WEIGHTS, LAYOUT):
        if weight == 0 and dims != DIMS[0]:
            continue  # the lexical view's size does not matter without it
        if page_w and (lang_w or not_default_lexical(weight, dims)):
            continue  # the layout view is tried beside the default lexical view, language off
        x = combine_views(emb, lexical_views[dims], weight, language, lang_w,
                          layouts[page_d], page_w)
        km = KMeansClusterer(k, seed=seed)
        labels, centroids = km.fit(x)
        sizes = np.bincount(labels, minlength=k)
        alive = np.flatnonzero(sizes)
        top = majority_vote(labels, truth)
        counter = BoundaryCounter(k)  # as the assign stage counts it
        counter.add(km.assign(x, centroids, neighbours=1 + boundary_neighbours(k)))
        graph = boundary_matrix([counter.edges()], k)[np.ix_(alive, alive)]
        for linkage in LINKAGES if lang_w == 0 and page_w == 0 else ("boundary", "ward"):
            merged = CentroidMerger(final_clusters=sources, linkage=linkage).merge(
                centroids[alive], sizes[alive], graph if linkage == "boundary" else None)
            lookup = np.full(k, -1)
            lookup[alive] = merged
            s = clustering_scores(lookup[labels], truth)
            rows.append({"corpus": Path(corpus).stem, "weight": weight, "dims": dims,
                         "language": lang_w, "layout": page_w, "layout_dims": page_d,
                         "linkage": linkage, "nmi": s["nmi"], "purity": s["purity"],
                         "majority_vote_nmi": top["nmi"], "k": k, "sources": sources})
            print(f"  lexical weight {weight:<3} dims {dims:<4} language {lang_w:<3} "
                  f"layout {page_w:<3} ({page_d:<2} dims) {linkage:<9} NMI "
                  f"{s['nmi']:.3f} purity {s['purity']:.3f}   (majority-vote merge of its k-means "
                  f"clusters: NMI {top['nmi']:.3f})", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", type=Path, required=True, help="Embedding cache.")
    ap.add_argument("--corpus", nargs="+", default=["playground"])
    ap.add_argument("--label-column", default="source")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    everything = []
    for corpus in args.corpus:
        print(f"## {Path(corpus).stem}", flush=True)  # "playground" for the playground
        everything += study(corpus, args.label_column, args.work_dir, args.seed)
    # what a default must do: well on every corpus (mean), and its worst corpus beside it
    import collections

    by = collections.defaultdict(list)
    for r in everything:
        by[(r["weight"], r["dims"], r["language"], r["layout"], r["layout_dims"],
            r["linkage"])].append(r["nmi"])
    ranked = sorted(by.items(), key=lambda kv: -sum(kv[1]) / len(kv[1]))
    print("## variants by their mean NMI over the corpora")
    for (w, d, lang_w, page_w, page_d, link), nmis in ranked[:8]:
        print(f"  weight {w:<3} dims {d:<4} language {lang_w:<3} layout {page_w:<3} "
              f"({page_d:<2} dims) {link:<9} mean {sum(nmis) / len(nmis):.3f} "
              f"worst {min(nmis):.3f}")


if __name__ == "__main__":
    main()
