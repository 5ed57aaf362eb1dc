"""The datatrove steps of ``hf-mixture search``: proxy runs as tasks, the search between them.

A search of rounds ``[n1, n2, ...]`` is one chain of stages on the executor layer
(:mod:`hf_mixture.executors`), each stage after the one before (Slurm: ``afterok``)::

    plan-r1 (1 task) -> proxies-r1 (n1 tasks) -> plan-r2 (1) -> proxies-r2 (n2) -> ...
        -> plan-final (1) -> proxies-final (verification + transfer runs) -> finish (1)

==================  ===========================================================  =========
step (stage)        does                                                         tasks
==================  ===========================================================  =========
:class:`PlanStep`   ``plan-rK``: fit the predictor on the finished runs, score    1
                    candidates, write ``rounds/round_K.json`` and the run folders
:class:`ProxyTask`  ``proxies-rK``: task ``i`` trains run folder ``runs/rK-<i>``  one per run
:class:`PlanStep`   ``plan-final``: the final candidates' verification (and         1
                    transfer) run folders, listed in ``final.json``
:class:`ProxyTask`  ``proxies-final``: task ``i`` trains the ``i``-th listed folder  upper bound
:class:`PlanStep`   ``finish``: ``mixture.yaml``, ``report.md``, ``result.json``      1
==================  ===========================================================  =========

A proxy run folder is the unit of finished work (``metrics.json``): a task whose run is
finished returns at once, so a resubmitted stage never retrains it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from ..executors import quiet_datatrove_console

quiet_datatrove_console()


class ProxyTask(PipelineStep):
    """Task ``rank`` trains the ``rank``-th run folder of ``listing`` (a round or ``final``).

    A stage has as many tasks as its listing can hold; a task beyond the listing (fewer
    verification runs than the bound, say) does nothing.  The proxy is the same
    :func:`~hf_mixture.search.proxy.run_proxy` ``MixtureTrainer`` run as everywhere: it uses
    the device the scheduler gave the task (``CUDA_VISIBLE_DEVICES``).
    """

    type = "hf_mixture"
    name = "proxy"

    def __init__(self, output_dir: str, listing: str, resolve: Callable[[Path, str], list[Path]],
                 retry_failed: bool = False, target_fn: Any = None, stage: str | None = None):
        super().__init__()
        self.stage = stage  # the counter of the main process' "proxy runs" bar
        self.output_dir = str(output_dir)
        self.listing = listing
        self.resolve = resolve  # search.listed_folders (given, so that no import cycle forms)
        self.retry_failed = retry_failed
        self.target_fn = target_fn  # only in-process (local, one worker): see run_search

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        from .._progress import quiet_deepspeed_detection
        from .proxy import run_proxy

        # the proxy run imports accelerate and with it DeepSpeed: its "Setting accelerator to
        # CPU" line must not reach the bar (set here, in the task's own process)
        quiet_deepspeed_detection()
        folders = self.resolve(Path(self.output_dir), self.listing)
        if rank < len(folders):
            with self.track_time("run"):
                result = run_proxy(folders[rank], target_fn=self.target_fn,
                                   retry_failed=self.retry_failed)
            self.stat_update(result.get("status", "failed"))
            if self.stage is not None:
                from .._progress import task_counter

                with task_counter(self.output_dir, self.stage, rank) as counter:
                    counter.update(1)
        if data:
            yield from data


class PlanStep(PipelineStep):
    """One task of the search itself: ``phase`` is ``"round"`` (plan round ``k``),
    ``"final"`` (plan the verification runs) or ``"finish"`` (write the result)."""

    type = "hf_mixture"
    name = "search"

    def __init__(self, step: Callable[..., None], store: str, target: Any, output_dir: str,
                 config: Any, phase: str, k: int | None = None):
        super().__init__()
        self.step = step  # search.search_step (given, so that no import cycle forms)
        self.store = str(store)
        self.target = target  # the TargetSpec (text targets are already tokenized)
        self.output_dir = str(output_dir)
        self.config = config
        self.phase = phase
        self.k = k

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1
            ) -> DocumentsPipeline:
        from .._progress import quiet_deepspeed_detection

        # Here, in the process that runs the step (a local pool's worker forked long before,
        # from a fork server whose environment is older than the command's; a Ray or Slurm
        # task), before a proxy run imports accelerate and with it DeepSpeed.
        quiet_deepspeed_detection()
        with self.track_time(self.phase):
            self.step(self.store, self.target, self.output_dir, self.config, self.phase,
                        self.k)
        if data:
            yield from data
