"""Running each request's turn on a thread of its own and handing its items to asyncio.

The engine's `stream` is a blocking iterator; the API is asyncio. `StreamBridge` runs each
turn on a worker thread (no lock and no single worker: the backend decides how concurrent
turns share the model) and delivers its items — text chunks, the final `Reply`, or an
exception — to an asyncio queue, then `END`. `Items` puts back the first item, which the
server awaits before answering so that a busy backend is a 429 and not a broken stream.

Trade-off: one thread per running request (up to ``max_threads``); the threads mostly
wait on the backend, so this costs memory, not CPU.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Iterable

#: The last item of every request's queue.
END = object()


class StreamBridge:
    """Runs each request's turn on a thread of its own and hands its items to asyncio.

    ``submit`` returns an asyncio queue that receives the engine's items (text chunks, the
    final Reply, or an exception) and then an end marker. Setting the returned event
    cancels the turn at its next chunk (the backend then frees the request's slot). No
    lock and no single worker: the backend decides how concurrent turns share the model.
    """

    def __init__(self, *, max_threads: int = 256) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="roleplay-turn")
        self._lock = threading.Lock()
        self._cancels: set[threading.Event] = set()

    def submit(self, make_stream: Callable[[], Iterable[Any]]) -> tuple[asyncio.Queue, threading.Event]:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, item)
            except RuntimeError:  # the event loop closed (server shutting down)
                cancel.set()

        def job() -> None:
            stream = None
            try:
                if not cancel.is_set():
                    stream = iter(make_stream())
                    for item in stream:
                        emit(item)
                        if cancel.is_set():
                            break
            except Exception as exc:  # reported to this request only
                emit(exc)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # stops the backend's generation early
                with self._lock:
                    self._cancels.discard(cancel)
                emit(END)

        with self._lock:
            self._cancels.add(cancel)
        self._pool.submit(job)
        return out, cancel

    def shutdown(self) -> None:
        """Cancel every running turn; do not wait for them."""
        with self._lock:
            for cancel in self._cancels:
                cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


class Items:
    """A request's queue with its first item (already taken to check for a 429) put back."""

    def __init__(self, first: Any, out: asyncio.Queue) -> None:
        self.first, self.out, self.taken = first, out, False

    async def get(self) -> Any:
        if not self.taken:
            self.taken = True
            return self.first
        return await self.out.get()


async def merged(queues: list[Items]) -> AsyncIterator[tuple[int, Any]]:
    """``(index, item)`` from several requests' queues as items arrive; ends after every `END`."""
    shared: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, items: Items) -> None:
        while True:
            item = await items.get()
            await shared.put((i, item))
            if item is END:
                return

    tasks = [asyncio.create_task(pump(i, q)) for i, q in enumerate(queues)]
    try:
        open_ = len(queues)
        while open_:
            i, item = await shared.get()
            if item is END:
                open_ -= 1
                continue
            yield i, item
    finally:
        for t in tasks:
            t.cancel()
