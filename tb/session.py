"""Run jobs inside a simulator from plain Python: the one job protocol of every simulator run.

A :class:`SimSession` generates and builds a :class:`~cdm_qta.tb.targets.SimTarget`, starts the
simulator with the cocotb coroutine :func:`cdm_qta.tb.serve.serve` inside it, and then sends it
jobs, one at a time, over a :class:`~cdm_qta.tb.channel.Channel`::

    with SimSession(SimTarget("verilator", Top.ACCELERATOR, cfg)) as session:
        session.call("write_dram", addr=0, data=image)
        result = session.call("run", words=words, max_cycles=100_000)

One build, one launch, many jobs: a training step's dozens of GEMMs pay for one simulator
start. :func:`run_job` is the one-job form. The jobs each top answers are listed in its
handler module (:data:`cdm_qta.tb.serve.HANDLERS`); a job that fails inside the simulator
raises :class:`JobFailed` here with the simulator's message and the log file, and a simulator
that dies or never answers raises :class:`SimulationFailed`: never a hang.
"""

from __future__ import annotations

import dataclasses
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .channel import CHANNEL_ENV, TOP_ENV, Channel, ChannelClosed, ChannelTimeout
from .targets import BuildReport, SimTarget
from .toolchain import AXI_WARNINGS, SimRun, run_tests

__all__ = ["JobFailed", "SimSession", "SimulationFailed", "run_job"]

#: Seconds the simulator may take to start and connect after its build.
START_TIMEOUT_S = 600.0


class SimulationFailed(RuntimeError):
    """The simulator did not start, crashed, or stopped answering (its log file says why)."""


class JobFailed(RuntimeError):
    """A job raised inside the simulator; the message is the simulator's, plus the log file."""


class SimSession:
    """A simulator process that answers jobs until :meth:`close`.

    Parameters
    ----------
    target : SimTarget
    label : str
        Names the log file (``<module>.<label>.log``).
    options : dict
        Passed to the top's handler when it opens (e.g. bus pauses for the accelerator).
    job_timeout_s : float
        Wall-clock bound of one job; the job's own cycle budget normally ends it first.
    seed : int, optional
        cocotb's random seed inside the simulator.
    """

    def __init__(
        self,
        target: SimTarget,
        *,
        label: str = "session",
        options: dict[str, Any] | None = None,
        job_timeout_s: float = 3600.0,
        seed: int | None = None,
        waves: bool = False,
    ) -> None:
        self.target = target
        self.label = label
        self.options = dict(options or {})
        self.job_timeout_s = job_timeout_s
        self.seed = seed
        self.waves = waves
        self.build: BuildReport | None = None
        self.info: dict[str, Any] = {}
        self._channel: Channel | None = None
        self._thread: threading.Thread | None = None
        self._run: SimRun | None = None
        self._error: BaseException | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._reported = False  # a failure was already raised to the caller

    @property
    def log_file(self) -> Path:
        return self.target.log_file(self.label)

    # -- lifetime ----------------------------------------------------------------------------

    def open(self) -> Self:
        """Build (if needed), start the simulator and wait until its coroutine is ready."""
        if self._channel is not None:
            return self
        self.build = self.target.build(waves=self.waves, label=self.label)
        self._tmp = tempfile.TemporaryDirectory(prefix="qta-sim-")
        address = str(Path(self._tmp.name) / f"{secrets.token_hex(4)}.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(address)
        server.listen(1)
        env = {
            **self.target.env(),
            TOP_ENV: str(self.target.top),
            CHANNEL_ENV: address,
            "PYTHONWARNINGS": AXI_WARNINGS,
        }
        self._thread = threading.Thread(target=self._simulate, args=(env,), daemon=True)
        self._thread.start()
        try:
            self._channel = Channel(self._accept(server))
        finally:
            server.close()
        hello = self._receive(self.job_timeout_s)
        self._check(hello, "open")
        self._channel.send({"op": "open", "args": self.options})
        self.info = self._check(self._receive(self.job_timeout_s), "open")
        return self

    def _simulate(self, env: dict[str, str]) -> None:
        try:
            self._run = run_tests(
                sim=self.target.sim,
                toplevel=self.target.module,
                test_module="cdm_qta.tb.serve",
                build_dir=self.target.build_dir,
                extra_env=env,
                testcase="serve",
                seed=self.seed,
                waves=self.waves,
                log_file=self.log_file,
            )
        except BaseException as exc:  # reported by the host thread
            self._error = exc

    def _accept(self, server: socket.socket) -> socket.socket:
        deadline = time.monotonic() + START_TIMEOUT_S
        server.settimeout(1.0)
        while True:
            try:
                conn, _ = server.accept()
                return conn
            except TimeoutError:
                assert self._thread is not None
                if not self._thread.is_alive():
                    raise SimulationFailed(
                        f"{self.target} exited before connecting{self._outcome()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise SimulationFailed(
                        f"{self.target} did not connect within {START_TIMEOUT_S:.0f} s; "
                        f"log {self.log_file}"
                    ) from None

    def _outcome(self) -> str:
        if self._error is not None:
            return f": {type(self._error).__name__}: {self._error}; log {self.log_file}"
        if self._run is not None:
            return f" ({self._run.describe()})"
        return f"; log {self.log_file}"

    def close(self) -> SimRun | None:
        """Tell the simulator to finish, wait for it, and fail if it did not end cleanly."""
        channel, self._channel = self._channel, None
        if channel is not None:
            try:
                channel.send({"op": "close"})
            except ChannelClosed:
                pass
            channel.close()
        if self._thread is not None:
            self._thread.join(timeout=120)
            alive = self._thread.is_alive()
            self._thread = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None
            if alive:
                raise SimulationFailed(f"{self.target} did not exit; log {self.log_file}")
            if self._reported:
                return self._run  # the caller already has the error that ended the session
            if self._error is not None:
                raise SimulationFailed(f"{self.target} failed{self._outcome()}")
            if self._run is not None and channel is not None and not self._run.ok:
                raise SimulationFailed(f"{self.target} ended badly: {self._run.describe()}")
        return self._run

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:  # already failing: report the first error, not a follow-up one
            self.close()
        except SimulationFailed:
            pass

    # -- jobs --------------------------------------------------------------------------------

    def call(self, op: str, **args: Any) -> Any:
        """Run job ``op`` with ``args`` inside the simulator and return its result.

        A job that fails ends the session (the simulator's test fails and exits): later calls
        raise :class:`SimulationFailed`; open a new session to go on.
        """
        if self._reported:
            raise SimulationFailed(f"{self.target} already failed; log {self.log_file}")
        if self._channel is None:
            self.open()
        assert self._channel is not None
        try:
            self._channel.send({"op": op, "args": args})
        except ChannelClosed:
            self._reported = True
            raise SimulationFailed(f"{self.target} is gone{self._outcome()}") from None
        return self._check(self._receive(self.job_timeout_s), op)

    def _receive(self, timeout: float) -> dict[str, Any]:
        assert self._channel is not None
        try:
            return self._channel.recv(timeout)
        except ChannelTimeout:
            self._reported = True
            raise SimulationFailed(
                f"{self.target} gave no answer within {timeout:.0f} s; log {self.log_file}"
            ) from None
        except ChannelClosed:
            self._reported = True
            if self._thread is not None:
                self._thread.join(timeout=60)
            raise SimulationFailed(f"{self.target} stopped{self._outcome()}") from None

    def _check(self, reply: dict[str, Any], op: str) -> Any:
        if reply.get("ok"):
            return reply.get("result")
        self._reported = True
        raise JobFailed(
            f"{op} failed inside {self.target}: {reply.get('error', reply)}; log {self.log_file}"
        )


def run_job(target: SimTarget, op: str, *, label: str | None = None, **args: Any) -> dict[str, Any]:
    """One job in a fresh session; the result gains what the build cost."""
    with SimSession(target, label=label or op, seed=args.get("seed")) as session:
        result = dict(session.call(op, **args))
        assert session.build is not None
        result.update(dataclasses.asdict(session.build))
    return result
