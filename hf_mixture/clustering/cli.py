"""``hf-mixture cluster``: discover domains in a corpus and write them as a clustered corpus.

hf-mixture cluster --output clusters                       # the playground, default rules
hf-mixture cluster data.parquet --output out --final-clusters 20
hf-mixture cluster user/dataset --config en --split train --output out --max-docs 100000
accelerate launch -m hf_mixture.cli cluster corpus/ --output out   # data-parallel embedding

Every flag is a :class:`~hf_mixture.clustering.config.ClusterConfig` field.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from .config import add_config_arguments

    parser = subparsers.add_parser(
        "cluster",
        help="Embed, k-means, quality-prune, merge and describe a corpus into domains.",
        description=(
            "Discover domains in an unlabeled corpus (CLIMB-style): deduplicate, embed with a "
            "sentence-embedding model (cached, resumable), k-means, drop low-quality clusters, "
            "merge centroids agglomeratively, describe each cluster, and write a clustered corpus "
            "(cluster_<k>/*.parquet, README configs, clusters.json) plus report.md."
        ),
    )
    parser.add_argument(
        "input",
        nargs="?",
        default=None,
        metavar="INPUT",
        help="parquet/jsonl/csv file or folder, or a Hub dataset id (default: the playground).",
    )
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="Clustered corpus folder to write."
    )
    parser.add_argument("--quiet", action="store_true", help="No progress bars.")
    add_config_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from .config import config_from_args
    from .pipeline import cluster_corpus

    config = config_from_args(args)
    result = cluster_corpus(args.input, args.output, config, progress=not args.quiet)
    if result is None:  # a non-main rank under accelerate launch: rank 0 reports
        return 0
    dropped = len(result.dropped_clusters)
    print(
        f"Clustered {result.num_docs} documents ({result.num_duplicates} duplicates removed): "
        f"{result.num_clusters} k-means clusters, {dropped} pruned, {result.final_clusters} final."
    )
    print(f"Clustered corpus: {result.output_dir}")
    print(f"Report: {result.report_path}")
    return 0
