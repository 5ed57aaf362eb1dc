"""``hf-mixture tokenize`` as datatrove tasks: clusters in parallel, then one merge.

Components of a token store are independent, so task ``r`` of ``T`` converts clusters
``ids[r::T]``, each into a one-component store under ``WORK/parts/cluster_<k>``
(:class:`TokenizeClusters`), and one last task moves the component folders into the
output and writes the combined manifest (:class:`MergeStoreParts`) -- no token is copied
twice.  Finished clusters are never redone (datatrove completions), and the output
appears only when the merge renames it into place.  Runs on the same executors as the
clustering stages (:mod:`hf_mixture.executors`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

from .._io import atomic_path, atomic_write_json
from .._progress import task_counter
from ..errors import HFMixtureError
from ..executors import quiet_datatrove_console
from .token_store import MANIFEST, TokenStoreWriter

quiet_datatrove_console()


class TokenizeClusters(PipelineStep):
    """Task ``rank`` converts its share of the clusters into one-component stores."""

    type = "hf_mixture"
    name = "tokenize"

    def __init__(self, work_dir: str, cluster_ids: list[int], options: dict[str, Any]):
        super().__init__()
        self.work_dir = str(work_dir)
        self.cluster_ids = list(cluster_ids)
        self.options = options

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        import pyarrow.compute  # noqa: F401 - imported once per worker, used by the converter

        from .clustered import ClusteredCorpus
        from .convert import _convert_cluster, _TextEncoder
        from .tokenizers import task_tokenizer

        o = self.options
        corpus = ClusteredCorpus(o["input"], revision=o["revision"], filesystem=o["filesystem"],
                                 clusters=self.cluster_ids,
                                 max_files_per_cluster=o["max_files_per_cluster"])
        tok = task_tokenizer(o["tokenizer"]) if o["tokenizer"] is not None else None
        encoder = None if o["from_tokens"] else _TextEncoder(tok, None)
        parts = Path(self.work_dir) / "parts"
        counter = task_counter(self.work_dir, "tokenize", rank)
        try:
            for k in self.cluster_ids[rank::world_size]:
                eos_seen = {"documents_ending_with_eos": 0}
                with TokenStoreWriter(parts / f"cluster_{k}", vocab_size=o["tok_info"]["vocab_size"],
                                      eos_token_id=o["eos"], tokenizer_name=o["tok_info"]["name"],
                                      tokenizer_hash=o["tok_info"]["sha256"],
                                      extra={"eos": eos_seen}, overwrite=True) as writer:
                    _convert_cluster(corpus, k, writer, o["tok_info"], encoder, o["fraction"],
                                     o["seed"], o["key_column"], o["batch_size"],
                                     o["eos"] if o["from_tokens"] else None, eos_seen,
                                     o["download"], progress=counter)
                self.stat_update("clusters")
            counter.close()
        finally:
            if encoder is not None:
                encoder.close()


class MergeStoreParts(PipelineStep):
    """Move every part's component into one store; one manifest; rename onto the output."""

    type = "hf_mixture"
    name = "merge"

    def __init__(self, work_dir: str, cluster_ids: list[int], output: str, extra: dict[str, Any]):
        super().__init__()
        self.work_dir = str(work_dir)
        self.cluster_ids = list(cluster_ids)
        self.output = str(output)
        self.extra = extra

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        parts = Path(self.work_dir) / "parts"
        # atomic_path: written under a temporary sibling, swapped onto the output when complete
        with atomic_path(Path(self.output)) as tmp:
            tmp.mkdir(parents=True)
            manifest: dict[str, Any] | None = None
            ending = 0
            for k in self.cluster_ids:
                part = parts / f"cluster_{k}"
                if not (part / MANIFEST).is_file():
                    raise HFMixtureError(f"Tokenize part '{part}' is missing: rerun to finish it.")
                m = json.loads((part / MANIFEST).read_text(encoding="utf-8"))
                ending += int(m.get("eos", {}).get("documents_ending_with_eos", 0))
                if manifest is None:
                    manifest = {key: v for key, v in m.items() if key not in ("components", "eos")}
                    manifest["components"] = {}
                manifest["components"].update(m["components"])
                for component in m["components"]:
                    os.replace(part / component, tmp / component)
            assert manifest is not None  # at least one cluster: checked by the caller
            manifest.update(self.extra)
            manifest["eos"] = {"documents_ending_with_eos": ending, "stripped": bool(ending)}
            atomic_write_json(tmp / MANIFEST, manifest)
        shutil.rmtree(parts, ignore_errors=True)  # moved into the output; nothing to redo
