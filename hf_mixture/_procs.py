"""Worker processes that die with the command that started them, however it dies.

SIGKILL (the out-of-memory killer, ``kill -9``) runs no cleanup code in the dying process,
so its workers must learn of its death from the kernel, not from it:

=========================  ======================================================================
call (where)               what the kernel does
=========================  ======================================================================
``die_with_parent(ppid)``  ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the child is killed when its
(in a child)               parent dies.  A parent that died before the call is caught by comparing
                           ``os.getppid()`` with ``ppid`` afterwards.
``follow(owner)``          a daemon thread waits on ``pidfd_open(owner)`` and kills this process
(in a grandchild)          when ``owner`` exits: datatrove's workers are forked by
                           multiprocessing's fork server, not by the command itself.
``children_die_with_me()`` while it is open, every ``os.fork()`` child of this process runs
(in the parent)            ``die_with_parent``: helpers that libraries fork for us (datatrove's
                           ``multiprocess.Manager``) are covered too.
``worker_started(owner)``  what each worker calls first: ``die_with_parent`` + ``follow`` +
(in a worker)              SIGINT ignored (Ctrl-C in a terminal reaches the whole process group;
                           the command stops its workers itself, and a worker's own
                           KeyboardInterrupt would only print a traceback).
``quiet_forkserver()``     before a local pool starts: a worker that the fork server had forked
(in the parent)            but the command, interrupted, never sent its data ends silently
                           instead of printing ``EOFError`` (``hf_mixture._forkserver``).
``reaped_on_exit()``       around code that starts processes which start their own (a local Ray
(in the parent)            instance: its raylet starts workers and agents): they inherit a
                           marker in their environment, and a watchdog holding a pipe from this
                           process kills every process with the marker, and every descendant of
                           one (remembered while alive: Ray's agents overwrite their environment
                           and outlive their parent), once the pipe reads EOF.
=========================  ======================================================================

The parent-death signal fires when the *thread* that forked the child exits, so a process
is only ever bound to a thread that outlives it (the caller of the executor's ``run``).
Where ``prctl``/``pidfd_open`` are missing (not Linux), a thread polls the parent instead.

>>> with children_die_with_me():
...     pass
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

# A process started in reaped_on_exit() carries "<REAP_ENV>=<token>" in its environment.
REAP_ENV = "HF_MIXTURE_REAP"

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_POLL_S = 0.5  # the fallback's polling interval (no prctl / pidfd)

_prctl = None
_following: set[tuple[int, int]] = set()  # (this pid, owner): one watcher thread each
_fork_parent: int | None = None  # set while children_die_with_me() is open
_hook_installed = False
_watchdogs: list[subprocess.Popen] = []  # kept open: closing one's stdin makes it reap


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _set_pdeathsig(sig: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)``; ``False`` where it is not available."""
    global _prctl
    if not sys.platform.startswith("linux"):
        return False
    if _prctl is None:
        import ctypes

        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return False
        _prctl.restype = ctypes.c_int
        _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    return _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def _watch(owner: int, pidfd: int | None) -> None:
    if pidfd is not None:
        import select

        select.select([pidfd], [], [])  # readable once ``owner`` has exited
    else:
        while True:
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(_POLL_S)
    _die()


def _start_watcher(owner: int) -> None:
    key = (os.getpid(), owner)
    if key in _following:
        return
    _following.add(key)
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(owner)
        except ProcessLookupError:
            _die()
        except OSError:  # a kernel before 5.3: poll
            pidfd = None
    threading.Thread(target=_watch, args=(owner, pidfd), daemon=True,
                     name=f"hf-mixture-follow-{owner}").start()


def ancestors() -> set[int]:
    """This process and its ancestors (Linux ``/proc``; elsewhere this process only)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def die_with_parent(ppid: int) -> None:
    """In a child of ``ppid``: be killed (SIGKILL) by the kernel when ``ppid`` dies."""
    if os.getpid() == ppid:
        return
    if _set_pdeathsig(signal.SIGKILL):
        if os.getppid() != ppid:  # the parent died before prctl: nobody will signal us
            _die()
    else:
        _start_watcher(ppid)


def follow(owner: int) -> None:
    """Be killed as soon as process ``owner`` (an ancestor, not necessarily the parent) exits."""
    if os.getpid() == owner:
        return
    _start_watcher(owner)


def worker_started(owner: int) -> None:
    """First call of a worker of ``owner`` (the command's process): die with it and with the
    parent, leave Ctrl-C to the command."""
    if os.getpid() == owner:  # tasks run in the command's own process (one worker)
        return
    ppid = os.getppid()
    die_with_parent(ppid)
    follow(owner)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _after_fork_in_child() -> None:
    global _fork_parent
    parent, _fork_parent = _fork_parent, None  # the child's own forks are its business
    if parent is not None:
        die_with_parent(parent)


@contextlib.contextmanager
def children_die_with_me() -> Iterator[None]:
    """While open, every ``os.fork()`` child of this process dies when this process dies."""
    global _fork_parent, _hook_installed
    if not _hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _hook_installed = True
    outer, _fork_parent = _fork_parent, os.getpid()
    try:
        yield
    finally:
        _fork_parent = outer


def quiet_forkserver() -> None:
    """Have multiprocess's fork server import ``hf_mixture._forkserver`` when it starts (it
    starts once per process, at the first forkserver pool): see that module."""
    from multiprocess import forkserver

    server = forkserver._forkserver
    modules = list(getattr(server, "_preload_modules", None) or ["__main__"])
    if "hf_mixture._forkserver" not in modules:
        server.set_forkserver_preload(modules + ["hf_mixture._forkserver"])


@contextlib.contextmanager
def killed_on_error(pool) -> Iterator[None]:
    """Around the use of a ``concurrent.futures.ProcessPoolExecutor``: on an exception
    (Ctrl-C included) its workers are killed at once; the pool's own shutdown would wait
    for the tasks in flight to finish."""
    try:
        yield
    except BaseException:
        if hasattr(pool, "kill_workers"):  # Python 3.14
            pool.kill_workers()
        else:
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                with contextlib.suppress(OSError, ValueError):
                    process.kill()
        raise


@contextlib.contextmanager
def reaped_on_exit() -> Iterator[None]:
    """Processes started while this is open (and everything they start) are killed when this
    process exits, however it exits: a watchdog kills them when its stdin (a pipe from this
    process) reads EOF.  Linux (``/proc``); elsewhere this does nothing."""
    if not os.path.isdir("/proc/self"):
        yield
        return
    token = secrets.token_hex(8)
    # Its own session: Ctrl-C in the terminal does not reach it, and it outlives us.
    _watchdogs.append(subprocess.Popen(
        [sys.executable, "-c", "from hf_mixture._procs import _reap; _reap()", token],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True))
    before = os.environ.get(REAP_ENV)
    os.environ[REAP_ENV] = token
    try:
        yield
    finally:  # later processes of ours are not the watchdog's business
        if before is None:
            os.environ.pop(REAP_ENV, None)
        else:
            os.environ[REAP_ENV] = before


def _marked(token: str) -> list[int]:
    entry = f"{REAP_ENV}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if entry in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:  # gone, or not ours to read
            pass
    return found


def _process_table() -> dict[int, tuple[int, int]]:
    """``pid -> (parent pid, start time)`` of every process (Linux ``/proc``)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            table[int(name)] = (int(fields[1]), int(fields[19]))
        except (OSError, ValueError, IndexError):
            pass
    return table


def _tracked(token: str, known: dict[int, int]) -> dict[int, int]:
    """``pid -> start time`` of the processes to reap: those with the marker, those seen
    before (the same process: the same start time), and every descendant of either.

    The marker alone is not enough: a process may overwrite its environment in place --
    ``setproctitle`` does, and Ray's agents and workers rename themselves with it -- after
    which ``/proc/<pid>/environ`` no longer shows it; and an orphan's parent is init, so it
    must have been seen while its parent was alive.  The watchdog looks twice a second.
    """
    table = _process_table()
    me = os.getpid()
    roots = [p for p in _marked(token) if p in table]
    roots += [p for p, start in known.items() if p in table and table[p][1] == start]
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    while roots:
        pid = roots.pop()
        if pid in found or pid == me:
            continue
        found[pid] = table[pid][1]
        roots.extend(children.get(pid, ()))
    return found


def _reap() -> None:  # pragma: no cover - the watchdog process
    import select

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    token = sys.argv[1]
    fd = sys.stdin.fileno()
    known: dict[int, int] = {}
    while True:  # until the owner's pipe reads EOF, remember what it started
        if select.select([fd], [], [], 0.5)[0] and not os.read(fd, 65536):
            break
        known = _tracked(token, known)
    for _ in range(10):  # a process may start another while it is being killed
        known = _tracked(token, known)
        if not known:
            break
        for pid in known:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
