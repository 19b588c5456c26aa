"""A forward-only file whose writes happen on a worker thread: stages of a stream overlap.

Sealing is a chain of stages over the same bytes: read and check (SHA-256), the inner zip
(CRC-32, maybe deflate), encryption and its MAC, then the archive's own SHA-256 and the disk
write. In one thread they add up; each stage here hashes or encrypts in C with the GIL
released, so putting a ``ThreadedWriter`` between two of them lets them run on two cores at
once. The queue between is short (``depth`` blocks), so memory stays bounded and a slow
consumer holds the producer back.
"""

from __future__ import annotations

import io
import queue
import threading
from typing import Any, Protocol

DEFAULT_DEPTH = 1


class Writable(Protocol):
    def write(self, data: Any, /) -> Any: ...

    def flush(self) -> Any: ...


_END = object()


class ThreadedWriter(io.RawIOBase):
    """Hands each ``write`` to a worker thread writing into ``target``, in order.

    A failure in the worker is raised by the next ``write``, ``flush`` or ``close``; the worker
    keeps taking blocks meanwhile (dropping them), so the producer never blocks on a dead
    consumer. ``tell`` counts the bytes accepted; there is no seeking, so zip writers treat it
    as a stream (data descriptors). ``close`` waits for every block to be written.
    """

    def __init__(self, target: Writable, depth: int = DEFAULT_DEPTH, name: str = "writer") -> None:
        super().__init__()
        self._target = target
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._position = 0
        self._closing = False
        self._thread = threading.Thread(target=self._drain, name=name, daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("forward-only stream")

    def write(self, data: Any) -> int:  # type: ignore[override]
        if self._closing:
            raise ValueError("write to a closed ThreadedWriter")
        self._raise_failure()
        block = data if isinstance(data, bytes) else bytes(data)  # the caller may reuse it
        if block:
            self._queue.put(block)
            self._position += len(block)
        return len(block)

    def flush(self) -> None:
        """Wait until every block accepted so far is written, then flush the target."""
        if self._closing:
            return
        self._queue.join()
        self._raise_failure()
        self._target.flush()

    def close(self) -> None:
        """Write what is queued, end the worker, then raise its failure if it had one."""
        if self._closing:
            return
        self._closing = True
        self._queue.put(_END)
        self._thread.join()
        super().close()
        self._raise_failure()
        self._target.flush()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _drain(self) -> None:
        while True:
            block = self._queue.get()
            try:
                if block is _END:
                    return
                if self._error is None:
                    self._target.write(block)
            except BaseException as error:  # handed to the producer; nothing is lost silently
                self._error = error
            finally:
                self._queue.task_done()
