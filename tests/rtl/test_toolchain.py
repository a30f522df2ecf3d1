"""The harness fails loudly: a crash, a non-zero simulator exit after clean results, a missing
results file and a skipped cocotb test are each seen, never passed over.

A one-register design is built once per simulator; each cocotb test below misbehaves in one
way, and the pytest half checks what :func:`cdm_qta.tb.toolchain.run_tests` and the regression
helper make of it.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

import pytest
from regression import judge, require_simulator

from cdm_qta.tb.toolchain import SimRun, build, run_tests

try:
    import cocotb
    from cocotb.triggers import Timer
except ImportError:  # pragma: no cover
    cocotb = None

DUT = """
module toy(input clk, input rst, output reg [7:0] count);
  always @(posedge clk) count <= rst ? 8'd0 : count + 8'd1;
endmodule
"""

if cocotb is not None:

    @cocotb.test()
    async def passes(dut: object) -> None:
        await Timer(10, unit="ns")

    @cocotb.test()
    async def fails(dut: object) -> None:
        await Timer(10, unit="ns")
        raise AssertionError("wrong on purpose")

    @cocotb.test()
    async def crashes(dut: object) -> None:
        await Timer(10, unit="ns")
        os._exit(3)  # the simulator dies before any results are written

    @cocotb.test()
    async def exits_badly_after_passing(dut: object) -> None:
        await Timer(10, unit="ns")
        atexit.register(os._exit, 4)  # results are written clean, then the exit status is 4

    @cocotb.test()
    async def skips(dut: object) -> None:
        pytest.skip("this cocotb test bows out")


@pytest.fixture(scope="module", params=["verilator", "icarus"])
def toy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    sim = request.param
    require_simulator(sim)
    root = tmp_path_factory.mktemp(f"toy-{sim}")
    source = root / "toy.v"
    source.write_text(DUT)
    build(sim=sim, sources=[source], toplevel="toy", build_dir=root / "build")
    return sim, root


def _run(toy: tuple, testcase: str) -> SimRun:
    sim, root = toy
    return run_tests(
        sim=sim,
        toplevel="toy",
        test_module=Path(__file__).stem,
        build_dir=root / "build",
        testcase=testcase,
        log_file=root / f"{testcase}.log",
    )


@pytest.mark.sim
def test_a_clean_pass_is_ok(toy: tuple) -> None:
    run = _run(toy, "passes")
    assert run.ok and (run.tests, run.failed, run.exit_code) == (1, 0, 0)
    judge(run, "passes")  # no exception


@pytest.mark.sim
def test_a_failing_test_fails(toy: tuple) -> None:
    run = _run(toy, "fails")
    assert not run.ok and run.failed == 1
    with pytest.raises(pytest.fail.Exception, match="1 failed"):
        judge(run, "fails")


@pytest.mark.sim
def test_a_crash_fails_and_names_the_log(toy: tuple) -> None:
    run = _run(toy, "crashes")
    assert not run.ok and run.tests == 0 and run.exit_code != 0
    with pytest.raises(pytest.fail.Exception, match=r"crashes\.log"):
        judge(run, "crashes")


@pytest.mark.sim
def test_a_bad_exit_after_clean_results_fails(toy: tuple) -> None:
    run = _run(toy, "exits_badly_after_passing")
    assert run.tests == 1 and run.failed == 0, "the results file itself is clean"
    assert run.exit_code == 4 and not run.ok
    with pytest.raises(pytest.fail.Exception, match="exit status 4"):
        judge(run, "exits_badly_after_passing")


@pytest.mark.sim
def test_a_skipped_cocotb_test_surfaces_as_a_pytest_skip(toy: tuple) -> None:
    run = _run(toy, "skips")
    assert run.ok and len(run.skipped) == 1 and run.skipped[0].startswith("skips")
    with pytest.raises(pytest.skip.Exception, match="cocotb skipped skips"):
        judge(run, "skips")
