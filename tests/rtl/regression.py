"""The pytest half of every RTL testbench: build a target and run its cocotb tests.

A missing simulator is a visible skip on a developer machine and a failure in CI
(``CI=true``). The seed is printed so that ``CDM_QTA_SEED`` reproduces a failure; ``TESTCASE``
selects cocotb tests and ``WAVES=1`` dumps waveforms. A cocotb test that skips surfaces as a
pytest skip (which CI turns into a failure unless it is on the allow-list in
``tests/conftest.py``); a simulator that crashes or exits non-zero fails, naming its log.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from cdm_qta.tb.targets import SimTarget
from cdm_qta.tb.toolchain import (
    AXI_WARNINGS,
    SimRun,
    run_tests,
    seed_from_env,
    simulator_available,
)

__all__ = ["judge", "require_simulator", "run_regression"]


def _tail(path: Path | None, lines: int = 80) -> str:
    if path is None or not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def require_simulator(sim: str) -> None:
    """Skip the calling test, with the reason, if ``sim`` is missing; fail instead in CI."""
    ok, why = simulator_available(sim)
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{sim} is required in CI: {why}")
        pytest.skip(why)


def run_regression(
    target: SimTarget,
    test_module: str,
    *,
    testcase: str | Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
    label: str = "regression",
) -> None:
    """Build ``target`` and run the cocotb tests of ``test_module`` in it: ``testcase`` (or
    ``$TESTCASE``) if given, else all of them but ``exclude``."""
    require_simulator(target.sim)
    waves = os.environ.get("WAVES") == "1"
    target.build(waves=waves, label=label)
    seed = seed_from_env()
    print(f"{target}: seed {seed} (rerun with CDM_QTA_SEED={seed})")
    run = run_tests(
        sim=target.sim,
        toplevel=target.module,
        test_module=test_module,
        build_dir=target.build_dir,
        extra_env={**target.env(), "PYTHONWARNINGS": AXI_WARNINGS, **(extra_env or {})},
        testcase=testcase or os.environ.get("TESTCASE") or None,
        exclude=exclude,
        seed=seed,
        waves=waves,
        log_file=target.log_file(label),
    )
    print(f"{target}: {run.describe()} in {run.seconds:.1f} s")
    judge(run, f"{target} (seed {seed})")


def judge(run: SimRun, what: str) -> None:
    """Turn a simulator run into the pytest outcome: a failure that shows the end of the log
    for anything but a clean pass, a visible skip (with the reasons) for skipped cocotb tests."""
    if not run.ok:
        pytest.fail(f"{what}: {run.describe()}\n--- end of the log ---\n" + _tail(run.log_file))
    if run.skipped:
        pytest.skip(f"cocotb skipped {'; '.join(run.skipped)} (see {run.log_file})")
