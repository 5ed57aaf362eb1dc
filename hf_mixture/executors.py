"""Where the corpus stages run: datatrove's local, Slurm or Ray executor, one code path.

Every corpus stage (read -> dedup -> score -> embed -> centroids -> assign -> merge ->
write) is a list of datatrove ``PipelineStep`` s run by a datatrove executor over
``tasks`` tasks.  Only the executor differs between a laptop and a cluster:

==========  ==========================================  ===================================
executor    what runs the tasks                         finished work
==========  ==========================================  ===================================
local       ``LocalPipelineExecutor`` (a process pool)   ``completions/<task>`` per stage
slurm       ``SlurmPipelineExecutor`` (one job array     same; stages chained by ``depends=``
            per stage, chained with ``afterok``)
ray         ``RayPipelineExecutor`` on a Ray cluster     same
==========  ==========================================  ===================================

A finished task is never redone: datatrove marks it in the stage's logging folder, and
a rerun skips it.  The work folder must therefore be on a filesystem every worker sees
(a shared filesystem for Slurm and multi-node Ray).

No worker outlives the command (:mod:`hf_mixture._procs`), however it dies (SIGKILL too):
each task first binds its process to the command's, helpers forked while a stage runs die
with it, and what a local Ray instance starts is reaped when the command is gone.

>>> ExecutorConfig(workers=2).resolved_workers()
2
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import _procs
from .errors import HFMixtureError

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm", "ray")
# datatrove prints every task's INFO lines (pipeline, stats) on stderr; they stay in each
# task's log file, and the console shows warnings unless HF_MIXTURE_VERBOSE=1 (`-v`).
CONSOLE_LEVEL_ENV = "HF_MIXTURE_VERBOSE"
# Set in a local worker while its task runs: how many tasks of the stage run at once on this
# machine, so that each takes its share of the cores for torch/OpenMP threads
# (hf_mixture.clustering.embed.default_num_threads) instead of all of them.
CONCURRENT_TASKS_ENV = "HF_MIXTURE_CONCURRENT_TASKS"


def _console_level(task: bool = False) -> str:
    if os.environ.get(CONSOLE_LEVEL_ENV, "") not in ("", "0"):
        return "INFO"
    # A failing task's exception reaches the caller (the CLI prints one sentence); datatrove's
    # own copy of its traceback stays in the task's log file.
    return "CRITICAL" if task else "WARNING"


def quiet_datatrove_console() -> None:
    """Route datatrove's console output through :data:`CONSOLE_LEVEL_ENV`; files keep DEBUG.

    Applied in every process that imports this module (the executor's workers unpickle
    our steps, which imports it), before a task's logger is set up.
    """
    import sys

    import datatrove.utils.logging as dlog
    from datatrove.executor import base
    from loguru import logger as loguru_logger

    if getattr(dlog, "_hf_mixture_quiet", False):
        return

    def add_task_logger(logging_dir, rank, local_rank=0, node_rank=-1):
        from ._progress import quiet_third_party

        quiet_third_party()  # this worker's bars and banners of other libraries (unless -v)
        loguru_logger.remove()
        logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
        fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"
        loguru_logger.add(sys.stderr, level=_console_level(task=True) if local_rank == 0 else "CRITICAL",
                          format=fmt, colorize=False)
        loguru_logger.add(logfile, level="DEBUG", format=fmt, colorize=False)
        loguru_logger.info(f"Launching pipeline for {rank=}")
        return logfile

    def setup_default_logger():
        loguru_logger.remove()
        loguru_logger.add(sys.stderr, level=_console_level(), colorize=False)

    dlog.add_task_logger = base.add_task_logger = add_task_logger
    dlog.setup_default_logger = setup_default_logger
    dlog._hf_mixture_quiet = True
    setup_default_logger()


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class ExecutorConfig:
    """How the corpus stages' tasks are launched (``--executor local|slurm|ray``)."""

    executor: str = field(default="local", metadata=_help(
        "Engine that runs the tasks: local (a process pool on this machine), slurm (one job "
        "array per stage) or ray (tasks on a running Ray cluster).", choices=EXECUTORS))
    tasks: int | None = field(default=None, metadata=_help(
        "Tasks the per-document stages are split into (default: one per input shard of "
        "--shard-rows rows, at most 1000). The result depends on the shards, never on "
        "--workers."))
    workers: int | None = field(default=None, metadata=_help(
        "Tasks run at the same time (default: local, one per CPU core; slurm/ray: all)."))
    slurm_partition: str | None = field(default=None, metadata=_help(
        "Slurm partition (required with --executor slurm)."))
    slurm_time: str = field(default="24:00:00", metadata=_help("Slurm time limit per task."))
    slurm_cpus_per_task: int = field(default=4, metadata=_help("Slurm CPUs per task."))
    slurm_gpus_per_task: int = field(default=0, metadata=_help(
        "Slurm GPUs per task of the stages that use one (cluster: embedding; search: proxy "
        "runs); other stages use none."))
    slurm_mem_per_cpu_gb: int = field(default=4, metadata=_help("Slurm memory per CPU (GB)."))
    slurm_job_name: str = field(default="hf-mixture", metadata=_help(
        "Slurm job name prefix; each stage appends its name."))
    slurm_logs_dir: str | None = field(default=None, metadata=_help(
        "Folder for Slurm's own stdout/stderr files (default: in the work folder)."))
    slurm_env_command: str | None = field(default=None, metadata=_help(
        "Shell command each Slurm job runs first (e.g. 'source .venv/bin/activate')."))
    ray_address: str | None = field(default=None, metadata=_help(
        "Address of the Ray cluster (ray.init(address=...)); default: a Ray instance already "
        "initialized in this process, else a local one."))
    ray_cpus_per_task: int = field(default=1, metadata=_help("CPUs Ray reserves per task."))
    ray_gpus_per_task: float = field(default=0, metadata=_help(
        "GPUs Ray reserves per task of the stages that use one (as --slurm-gpus-per-task)."))

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise HFMixtureError(
                f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}.")
        for name in ("tasks", "workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise HFMixtureError(f"{name} must be a positive integer, got {value!r}.")
        defaults = {f.name: f.default for f in fields(self)}
        for prefix, executor in (("slurm_", "slurm"), ("ray_", "ray")):
            if self.executor == executor:
                continue
            changed = [f"--{n.replace('_', '-')}" for n in defaults
                       if n.startswith(prefix) and getattr(self, n) != defaults[n]]
            if changed:
                raise HFMixtureError(
                    f"{', '.join(changed)} only apply with --executor {executor}, not "
                    f"--executor {self.executor}.")
        if self.executor == "slurm" and not self.slurm_partition:
            raise HFMixtureError("--executor slurm needs --slurm-partition.")

    def resolved_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        if self.executor == "local":
            return os.cpu_count() or 1
        return -1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Stage:
    """One datatrove pipeline over ``tasks`` tasks, logged under ``work/<name>``."""

    name: str
    pipeline: list
    tasks: int = 1
    gpu: bool = False  # only the embedding stage asks the scheduler for GPUs


# datatrove's executors whose tasks first bind their process to the command's: built on
# first use (datatrove is imported lazily) and looked up by name when a worker unpickles one.
_BOUND = {"BoundLocalPipelineExecutor": "LocalPipelineExecutor",
          "BoundRayPipelineExecutor": "RayPipelineExecutor"}


def __getattr__(name: str) -> type:
    if name not in _BOUND:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _bound_class(name)


def _bound_class(name: str) -> type:
    if name in globals():
        return globals()[name]
    import datatrove.executor

    base = getattr(datatrove.executor, _BOUND[name])

    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        self.owner_pid = os.getpid()  # the command's process; pickled into each worker

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        # Local: the worker's parent is multiprocess's fork server, the owner its grandparent.
        # Ray: the parent is a Ray worker; the owner (the driver) may be on another node, where
        # its pid means nothing, and the Ray worker is then the process to die with.
        _procs.worker_started(self.owner_pid if self.owner_pid in _procs.ancestors() else
                              os.getppid())
        if _BOUND[name] != "LocalPipelineExecutor":  # Ray and Slurm give each task its CPUs
            return base._run_for_rank(self, rank, local_rank, node_rank)
        before = os.environ.get(CONCURRENT_TASKS_ENV)
        os.environ[CONCURRENT_TASKS_ENV] = str(max(1, min(self.workers, self.local_tasks)))
        try:
            return base._run_for_rank(self, rank, local_rank, node_rank)
        finally:  # one worker runs the tasks in the command's own process: leave it as it was
            if before is None:
                os.environ.pop(CONCURRENT_TASKS_ENV, None)
            else:
                os.environ[CONCURRENT_TASKS_ENV] = before

    cls = type(name, (base,), {"__init__": __init__, "_run_for_rank": _run_for_rank,
                               "__module__": __name__, "__doc__": base.__doc__})
    globals()[name] = cls
    return cls


def _make(config: ExecutorConfig, stage: Stage, logging_dir: Path, depends):
    workers = min(config.resolved_workers(), stage.tasks) if config.resolved_workers() > 0 \
        else -1
    if config.executor == "local":
        _procs.quiet_forkserver()
        return _bound_class("BoundLocalPipelineExecutor")(
            stage.pipeline, tasks=stage.tasks, workers=workers, logging_dir=str(logging_dir),
            depends=depends)
    if config.executor == "ray":
        return _bound_class("BoundRayPipelineExecutor")(
            stage.pipeline, tasks=stage.tasks, workers=workers, logging_dir=str(logging_dir),
            depends=depends, cpus_per_task=config.ray_cpus_per_task,
            gpus_per_task=config.ray_gpus_per_task if stage.gpu else 0, mem_per_cpu_gb=1)
    from datatrove.executor import SlurmPipelineExecutor

    logs = config.slurm_logs_dir or str(logging_dir.parent / "slurm_logs" / stage.name)
    return SlurmPipelineExecutor(
        stage.pipeline, tasks=stage.tasks, workers=workers, time=config.slurm_time,
        partition=config.slurm_partition, cpus_per_task=config.slurm_cpus_per_task,
        gpus_per_task=config.slurm_gpus_per_task if stage.gpu else 0,
        mem_per_cpu_gb=config.slurm_mem_per_cpu_gb,
        job_name=f"{config.slurm_job_name}-{stage.name}", env_command=config.slurm_env_command,
        logging_dir=str(logging_dir), slurm_logs_folder=logs, depends=depends)


def build_executors(config: ExecutorConfig, stages: list[Stage], work_dir: Path) -> list:
    """One datatrove executor per stage, each depending on the one before (``depends=``)."""
    out: list = []
    for stage in stages:
        out.append(_make(config, stage, work_dir / "logs" / stage.name, out[-1] if out else None))
    return out


def _init_ray(config: ExecutorConfig) -> None:
    import ray

    from ._progress import ray_init_options

    if not ray.is_initialized():
        if config.ray_address:
            ray.init(address=config.ray_address, **ray_init_options())
        else:
            # Ray fate-shares its raylet and GCS with this process (a parent-death signal),
            # but the workers and agents the raylet starts take up to a minute to notice.
            with _procs.reaped_on_exit():
                ray.init(num_cpus=config.resolved_workers() if config.workers else None,
                         **ray_init_options())


def run_stages(config: ExecutorConfig, stages: list[Stage], work_dir: Path) -> bool:
    """Run ``stages`` in order; ``True`` when they all finished here, ``False`` when queued.

    Local and Ray run stage after stage in this process and check that every task of a
    stage completed before the next starts (a failed task is one sentence naming the stage
    and its log).  Slurm submits the whole chain at once and returns (``False``): the last
    stage writes the output when the cluster gets to it.
    """
    if config.executor == "slurm":
        submit_stages(config, stages, work_dir)
        return False
    executors = build_executors(config, stages, work_dir)
    if config.executor == "ray":
        _init_ray(config)
    for stage, executor in zip(stages, executors):
        executor.depends = None  # run in order here, with our own completion check
        with _procs.children_die_with_me():  # datatrove's Manager process, forked here
            executor.run()
        missing = executor.get_incomplete_ranks(skip_completed=True)
        if missing:
            log = work_dir / "logs" / stage.name / "logs" / f"task_{missing[0]:05d}.log"
            raise HFMixtureError(
                f"Stage '{stage.name}' did not finish task {missing[0]} ({len(missing)} of "
                f"{stage.tasks} tasks incomplete); see {log}. Rerun to resume: finished tasks "
                "are skipped.")
    return True


# -- a chain submitted to Slurm ------------------------------------------------------------------
class ReleaseLock:
    """The last step of a submitted chain: remove the output's lock if it is still ours.

    A plain callable (datatrove calls every pipeline item as ``step(data, rank, world_size)``);
    it runs after the steps before it in the task have finished, so the lock goes only when
    the chain's last stage succeeded.
    """

    def __init__(self, lock: str | os.PathLike, token: str):
        self.lock = str(lock)
        self.token = token

    def __call__(self, data=None, rank: int = 0, world_size: int = 1):
        from ._io import release_lock

        if data is not None:
            yield from data
        release_lock(self.lock, self.token)


def submit_stages(config: ExecutorConfig, stages: list[Stage], work_dir: Path,
                  release: tuple[Path, str] | None = None) -> list[str]:
    """Submit ``stages`` to Slurm as job arrays chained by ``afterok``; their job ids.

    A stage whose tasks are all complete is not submitted.  ``release=(lock, token)``
    appends :class:`ReleaseLock` to the last stage (which must be one task), so the output
    stays locked until the chain has finished.
    """
    if release is not None:
        if stages[-1].tasks != 1:
            raise ValueError("the stage that releases the lock must be a single task")
        stages = stages[:-1] + [dataclasses.replace(
            stages[-1], pipeline=list(stages[-1].pipeline) + [ReleaseLock(*release)])]
    executors = build_executors(config, stages, work_dir)
    executors[-1].run()  # submits every stage, each with afterok on the one before
    jobs = [str(e.job_id) for e in executors if e.job_id not in (None, -1)]
    logger.info("submitted %d Slurm stages (jobs %s); logs under %s", len(jobs),
                ", ".join(jobs), work_dir / "logs")
    return jobs


def submit_locked(config: ExecutorConfig, stages: list[Stage], work_dir: Path,
                  lock: Path) -> list[str]:
    """:func:`submit_stages` with the output ``lock`` handed to the chain; its job ids.

    The lock passes to the jobs (their ids recorded in it) and the chain's last stage
    releases it; when submitting fails, or nothing needed submitting, it is released here.
    """
    import uuid

    from ._io import hand_over_lock, release_lock

    token = uuid.uuid4().hex
    hand_over_lock(lock, token)
    try:
        jobs = submit_stages(config, stages, work_dir, release=(lock, token))
    except BaseException:
        release_lock(lock, token)
        raise
    if jobs:
        hand_over_lock(lock, token, jobs)
    else:
        release_lock(lock, token)
    return jobs


def _run(cmd: list[str], timeout: float = 30):
    import subprocess

    try:
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {timeout:.0f} s")


def slurm_job_states(jobs: list[str]) -> dict[str, str]:
    """``{job id: state}`` of those of ``jobs`` still queued or running (``squeue``).

    A job left waiting on a stage that failed (reason ``DependencyNeverSatisfied``) can never
    start: it is cancelled and not reported, so the chain counts as ended.
    """
    if not jobs:
        return {}
    out = _run(["squeue", "-h", "-o", "%F %T %r"])
    if out is None or out.returncode != 0:
        # No squeue here: the lock cannot be checked, so it is treated as held.
        return {str(j): "UNKNOWN" for j in jobs}
    known = set(map(str, jobs))
    states: dict[str, str] = {}
    stuck: set[str] = set()
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in known:
            if len(parts) > 2 and parts[2] == "DependencyNeverSatisfied":
                stuck.add(parts[0])
            else:
                states.setdefault(parts[0], parts[1])
    stuck -= set(states)
    if stuck:
        _run(["scancel", *sorted(stuck)])
        logger.warning("cancelled Slurm jobs %s: a stage they depend on failed",
                       ", ".join(sorted(stuck)))
    return states


def slurm_jobs_alive(jobs: list[str]) -> list[str]:
    """The ids of ``jobs`` that are still queued or running."""
    return list(slurm_job_states(jobs))


def _ray_reachable(address: str) -> str | None:
    """Why a Ray address does not answer (None when a TCP connection opens or it is 'auto')."""
    import socket

    if address == "auto" or address.startswith("local"):
        return None
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return "is not HOST:PORT or ray://HOST:PORT"
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return None
    except OSError as err:
        return f"does not answer ({err.strerror or err})"


def check_executor(config: ExecutorConfig, *, gpus: bool = True) -> None:
    """Check what the scheduler can check before anything is submitted (one sentence each).

    Slurm: ``sinfo`` answers, the partition exists, it has GPUs when GPUs are asked, and
    ``--slurm-env-command`` succeeds here.  Ray: the address answers (then Ray is
    initialized) and the cluster has the GPUs asked.  ``gpus``: whether any stage asks for
    the GPUs configured.
    """
    if config.executor == "slurm":
        info = _run(["sinfo", "-h", "-o", "%P %G"])
        if info is None or info.returncode != 0:
            why = "is not installed" if info is None else (info.stderr.strip().splitlines()
                                                           or ["failed"])[-1]
            raise HFMixtureError(f"--executor slurm: sinfo {why}; is this a Slurm login node?")
        parts = {}
        for line in info.stdout.splitlines():
            name, _, gres = line.partition(" ")
            parts.setdefault(name.rstrip("*"), []).append(gres)
        if config.slurm_partition not in parts:
            raise HFMixtureError(
                f"Slurm has no partition {config.slurm_partition!r} (--slurm-partition); sinfo "
                f"lists {', '.join(sorted(parts)) or 'none'}.")
        if gpus and config.slurm_gpus_per_task > 0 and not any(
                "gpu" in g for g in parts[config.slurm_partition]):
            raise HFMixtureError(
                f"--slurm-gpus-per-task {config.slurm_gpus_per_task} asks for GPUs, but Slurm "
                f"partition {config.slurm_partition!r} has none (sinfo shows no gpu gres).")
        if config.slurm_env_command:
            done = _run(["bash", "-c", config.slurm_env_command], timeout=120)
            if done is None or done.returncode != 0:
                last = ((done.stderr or done.stdout).strip().splitlines() or [""])[-1] \
                    if done else "bash is missing"
                raise HFMixtureError(
                    f"--slurm-env-command {config.slurm_env_command!r} fails here (exit "
                    f"{done.returncode if done else '?'}: {last}); every job would run it first.")
    elif config.executor == "ray":
        import ray

        if not ray.is_initialized() and config.ray_address:
            why = _ray_reachable(config.ray_address)
            if why:
                raise HFMixtureError(f"--ray-address {config.ray_address!r} {why}.")
        try:
            _init_ray(config)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise HFMixtureError(f"Ray did not start or connect (--ray-address "
                                 f"{config.ray_address!r}): {str(err).splitlines()[0]}") from None
        have = float(ray.cluster_resources().get("GPU", 0))
        if gpus and config.ray_gpus_per_task > have:
            raise HFMixtureError(
                f"--ray-gpus-per-task {config.ray_gpus_per_task:g} asks for more GPUs than the "
                f"Ray cluster has ({have:g}).")
