"""The fuzz stage: random legal and broken programs on a mutant, each checked against golden.

The same streams and the same checks as ``tests/rtl/test_fuzz.py`` (error bits, the exact
counters and every DRAM byte of the data area must equal the golden back end's), on the
mutation target's configuration instead of the fuzz test's own. Returns the disagreements
rather than asserting, so the stage can name the first stream that killed a mutant.
"""

from __future__ import annotations

import numpy as np
from fuzz_streams import random_stream

from cdm_qta.hw.axi import AxiResp
from cdm_qta.sw.dram import DramImage
from cdm_qta.sw.golden_backend import GoldenBackend
from cdm_qta.sw.rtl_backend import cycle_budget
from cdm_qta.tb.session import JobFailed, SimSession, SimulationFailed
from cdm_qta.tb.sim_top import SimTopConfig
from cdm_qta.tb.targets import SimTarget

__all__ = ["run_fuzz"]

EXACT = ("macs", "insns_retired", "dma_read_bytes", "dma_write_bytes")


def run_fuzz(target: SimTarget, streams: int, seed: int) -> tuple[int, list[str]]:
    """Run ``streams`` random streams on ``target``; return ``(streams run, problems)``.

    Stops at the first stream that disagrees with golden, hangs or crashes the simulator:
    one is enough to kill a mutant.
    """
    top = target.config
    assert isinstance(top, SimTopConfig), top
    cfg = top.accel
    rng = np.random.default_rng(seed)
    data = top.program_base
    gold = GoldenBackend(cfg, predict_cycles=False, sram_zeroed=True)
    done = 0
    with SimSession(target, label="fuzz", seed=seed, options={"seed": seed}) as session:
        for i in range(streams):
            stream = random_stream(cfg, rng, data_bytes=data)
            resp = AxiResp.SLVERR if rng.random() < 0.5 else AxiResp.DECERR
            name = f"fuzz stream {i} ({', '.join(stream.breaks) or 'legal'})"
            try:
                session.call("reset")
                session.call("write_dram", addr=0, data=stream.image)
                session.call("set_faults", ranges=stream.faults, resp=resp)
                got = session.call(
                    "run", words=stream.words, max_cycles=cycle_budget(cfg, stream.words)
                )
                rtl = np.frombuffer(session.call("read_dram", addr=0, nbytes=data), np.uint8)
            except (JobFailed, SimulationFailed) as exc:
                return done + 1, [f"{name}: {str(exc).splitlines()[0][:160]}"]
            done += 1
            gold.load(DramImage(0, np.frombuffer(stream.image, dtype=np.uint8).copy()))
            gold.set_faults(stream.faults)
            gold.tokens = dict.fromkeys(gold.tokens, 0)  # as the reset left the hardware's
            want = gold.run(stream.words)
            problems = []
            errors = set(got["errors"])
            if errors != {k for k, v in want.errors.items() if v}:
                problems.append(f"errors RTL {sorted(errors)} golden {want.error_log}")
            for key in EXACT:
                if got["counters"][key] != want.counters[key]:
                    problems.append(f"{key} RTL {got['counters'][key]} golden {want.counters[key]}")
            bad = np.flatnonzero(rtl != np.frombuffer(gold.read(0, data), np.uint8))
            if bad.size:
                problems.append(f"{bad.size} DRAM bytes differ, first at {int(bad[0]):#x}")
            if problems:
                return done, [f"{name}: {'; '.join(problems)}"]
    return done, []
