"""Peak resident memory of a process tree, sampled in a thread: the one sampler of the benchmarks.

``python benchmarks/x.py`` puts this folder first on ``sys.path``, so each benchmark imports
it as ``from peak_memory import PeakMemory``.

    with PeakMemory() as mem:                  # this process and every process it started
        ...
    with PeakMemory(proc.pid) as mem:          # a child and its descendants (not this process)
        proc.communicate()
    with PeakMemory(slurm_jobs=True) as mem:   # ... plus the processes of the Slurm jobs
        ...
    mem.peak                                   # bytes: the largest sum of RSS seen
    mem.peak_pss                               # bytes: the largest sum of PSS seen (Linux)
    mem.peak_pss_detail                        # [(process, PSS bytes)] at that moment
    mem.peak_pss_at                            # when: seconds after entering

The sum counts each process once.  RSS counts a page shared by several processes (forked
workers share their parent's libraries and heap until written) once in each of them, so the
RSS sum overstates what the processes hold together; PSS splits each shared page between its
sharers, so the PSS sum is the memory they take from the machine (``/proc/<pid>/smaps_rollup``;
where it cannot be read, RSS stands in).  With ``slurm_jobs`` it also counts the processes that
run the jobs of a Slurm on this machine -- the descendants of every ``slurmstepd`` (the
batch script, ``srun``, the task) -- which are not descendants of the submitting process;
the Slurm daemons themselves (``slurmstepd``, ``slurmd``, ``slurmctld``, ``munged``) are
never counted.
"""

from __future__ import annotations

import os
import threading
import time

SLURM_DAEMONS = frozenset({"slurmstepd", "slurmd", "slurmctld", "slurmdbd", "munged"})


def slurm_job_processes() -> list:
    """The processes of the Slurm jobs running on this machine: every ``slurmstepd``'s
    descendants, less the Slurm daemons."""
    import psutil

    found = {}
    for step in psutil.process_iter(["name"]):
        if step.info["name"] != "slurmstepd":
            continue
        try:
            for p in step.children(recursive=True):
                found[p.pid] = p
        except psutil.Error:
            pass
    return list(found.values())


def _label(proc) -> str:
    """A process's name and the start of its command line, to tell the processes apart."""
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:80] or proc.name()}"
    except Exception:  # noqa: BLE001 - a process that exited or hides its command line
        return str(proc.pid)


class PeakMemory:
    """Largest RSS sum over ``root`` (default: this process) and all its descendants, plus
    the Slurm jobs' processes when ``slurm_jobs``, sampled every ``interval`` seconds."""

    def __init__(self, root: int | None = None, *, slurm_jobs: bool = False,
                 interval: float = 0.1):
        self.root = os.getpid() if root is None else root
        self.slurm_jobs = slurm_jobs
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0
        self.peak_pss_detail: list[tuple[str, int]] = []  # (process, PSS bytes) at peak_pss
        self.peak_pss_at = 0.0  # seconds from __enter__ to the sample of peak_pss
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._root = None  # psutil.Process, made once (so a reused pid is not followed)

    def sample(self) -> int:
        """The RSS sum now (bytes); also raises :attr:`peak`."""
        import psutil

        procs = {}
        try:
            if self._root is None:
                self._root = psutil.Process(self.root)
            procs[self._root.pid] = self._root
            for p in self._root.children(recursive=True):
                procs[p.pid] = p
        except psutil.Error:
            pass  # the root has exited: only the Slurm jobs are left to count
        if self.slurm_jobs:
            for p in slurm_job_processes():
                procs.setdefault(p.pid, p)
        total = pss = 0
        detail = []
        for p in procs.values():
            try:
                if p.pid != self.root and p.name() in SLURM_DAEMONS:
                    continue  # a daemon started from here (e.g. by scripts/local_slurm.sh)
                rss = p.memory_info().rss
                total += rss
                try:
                    one = p.memory_full_info().pss
                except (psutil.Error, AttributeError):
                    one = rss
                pss += one
                detail.append((p, one))
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)
        if pss > self.peak_pss:  # processes named only at a new peak, not at every sample
            self.peak_pss = pss
            self.peak_pss_detail = [(_label(p), b) for p, b in sorted(detail, key=lambda d: -d[1])]
            self.peak_pss_at = time.monotonic() - self._started
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

