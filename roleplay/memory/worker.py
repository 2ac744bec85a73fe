"""The background worker: memory extraction and summaries run off the reply's critical path.

A turn hands its follow-up work (rule + LLM fact extraction, the rolling summary) to one
daemon thread through a queue, so the reply returns after a queue ``put`` (microseconds)
instead of after an extra model call. Trade-offs: one thread per process keeps jobs in
order (a later fact about the same slot lands after an earlier one) and never runs two
extra model calls at once on a small CPU; a job that fails is logged and recorded in
`Worker.errors`, never raised into a later turn. Jobs queued when the process dies are
lost — they are derived data (memories, summaries) that the next turn can re-derive,
never a saved message.

Model calls made by jobs go to the backend at `Priority.BACKGROUND`: the backend owns
concurrency and serves a user's reply first (see roleplay/backends/scheduler.py); no
lock is taken here.

`flush()` waits for the queue to drain (tests, the CLI before it exits).
"""
from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

class Worker:
    """One daemon thread draining a FIFO queue of ``(fn, args, kwargs)`` jobs."""

    def __init__(self, *, name: str = "roleplay-memory") -> None:
        self.name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: ``(job name, error text)`` of failed jobs, newest last (bounded).
        self.errors: list[tuple[str, str]] = []
        #: Seconds each job took to run, newest last (bounded; read by bench/memory.py).
        self.job_seconds: list[float] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)``; returns at once."""
        self._ensure_started()
        self._queue.put((fn, args, kwargs))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued job has run; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            fn, args, kwargs = self._queue.get()
            t0 = time.perf_counter()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # a failed job must not kill the worker
                log.warning("background job %s failed: %s", getattr(fn, "__name__", fn), exc)
                self.errors = (self.errors + [(getattr(fn, "__name__", str(fn)), f"{type(exc).__name__}: {exc}")])[-100:]
            finally:
                self.job_seconds = (self.job_seconds + [time.perf_counter() - t0])[-1000:]
                self._queue.task_done()


_WORKER: Worker | None = None
_WORKER_LOCK = threading.Lock()


#: Seconds a normal interpreter exit waits for queued jobs (facts told just before exit).
EXIT_WAIT_SECONDS = 60.0


def get_worker() -> Worker:
    """The process-wide worker (started on first submit; drained, bounded, at exit)."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = Worker()
            # subtle: a daemon thread killed inside a torch call at interpreter exit aborts
            # the process ("terminate called…"); atexit runs before daemons are killed.
            atexit.register(_WORKER.flush, EXIT_WAIT_SECONDS)
        return _WORKER
