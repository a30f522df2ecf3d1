"""One function call in a spawned process, waited for with a bound: the FP32 run beside INT8.

Why: ``qta train`` trains FP32 and INT8 on the same data, and each run is one torch thread
(two threads on these shared cores ran about 10x slower), so on two cores the FP32 run goes to
a second process while this one trains INT8 with its accelerator back end. Same code, same
seeds, one thread each: the FP32 result is bit-identical to running it in this process
(``tests/sw/test_train.py``).

Not a ``ProcessPoolExecutor``: a run that fails must not leave a worker training for minutes
after the command has given up, and a pool cannot stop a running call. Here :meth:`cancel`
terminates the process, and :meth:`result` returns, raises the call's own exception, or raises
:class:`RuntimeError` if the process died without an answer (killed, out of memory): it never
waits for an answer that cannot come.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Generic, TypeVar

__all__ = ["BackgroundCall"]

T = TypeVar("T")

#: Seconds between checks that the process is still alive while waiting for its answer.
_POLL_S = 1.0


def _child(send: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        answer: tuple[bool, Any] = (True, fn(*args))
    except BaseException as exc:  # the parent re-raises it; nothing is swallowed
        answer = (False, exc)
    # Plain pickle, in band: the connection's own pickler would hand torch tensors over as
    # shared-memory handles, which die with this process before the parent opens them.
    send.send_bytes(pickle.dumps(answer))
    send.close()


class BackgroundCall(Generic[T]):
    """``fn(*args)`` running in a spawned process from construction on.

    ``fn`` and ``args`` must pickle (a module-level function, plain data). Use as a context
    manager so that leaving early (an exception in the parent) terminates the process.
    """

    def __init__(self, fn: Callable[..., T], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(send, fn, args), daemon=True)
        self._proc.start()
        send.close()  # the child holds the only write end: EOF once it is gone

    def result(self) -> T:
        """The call's return value; its exception if it raised; :class:`RuntimeError` if the
        process ended without an answer."""
        while True:
            if self._recv.poll(_POLL_S):
                try:
                    ok, value = pickle.loads(self._recv.recv_bytes())
                except EOFError:
                    break
                self._proc.join()
                if ok:
                    return value  # type: ignore[no-any-return]
                raise value
            if not self._proc.is_alive() and not self._recv.poll(0):
                break
        self._proc.join()
        raise RuntimeError(
            f"the background process ended without a result (exit code {self._proc.exitcode})"
        )

    def cancel(self) -> None:
        """Stop the process if it still runs (nothing is waited for beyond its end)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._recv.close()

    def __enter__(self) -> BackgroundCall[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
