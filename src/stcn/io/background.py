"""The one background-thread mechanism of stcn's I/O: a worker that runs submitted calls in order.

Writers submit one call per frame (encode, save); readers submit one call that produces frames into a
bounded queue (:func:`prefetch`). Either way a failure in the thread is re-raised in the caller's.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator

__all__ = ["BackgroundWorker", "prefetch"]


class BackgroundWorker:
    """Runs submitted calls in order on one daemon thread, fed through a bounded queue.

    The first exception stops further calls; it is re-raised by the next :meth:`submit` or by
    :meth:`close`.
    """

    def __init__(self, name: str, maxsize: int) -> None:
        self._queue: queue.Queue = queue.Queue(max(1, maxsize))
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None and not self._aborted:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the submitting thread
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable, *args) -> None:
        self._raise_error()
        while True:
            try:
                self._queue.put((fn, args), timeout=0.1)
                return
            except queue.Full:
                self._raise_error()
                if not self._thread.is_alive():
                    raise RuntimeError("the writer thread stopped") from None

    def flush(self) -> None:
        """Wait until every call submitted so far has run (re-raising a failure), keeping the thread."""
        done = threading.Event()
        self.submit(done.set)
        while not done.wait(0.05):  # a failed call skips the rest, done.set included: check for it
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError("the writer thread stopped")
        self._raise_error()

    @property
    def aborted(self) -> bool:
        return self._aborted

    def close(self) -> None:
        """Wait for every submitted call, then re-raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_error()

    def abort(self, timeout: float = 30) -> None:
        """Skip what is still queued and stop the thread (for a run that failed)."""
        self._aborted = True
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=5)
            self._thread.join(timeout=timeout)


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def prefetch(make: Callable[[], Iterator], maxsize: int, name: str) -> Iterator:
    """Run the iterator ``make()`` on a :class:`BackgroundWorker`, handing its items over through a
    bounded queue of ``maxsize``. Exceptions in the thread are re-raised here; closing this generator
    stops the thread."""
    items: queue.Queue = queue.Queue(maxsize)
    worker: BackgroundWorker | None = None

    def put(item) -> bool:
        while worker is None or not worker.aborted:
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = None
        try:
            source = make()
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed over to the consumer
            put(_Failure(exc))
        finally:
            if source is not None and hasattr(source, "close"):
                source.close()

    worker = BackgroundWorker(name, 1)
    worker.submit(produce)
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        worker.abort(timeout=10)
