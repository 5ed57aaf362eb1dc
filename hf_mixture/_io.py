"""Atomic writes: an interrupted run never leaves a half-written file or folder.

Files and folders are written under a temporary sibling name and renamed into
place only once complete (``os.replace`` is atomic on one filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import HFMixtureError


def tmp_sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (same folder, so ``os.replace`` onto it is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path`` (file or folder).

    On an exception the temporary path is removed and ``path`` is left untouched.
    An existing folder at ``path`` is replaced only after the new one is complete.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(final)
    try:
        yield tmp
        if final.is_dir() and tmp.is_dir():
            old = tmp_sibling(final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in ``chunk``-byte blocks (never whole in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def short_hash(obj: Any) -> str:
    """16 hex digits of SHA-256 over ``obj``: bytes and strings as they are, anything else
    as sorted JSON.

    The one fingerprint of hf_mixture's caches, manifests and up-to-date checks.

    >>> short_hash({"b": 1, "a": 2}) == short_hash({"a": 2, "b": 1})
    True
    """
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return hashlib.sha256(obj).hexdigest()[:16]
    blob = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove ``.<name>.tmp-<pid>-*`` siblings of ``path`` left by dead processes of this host.

    A SIGKILLed run cannot clean up after itself; the next run does.  Returns what it removed.
    """
    final = Path(path)
    removed = []
    if not final.parent.is_dir():
        return removed
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(p.name[len(f".{final.name}.tmp-"):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class OutputBusy(HFMixtureError):
    """The output is locked by a live writer; ``holder`` is what its lock file records."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, *,
                jobs_alive: Callable[[list[str]], list[str]] | None = None) -> Iterator[Path]:
    """Hold ``.<name>.lock`` beside ``path`` while a stage writes it; one writer at a time.

    The lock file records pid, host and start time.  A second writer gets one sentence
    naming the holder (:class:`OutputBusy`); a lock left by a dead process of this host is
    taken over (logged).  A writer that queued scheduler jobs hands the lock to them with
    :func:`hand_over_lock`: it then outlives this process until the chain's last stage
    releases it (:func:`release_lock`); while any of those jobs is queued or running
    (``jobs_alive(ids)``, e.g. :func:`hf_mixture.executors.slurm_jobs_alive`; without it
    they count as alive) the output stays locked, and once none is (a stage failed) the
    lock is taken over.
    Stale temporary siblings of dead runs are removed on the way in.
    """
    import logging
    import socket
    import time

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.with_name(f".{final.name}.lock")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    log = logging.getLogger(__name__)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                holder = {}
            if holder.get("token") and holder.get("jobs"):
                if jobs_alive is None or jobs_alive(holder["jobs"]):
                    raise OutputBusy(
                        f"Output '{final}' is being written by Slurm jobs "
                        f"{', '.join(map(str, holder['jobs']))}, still queued or running; wait "
                        f"for them (squeue) or cancel them (scancel) first.", holder) from None
                log.warning("taking over the lock of %s from Slurm jobs %s, none of which is "
                            "queued or running", final, ", ".join(map(str, holder["jobs"])))
                lock.unlink(missing_ok=True)
                continue
            same_host = holder.get("host") == me["host"]
            if same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
                log.warning("taking over the lock of %s from process %s, which is gone", final,
                            holder["pid"])
                lock.unlink(missing_ok=True)
                continue
            raise OutputBusy(
                f"Output '{final}' is being written by process {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}; wait for it to finish (or delete '{lock}' if that "
                "process is gone).", holder) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    remove_stale_temporaries(final)
    try:
        yield lock
    finally:
        try:
            handed = bool(json.loads(lock.read_text() or "{}").get("token"))
        except (OSError, json.JSONDecodeError):
            handed = False
        if not handed:
            lock.unlink(missing_ok=True)


def hand_over_lock(lock: Path, token: str, jobs: list[str] | None = None) -> None:
    """Keep ``lock`` (from :func:`output_lock`) past this process for a scheduled chain.

    Call it with ``jobs=None`` before submitting (the chain's last stage removes the lock
    with ``release_lock(lock, token)``, even if it ends before this process does), then
    with the submitted ``jobs``: a later writer checks whether any of them is still queued
    or running.  A lock already released by the chain is left released.
    """
    try:
        holder = json.loads(lock.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return
    if jobs is not None and holder.get("token") != token:
        return
    atomic_write_json(lock, {**holder, "token": token,
                             "jobs": [str(j) for j in (jobs or [])]})


def release_lock(lock: str | os.PathLike, token: str) -> bool:
    """Remove a handed-over lock if it still carries ``token`` (a later writer's is kept)."""
    lock = Path(lock)
    try:
        holder = json.loads(lock.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return False
    if holder.get("token") != token:
        return False
    lock.unlink(missing_ok=True)
    return True
