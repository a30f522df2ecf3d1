"""Simulator sessions and the RTL back end: one process answers many jobs; failures are loud.

Every GEMM is compared element for element with :func:`cdm_qta.golden.gemm`, every error bit
with the golden back end's.
"""

from __future__ import annotations

import numpy as np
import pytest
from regression import require_simulator

from cdm_qta import golden
from cdm_qta.hw.config import AcceleratorConfig, ArrayConfig
from cdm_qta.hw.isa import Fence, Load, Store
from cdm_qta.hw.regs import COUNTERS
from cdm_qta.sw.golden_backend import GoldenBackend
from cdm_qta.sw.rtl_backend import RtlBackend
from cdm_qta.sw.runtime import run_gemm
from cdm_qta.tb.session import JobFailed, SimSession, SimulationFailed, run_job
from cdm_qta.tb.sim_top import SimTopConfig
from cdm_qta.tb.targets import SimTarget, Top

CFG = AcceleratorConfig.small(4, dram_size=1 << 16)


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_rtl_backend_runs_many_programs_in_one_simulator(sim: str) -> None:
    require_simulator(sim)
    rng = np.random.default_rng(7)
    with RtlBackend(sim, CFG) as rtl:
        first = rtl.session.call("ping")
        shapes = [(9, 13, 6, "ws", False, True), (5, 17, 4, "os", True, False)]
        for m, k, n, df, ta, tb in [*shapes, (4, 4, 4, "auto", True, True)]:
            a = golden.rand_int(rng, (k, m) if ta else (m, k))
            b = golden.rand_int(rng, (n, k) if tb else (k, n))
            c, stats = run_gemm(rtl, CFG, a, b, df, ta, tb)
            np.testing.assert_array_equal(c, golden.gemm(a.T if ta else a, b.T if tb else b))
            assert stats.ok and stats.timing == "hardware" and set(stats.counters) == set(COUNTERS)
            assert stats.macs == m * k * n
        # A bad program: the same error bits as the golden back end, and the next run is fine.
        bad = [Load(rows=1, row_bytes=1, dram_addr=1), Fence()]
        got = rtl.run(bad)
        want = GoldenBackend(CFG, predict_cycles=False).run(bad)
        assert got.errors == {k: int(v > 0) for k, v in want.errors.items()} and not got.ok
        assert rtl.run([Fence()]).ok
        last = rtl.session.call("ping")
    assert first["pid"] == last["pid"], "every program ran in the same simulator process"
    assert last["sim_time_ns"] > first["sim_time_ns"]


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_a_failing_job_is_an_error_that_names_the_log(sim: str) -> None:
    require_simulator(sim)
    target = SimTarget(sim, Top.ACCELERATOR, SimTopConfig(accel=CFG, dram_bytes=1 << 16))
    session = SimSession(target, label="failing_job")
    with session:
        with pytest.raises(JobFailed, match=r"unknown job 'no_such_job'.*\.log"):
            session.call("no_such_job")
        # The job raised inside the simulator, which ends the session: the next call says so.
        with pytest.raises(SimulationFailed, match="already failed"):
            session.call("ping")
    assert session.log_file.exists()


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_hangs_end_in_a_deadlock_error_or_the_cycle_budget(sim: str) -> None:
    """A STORE waiting for a token nobody pushes: the accelerator's deadlock detector ends it
    (the golden back end reports the same); a run past its cycle budget is a JobFailed."""
    require_simulator(sim)
    hung = [Store(rows=1, row_bytes=4, pop_prev=True), Fence()]
    with RtlBackend(sim, CFG) as rtl:
        stats = rtl.run(hung)
        want = GoldenBackend(CFG, predict_cycles=False).run(hung)
        assert stats.errors["deadlock"] == want.errors["deadlock"] == 1
        assert stats.cycles is not None and stats.cycles < 100
        assert rtl.run([Fence()]).ok
        long = [Load(rows=200, row_bytes=4, stride=4), Fence()]
        with pytest.raises(JobFailed, match="still busy after 30 cycles"):
            rtl.session.call("run", words=[i.encode() for i in long], max_cycles=30)


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_run_job_on_the_array(sim: str) -> None:
    require_simulator(sim)
    result = run_job(SimTarget(sim, Top.ARRAY, ArrayConfig(n=3)), "demo_gemm", seed=2, m=7, k=9)
    assert [r["bit_exact"] for r in result["gemms"]] == [True, True]
    assert all(r["cycles"] == r["model_cycles"] for r in result["gemms"])
    assert result["build_s"] >= 0 and result["generate_s"] >= 0
