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
from pathlib import Path
from typing import Any, Iterator

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


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``.<name>.lock`` beside ``path`` while a stage writes it; one writer at a time.

    The lock file records pid, host and start time.  A second writer gets one sentence
    naming the holder; a lock left by a dead process of this host is taken over (logged).
    Stale temporary siblings of dead runs are removed on the way in.
    """
    import logging
    import socket
    import time

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = final.with_name(f".{final.name}.lock")
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                holder = {}
            same_host = holder.get("host") == me["host"]
            if same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
                logging.getLogger(__name__).warning(
                    "taking over the lock of %s from process %s, which is gone", final,
                    holder["pid"])
                lock.unlink(missing_ok=True)
                continue
            raise HFMixtureError(
                f"Output '{final}' is being written by process {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}; wait for it to finish (or delete '{lock}' if that "
                "process is gone).") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    remove_stale_temporaries(final)
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
