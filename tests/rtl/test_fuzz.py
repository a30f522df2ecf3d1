"""Random legal and illegal programs on the RTL and on the golden back end: they must agree.

Each stream (:mod:`fuzz_streams`) runs in one long simulator session after a reset: DRAM
loaded, bus faults set, the program fetched and run. The RTL and
:class:`~cdm_qta.sw.golden_backend.GoldenBackend` must then report the same error bits, the same
exact counters (MACs, instructions retired, DMA bytes) and the same bytes across the whole DRAM
data area. A stream that neither finishes nor deadlocks within its cycle budget is a hang.

CI runs a fixed subset (fixed seed); ``CDM_QTA_FUZZ_STREAMS=1000`` (``nox -s fuzz``) runs the
nightly count, ``CDM_QTA_RANDOM=1`` a fresh seed (printed).
"""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
from fuzz_streams import random_stream
from regression import require_simulator

from cdm_qta.hw.axi import AxiResp
from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.sw.dram import DramImage
from cdm_qta.sw.golden_backend import GoldenBackend
from cdm_qta.sw.rtl_backend import cycle_budget
from cdm_qta.tb.session import JobFailed, SimSession
from cdm_qta.tb.sim_top import SimTopConfig
from cdm_qta.tb.targets import SimTarget, Top
from cdm_qta.tb.toolchain import seed_from_env

#: Streams per run in CI, per simulator; the nightly run sets CDM_QTA_FUZZ_STREAMS.
CI_STREAMS = {"verilator": 150, "icarus": 40}
EXACT = ("macs", "insns_retired", "dma_read_bytes", "dma_write_bytes")
#: N = 5: lanes that are no power of two, rows of 5 and 20 bytes on an 8-byte bus.
CFG = AcceleratorConfig.small(5, rows=64, dram_size=1 << 16, insn_queue_depth=8)


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_random_streams_agree_with_golden(sim: str) -> None:
    require_simulator(sim)
    count = int(os.environ.get("CDM_QTA_FUZZ_STREAMS", 0)) or CI_STREAMS[sim]
    seed = seed_from_env()
    print(f"fuzz {sim}: {count} streams, seed {seed} (rerun with CDM_QTA_SEED={seed})")
    rng = np.random.default_rng(seed)
    top = SimTopConfig(accel=CFG, dram_bytes=1 << 16)
    data = top.program_base
    gold = GoldenBackend(CFG, predict_cycles=False, sram_zeroed=True)
    seen: collections.Counter[str] = collections.Counter()
    disagreements: list[str] = []
    target = SimTarget(sim, Top.ACCELERATOR, top)
    with SimSession(target, label="fuzz", seed=seed, options={"seed": seed}) as session:
        for i in range(count):
            stream = random_stream(CFG, rng, data_bytes=data)
            seen.update(stream.breaks or ["legal"])
            resp = AxiResp.SLVERR if rng.random() < 0.5 else AxiResp.DECERR
            session.call("reset")  # token counters and errors clean; SRAM and DRAM stay
            session.call("write_dram", addr=0, data=stream.image)
            session.call("set_faults", ranges=stream.faults, resp=resp)
            gold.load(DramImage(0, np.frombuffer(stream.image, dtype=np.uint8).copy()))
            gold.set_faults(stream.faults)
            gold.tokens = dict.fromkeys(gold.tokens, 0)  # as the reset left the hardware's
            try:
                got = session.call(
                    "run", words=stream.words, max_cycles=cycle_budget(CFG, stream.words)
                )
            except JobFailed as exc:
                pytest.fail(f"stream {i} ({stream.breaks}) hung: {exc}")
            want = gold.run(stream.words)
            errors = set(got["errors"])
            problems = []
            if errors != {k for k, v in want.errors.items() if v}:
                problems.append(f"errors RTL {sorted(errors)} golden {want.error_log}")
            for name in EXACT:
                if got["counters"][name] != want.counters[name]:
                    problems.append(
                        f"{name} RTL {got['counters'][name]} golden {want.counters[name]}"
                    )
            rtl_bytes = np.frombuffer(session.call("read_dram", addr=0, nbytes=data), np.uint8)
            gold_bytes = np.frombuffer(gold.read(0, data), np.uint8)
            bad = np.flatnonzero(rtl_bytes != gold_bytes)
            if bad.size:
                problems.append(f"{bad.size} DRAM bytes differ, first at {int(bad[0]):#x}")
            seen.update(f"error:{e}" for e in errors)
            if problems:
                disagreements.append(f"stream {i} {stream.breaks}: " + "; ".join(problems))
    report = ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
    print(f"fuzz {sim}: {count} streams, 0 hangs, {len(disagreements)} disagreements; {report}")
    assert not disagreements, "\n".join(disagreements[:10])
    # The subset must reach the interesting cases, or it proves little.
    for kind in ("legal", "range", "bus_fault", "error:deadlock", "error:illegal_insn"):
        assert seen[kind] > 0, f"no stream exercised {kind}: {report}"


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_both_dram_models_agree(sim: str) -> None:
    """The same streams on the in-simulator DRAM and on cocotbext-axi's AxiRam (the protocol
    reference): every error bit and MAC/instruction/DMA counter the same, and every DRAM byte
    too, except where a bus fault hit: AxiRam fails single beats, the model whole bursts (both
    legal AXI; the golden fuzz test checks the model's bytes)."""
    require_simulator(sim)
    seed = seed_from_env()
    count = {"verilator": 40, "icarus": 15}[sim]
    rng = np.random.default_rng(seed)
    streams = [random_stream(CFG, rng, data_bytes=(1 << 16) * 3 // 4) for _ in range(count)]
    results: dict[str, list] = {}
    for dram in ("model", "cocotb"):
        top = SimTopConfig(accel=CFG, dram=dram, dram_bytes=1 << 16)
        target = SimTarget(sim, Top.ACCELERATOR, top)
        outcomes = []
        with SimSession(target, label="dram_check", options={"seed": seed}) as session:
            for stream in streams:
                session.call("write_dram", addr=0, data=stream.image)
                session.call("set_faults", ranges=stream.faults, resp=AxiResp.SLVERR)
                budget = cycle_budget(CFG, stream.words)
                got = session.call("run", words=stream.words, max_cycles=budget)
                data = session.call("read_dram", addr=0, nbytes=top.program_base)
                counters = {k: got["counters"][k] for k in EXACT}
                outcomes.append((sorted(got["errors"]), counters, data))
        results[dram] = outcomes
    for i, (a, b) in enumerate(zip(results["model"], results["cocotb"], strict=True)):
        assert a[0] == b[0], f"stream {i}: error bits {a[0]} (model) vs {b[0]} (cocotb)"
        assert a[1] == b[1], f"stream {i}: counters {a[1]} (model) vs {b[1]} (cocotb)"
        if not streams[i].faults:
            assert a[2] == b[2], f"stream {i}: DRAM bytes differ between the DRAM models"
    print(f"{sim}: {count} streams identical on both DRAM models")
