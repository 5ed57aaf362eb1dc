"""``hf-mixture cluster``: discover domains in a corpus and write them as a clustered corpus.

hf-mixture cluster --output clusters                       # the playground, default rules
hf-mixture cluster data.parquet --output out --final-clusters 20
hf-mixture cluster user/dataset --dataset-config en --split train --output out
hf-mixture cluster corpus/ --output out --executor slurm --slurm-partition cpu --tasks 512
hf-mixture cluster corpus/ --output out --executor ray --ray-address auto

Every flag is a :class:`~hf_mixture.clustering.config.ClusterConfig` or
:class:`~hf_mixture.executors.ExecutorConfig` field.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from .config import add_config_arguments

    parser = subparsers.add_parser(
        "cluster",
        help="Embed, k-means, quality-prune, merge and describe a corpus into domains.",
        description=(
            "Discover domains in an unlabeled corpus (CLIMB-style) as datatrove pipelines on a "
            "local, Slurm or Ray executor: deduplicate, score quality, embed with a "
            "sentence-embedding model, k-means on a sample, assign every document, drop "
            "low-quality clusters, merge centroids agglomeratively, describe each cluster, and "
            "write a clustered corpus (cluster_<k>/*.parquet, README configs, clusters.json) plus "
            "report.md. Finished tasks are never redone: rerun to resume."
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
    from ..executors import ExecutorConfig

    add_config_arguments(parser.add_argument_group("executor"), ExecutorConfig)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..executors import ExecutorConfig
    from .config import config_from_args
    from .pipeline import cluster_corpus

    config = config_from_args(args)
    executor = config_from_args(args, ExecutorConfig)
    result = cluster_corpus(args.input, args.output, config, executor=executor,
                            progress=not args.quiet)
    if result is None:  # queued on Slurm: the output appears when the jobs finish
        print(f"Submitted to Slurm; {args.output} appears when the last stage finishes.")
        return 0
    dropped = len(result.dropped_clusters)
    print(
        f"Clustered {result.num_docs} documents ({result.num_duplicates} duplicates removed): "
        f"{result.num_clusters} k-means clusters, {dropped} pruned, {result.final_clusters} final."
    )
    print(f"Clustered corpus: {result.output_dir}")
    print(f"Report: {result.report_path}")
    return 0
