"""The cocotb side of :mod:`cdm_qta.tb.session`: one coroutine that answers jobs.

The simulator runs the cocotb test :func:`serve` of this module. It connects to the host,
opens the handler of its top (:data:`HANDLERS`: a class with ``async open(dut, **options)``
and one ``async`` method per job), then answers requests until the host says ``close``. A job
that raises is reported to the host with its message and ends the session (the test fails, so
the log shows the traceback too).
"""

from __future__ import annotations

import importlib
import os
import traceback
from typing import Any

import cocotb
from cocotb.utils import get_sim_time

from .channel import CHANNEL_ENV, TOP_ENV, Channel

__all__ = ["HANDLERS", "serve"]

#: Top -> module:class of its job handler.
HANDLERS: dict[str, str] = {
    "array": "cdm_qta.tb.array_jobs:ArrayJobs",
    "accelerator": "cdm_qta.tb.accel_jobs:AcceleratorJobs",
}


def _handler_class(top: str) -> Any:
    try:
        module, name = HANDLERS[top].split(":")
    except KeyError:
        raise RuntimeError(f"the {top} top has no job handler") from None
    return getattr(importlib.import_module(module), name)


@cocotb.test()
async def serve(dut: object) -> None:
    """Answer the host's jobs until it closes the session."""
    with Channel.connect(os.environ[CHANNEL_ENV]) as channel:
        channel.send({"ok": True, "result": {"top": os.environ[TOP_ENV]}})
        handler: Any = None
        while True:
            request = channel.recv()  # blocks the simulator: simulated time stands still
            op, args = request["op"], request.get("args", {})
            if op == "close":
                return
            try:
                if op == "ping":  # which process answers, and how far simulated time is
                    result = {"pid": os.getpid(), "sim_time_ns": get_sim_time("ns")}
                elif op == "open":
                    handler = _handler_class(os.environ[TOP_ENV])(dut)
                    result = await handler.open(**args)
                elif handler is None or op.startswith("_") or not hasattr(handler, op):
                    raise ValueError(f"unknown job {op!r}")
                else:
                    result = await getattr(handler, op)(**args)
            except Exception as exc:
                channel.send(
                    {
                        "ok": False,
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                    }
                )
                raise
            channel.send({"ok": True, "result": result})
