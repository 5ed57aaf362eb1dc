"""What a person sees while long work runs: one live bar, log lines above it, nothing else.

* :func:`progress_bar` -- one bar in the units a person cares about (documents, proxy runs)
  with rate and ETA.  On a terminal it is a tqdm bar that redraws every second even when
  nothing finished (the elapsed time moves); without one (a log file, a pipe) it prints a
  plain line at every tenth of the work and at least every :data:`LOG_SECONDS`, so a
  queued or backgrounded run shows that it is alive, and a last line with the total.
* Work done by other processes (datatrove tasks) is counted with :class:`TaskCounter`:
  each task rewrites a small JSON file (``WORK/progress/<stage>/<rank>.json``, atomically)
  at most every :data:`COUNTER_SECONDS`; :func:`stage_progress` polls and sums them.
* :class:`BarSafeHandler` is the CLI's logging handler: a log line is written above the
  live bar (``tqdm.write``), never into it; :func:`say` does the same for printed lines.
* :func:`quiet_third_party` silences other libraries' bars and INFO banners (transformers,
  datasets, the Hub, datatrove's tqdm bars, Ray) at their source, in this process and the
  worker processes it starts; ``hf-mixture -v`` leaves them on.

>>> bar = progress_bar(2, "demo", "step", enabled=False)
>>> bar.update(); bar.close()
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

COUNTER_SECONDS = 1.0  # a task rewrites its counter file at most this often
POLL_SECONDS = 1.0  # the main process sums the counter files (and redraws its bar) this often
LOG_SECONDS = 30.0  # without a terminal: a progress line at least this often
LOG_TENTHS = 10  # ... and one at each tenth of the total
# Overrides LOG_SECONDS (a float, seconds): for a log that should tick faster or slower.
LOG_SECONDS_ENV = "HF_MIXTURE_PROGRESS_SECONDS"
# "1": other libraries' bars and INFO lines are shown (`hf-mixture -v` sets it; workers
# inherit it).
VERBOSE_ENV = "HF_MIXTURE_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


# ----------------------------------------------------------------------------- formatting
def _count(n: float) -> str:
    return f"{int(n):,}"


def _si(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}"
    return f"{int(n)}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m}:{s:02d}"
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _plural(unit: str | None, n: float) -> str:
    if unit is None:
        return ""
    return unit if n == 1 or unit.endswith("s") else unit + "s"


# ----------------------------------------------------------------------------- the bar
class Progress:
    """One bar: ``update(n, **extra)`` from this process, or counts summed from the
    counter files of ``watch`` (a folder of :class:`TaskCounter` files).

    ``extra`` counts (e.g. ``tokens=``) are shown after the main count.  On a terminal a
    tqdm bar; otherwise plain lines (see the module docstring).
    """

    def __init__(self, total: int | None, desc: str, unit: str, *, terminal: bool | None = None,
                 watch: str | os.PathLike | None = None):
        self.total = int(total) if total else None
        self.desc, self.unit = desc, unit
        self.n, self.extra, self.note = 0, {}, ""
        self._started = time.monotonic()
        self._lock = threading.RLock()
        self._closed = False
        self._terminal = sys.stderr.isatty() if terminal is None else terminal
        self._watch = Path(watch) if watch is not None else None
        # file name -> ((mtime, size) read, or None once the task closed it; count; extra)
        self._cache: dict[str, tuple[tuple[int, int] | None, int, dict[str, float]]] = {}
        self._last_line = self._started
        self._last_tenth = 0
        self._tqdm = None
        if self._watch is not None:
            self._poll()
        self._initial = self.n
        if self._terminal:
            from tqdm.auto import tqdm

            # disable=False: explicit, so a tqdm default turned off for other libraries'
            # bars (quiet_third_party) never turns ours off
            # unit None: nothing is counted, the bar shows the time that passes
            fmt = {"bar_format": "{desc}: {elapsed}{postfix}"} if unit is None else {}
            self._tqdm = tqdm(total=self.total, desc=desc, unit=f" {_plural(unit or '', 2)}",
                              initial=self.n, disable=False, dynamic_ncols=True,
                              mininterval=0.5, file=sys.stderr, **fmt)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="hf_mixture-progress",
                                        daemon=True)
        self._thread.start()

    # -- updates
    def update(self, n: int = 1, **extra: float) -> None:
        """Add to the count; the bar shows it at its next redraw (at most a second away), so
        an update per document costs next to nothing."""
        self.n += n
        for k, v in extra.items():
            self.extra[k] = self.extra.get(k, 0) + v

    def set_postfix_str(self, text: str) -> None:
        with self._lock:
            self.note = text
            if self._tqdm is not None:
                self._tqdm.set_postfix_str(self._postfix(), refresh=False)

    def _postfix(self) -> str:
        parts = [f"{_si(v)} {k}" for k, v in self.extra.items()]
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def _poll(self) -> None:
        """Sum the counter files; a file unchanged since the last poll is not read again."""
        try:
            entries = list(os.scandir(self._watch))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            cached = self._cache.get(entry.name)
            if cached is not None and cached[0] is None:
                continue  # that task finished: its count no longer changes
            try:
                st = entry.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if cached is not None and cached[0] == stamp:
                    continue
                data = json.loads(Path(entry.path).read_text(encoding="utf-8"))
                self._cache[entry.name] = (None if data.get("done") else stamp, int(data["n"]),
                                           dict(data.get("extra", {})))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # replaced or removed while read: the next poll reads it
        self.n = sum(c[1] for c in self._cache.values())
        extra: dict[str, float] = {}
        for c in self._cache.values():
            for k, v in c[2].items():
                extra[k] = extra.get(k, 0) + v
        self.extra = extra

    def _tick(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            with self._lock:
                if self._closed:
                    return
                if self._watch is not None:
                    self._poll()
                self._show(tick=True)

    # -- display
    def _show(self, tick: bool = False) -> None:
        if self._tqdm is not None:
            bar = self._tqdm
            if self.n != bar.n:
                bar.update(self.n - bar.n)
            bar.set_postfix_str(self._postfix(), refresh=False)
            if tick:
                bar.refresh()
            return
        now = time.monotonic()
        tenth = LOG_TENTHS * self.n // self.total if self.total else 0
        if self.total and self.n >= self.total:
            return  # the last line (close) follows
        if tenth > self._last_tenth or now - self._last_line >= _log_seconds():
            self._last_tenth = max(tenth, self._last_tenth)
            self._last_line = now
            self._line()

    def _rate(self) -> float | None:
        elapsed = time.monotonic() - self._started
        done = self.n - self._initial
        return done / elapsed if elapsed > 0 and done > 0 else None

    def _line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self._started
        rate = self._rate()
        if final:
            text = f"{self.desc}: " + (f"{_count(self.n)} {_plural(self.unit, self.n)} in "
                                       if self.n or self.total else "") + _duration(elapsed)
            if rate is not None:
                text += f" ({rate:,.1f} {_plural(self.unit, 2)}/s)"
        else:
            if self.total:
                text = (f"{self.desc}: {_count(self.n)}/{_count(self.total)} "
                        f"{_plural(self.unit, self.total)} ({100 * self.n // self.total}%)")
            elif self.n:
                text = f"{self.desc}: {_count(self.n)} {_plural(self.unit, self.n)}"
            else:
                text = f"{self.desc}: running"
            text += f", {_duration(elapsed)}"
            if rate is not None:
                text += f", {rate:,.1f} {_plural(self.unit, 2)}/s"
                if self.total and self.n < self.total:
                    text += f", ETA {_duration((self.total - self.n) / rate)}"
        postfix = self._postfix()
        print(text + (f" [{postfix}]" if postfix else ""), file=sys.stderr, flush=True)

    def close(self, complete: bool = False) -> None:
        """Stop the bar; ``complete``: the work finished, so a total that was an upper bound
        (input rows, some of them empty or duplicates) becomes the count reached."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self._watch is not None:
                self._poll()
            if complete and self.total and self.n < self.total:
                self.total = self.n
                if self._tqdm is not None:
                    self._tqdm.total = self.n
            if self._tqdm is not None:
                self._show()
                self._tqdm.close()
            else:
                self._line(final=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(complete=exc_type is None)


class _NoProgress:
    """``progress=False``: the same interface, nothing shown."""

    n = 0

    def update(self, n: int = 1, **extra: float) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self, complete: bool = False) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _log_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get(LOG_SECONDS_ENV, LOG_SECONDS)))
    except ValueError:
        return LOG_SECONDS


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True, *,
                 watch: str | os.PathLike | None = None):
    """A :class:`Progress` (a tqdm bar on a terminal, plain lines otherwise); nothing when
    ``enabled`` is false.  ``watch``: a folder of task counter files to sum."""
    if not enabled:
        return _NoProgress()
    return Progress(total, desc, unit, watch=watch)


# ----------------------------------------------------------------------------- task counters
def counter_dir(work_dir: str | os.PathLike, stage: str) -> Path:
    """Where the tasks of ``stage`` keep their counter files."""
    return Path(work_dir) / "progress" / stage


class TaskCounter:
    """A task's count, shared with the main process through one small file.

    ``update`` adds to the count and rewrites the file (temporary file + rename, so a
    reader never sees half of it) when :data:`COUNTER_SECONDS` have passed; ``close``
    writes the final count.  The file starts at 0, so a rerun of a task that failed
    half-way counts from the beginning again.
    """

    def __init__(self, folder: str | os.PathLike, rank: int):
        self.path = Path(folder) / f"{rank:05d}.json"
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.n = 0
        self.extra: dict[str, float] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write()

    def update(self, n: int = 1, **extra: float) -> None:
        self.n += n
        for k, v in extra.items():
            self.extra[k] = self.extra.get(k, 0) + v
        if time.monotonic() - self._written >= COUNTER_SECONDS:
            self._write()

    def set_postfix_str(self, text: str) -> None:
        """A bar's method; a task's note is not shown (many tasks share one bar)."""

    def _write(self, done: bool = False) -> None:
        record = {"n": self.n, "extra": self.extra, **({"done": True} if done else {})}
        self._tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(self._tmp, self.path)
        self._written = time.monotonic()

    def close(self) -> None:
        """The final count; the main process stops reading a closed counter."""
        self._write(done=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def task_counter(work_dir: str | os.PathLike, stage: str, rank: int) -> TaskCounter:
    """The counter of task ``rank`` of ``stage`` (see :func:`stage_progress`)."""
    return TaskCounter(counter_dir(work_dir, stage), rank)


def stage_progress(desc: str, unit: str, total: int | None, work_dir: str | os.PathLike,
                   stage: str, enabled: bool = True):
    """The bar of one executor stage, counting what its tasks' :class:`TaskCounter` s say.

    Counter files of tasks that did not complete (a run that was interrupted) are removed
    first: such a task starts again from 0; a completed task's count stays (it is skipped,
    its work is done).
    """
    folder = counter_dir(work_dir, stage)
    completions = Path(work_dir) / "logs" / stage / "completions"
    if folder.is_dir():
        for path in folder.glob("*.json"):
            if not (completions / path.stem).exists():
                path.unlink(missing_ok=True)
    return progress_bar(total, desc, unit, enabled, watch=folder)


# ----------------------------------------------------------------------------- printing
def say(text: Any = "") -> None:
    """Print ``text`` on stdout above the live bar (if any), not into it."""
    from tqdm import tqdm

    tqdm.write(str(text), file=sys.stdout)


class BarSafeHandler(logging.StreamHandler):
    """A logging handler that writes each record above the live bar (``tqdm.write``)."""

    def __init__(self):
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)  # the stderr of now (tests swap it)
        except Exception:  # noqa: BLE001 - logging's contract: never raise from emit
            self.handleError(record)


# ----------------------------------------------------------------------------- third parties
# Read at import by the library named: set before it is imported (worker processes inherit
# them); for an already imported library quiet_third_party calls its API instead.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub, and transformers' bars with it
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets
    "TRANSFORMERS_VERBOSITY": "error",  # transformers' load reports, per worker task
    "TQDM_DISABLE": "1",  # tqdm's default, for libraries with no switch of their own (datatrove)
}


def quiet_third_party() -> None:
    """Other libraries' bars and INFO banners off (unless :data:`VERBOSE_ENV`): environment
    variables for the processes started from here, the libraries' own switches here.

    Our bars pass ``disable=False`` to tqdm, so tqdm's default turned off (the effect of
    ``TQDM_DISABLE=1``, which tqdm reads once, at import) silences only the others'.
    Idempotent; cheap enough to call at the start of every worker task.
    """
    if verbose():
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    if "transformers" in sys.modules:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    if "tqdm" in sys.modules:
        _tqdm_default_off()


def _tqdm_default_off() -> None:
    """What ``TQDM_DISABLE=1`` does at tqdm's import, for a tqdm imported before it was set:
    ``disable=True`` becomes the default of ``tqdm.__init__`` (an explicit ``disable=``
    still wins)."""
    import functools

    from tqdm import std

    if getattr(std, "_hf_mixture_default_off", False):
        return
    std.tqdm.__init__ = functools.partialmethod(std.tqdm.__init__, disable=True)
    std._hf_mixture_default_off = True


def quiet_deepspeed_detection() -> None:
    """``DS_ACCELERATOR=cpu`` for the processes started from here when DeepSpeed would pick
    the CPU anyway (no CUDA, MPS, XPU, NPU, SDAA or HPU), so that importing it (accelerate
    does, in every proxy run) does not print "Setting accelerator to CPU ..." into the bar.
    Call where torch is imported already (it is imported here)."""
    import importlib.util

    if verbose() or "DS_ACCELERATOR" in os.environ or importlib.util.find_spec("deepspeed") is None:
        return
    import torch

    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available() or (mps is not None and mps.is_available()):
        return
    if any(importlib.util.find_spec(m) for m in ("intel_extension_for_pytorch", "torch_npu",
                                                 "torch_sdaa", "habana_frameworks")):
        return
    os.environ["DS_ACCELERATOR"] = "cpu"


def ray_init_options() -> dict[str, Any]:
    """``ray.init`` keywords: without :data:`VERBOSE_ENV`, no banner ("Started a local Ray
    instance ..."), no dashboard, and the workers' own console lines stay in Ray's logs."""
    if verbose():
        return {}
    return {"logging_level": logging.WARNING, "log_to_driver": False, "include_dashboard": False}

