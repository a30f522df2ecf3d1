"""Run a program on the simulated accelerator from plain Python: the RTL back end's engine.

:class:`cdm_qta.sw.rtl_backend.RtlBackend` writes a job file (DRAM contents, instruction
words), runs the cocotb coroutine below inside Verilator or Icarus, and reads the result file
(DRAM contents after the run, error bits, every hardware counter).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from cdm_qta.hw.config import AcceleratorConfig

try:
    import cocotb
except ImportError:  # pragma: no cover
    cocotb = None

from .accel_tb import AccelTB

__all__ = ["CONFIG_ENV", "JOB_ENV"]

CONFIG_ENV = "CDM_QTA_ACCEL_CONFIG"
JOB_ENV = "CDM_QTA_ACCEL_JOB"


if cocotb is not None:

    @cocotb.test(timeout_time=10_000, timeout_unit="ms")
    async def run_program(dut: object) -> None:
        """Load DRAM, push the program through AXI4-Lite, wait, dump DRAM and counters."""
        cfg = AcceleratorConfig.from_json(os.environ[CONFIG_ENV])
        job_path = Path(os.environ[JOB_ENV])
        job = np.load(job_path)
        meta = json.loads(str(job["meta"]))
        dram = job["dram"]
        tb = AccelTB(dut, cfg, np.random.default_rng(0), ram_size=meta["ram_size"])
        await tb.start()
        tb.dram_write(cfg.dram_base, dram)
        words = [int(w, 16) for w in meta["words"]]
        errors, counters = await tb.run(words)
        out = {
            "errors": sorted(errors),
            "counters": counters,
        }
        after = np.frombuffer(tb.dram_read(cfg.dram_base, dram.size), dtype=np.uint8)
        np.save(job_path.with_suffix(".dram.npy"), after)
        job_path.with_suffix(".result.json").write_text(json.dumps(out))


def paper_shapes(scale: int) -> list[tuple[str, int, int, int]]:
    """GEMM shapes of the paper's setting (SD cross-attention), divided by ``scale``.

    Image tokens 4096/1024/256, text tokens 77, channels 320..1280, LoRA rank 4 (never scaled).
    """

    def s(x: int) -> int:
        return max(1, x // scale)

    return [
        ("proj 4096x320x320", s(4096), s(320), s(320)),
        ("proj 1024x640x640", s(1024), s(640), s(640)),
        ("proj 256x1280x1280", s(256), s(1280), s(1280)),
        ("to_k text 77x768x320", s(77), s(768), s(320)),
        ("QK^T 4096x40x77", s(4096), s(40), s(77)),
        ("lora down 4096x320x4", s(4096), s(320), 4),
        ("lora up 4096x4x320", s(4096), 4, s(320)),
    ]


if cocotb is not None:

    @cocotb.test(timeout_time=1_000_000, timeout_unit="ms")
    async def bench_gemms(dut: object) -> None:
        """Paper-shaped GEMMs DRAM to DRAM: cycles, utilization, engine busy, wall speed."""
        import time

        from cdm_qta import golden
        from cdm_qta.hw.isa import Compute
        from cdm_qta.hw.timing import OsTile, WsTile, program_cycles
        from cdm_qta.sw.runtime import compile_for

        cfg = AcceleratorConfig.from_json(os.environ[CONFIG_ENV])
        job_path = Path(os.environ[JOB_ENV])
        job = json.loads(job_path.read_text())
        n = cfg.n
        rng = np.random.default_rng(job["seed"])
        tb = AccelTB(dut, cfg, rng, ram_size=1 << 24)
        await tb.start()
        rows = []
        for name, m, k, nn in paper_shapes(job["scale"]):
            for mode in ("ws", "os"):
                a = golden.rand_int(rng, (m, k))
                b = golden.rand_int(rng, (k, nn))
                program = compile_for(cfg, a, b, mode)
                lay = program.layout
                image = lay.image(a, b)
                tb.dram_write(image.base, image.data)
                start = time.perf_counter()
                errors, counters = await tb.run(program.instructions)
                wall = time.perf_counter() - start
                got = lay.unpack_c(tb.dram_read(lay.c_base, lay.c_bytes))
                exact = not errors and np.array_equal(got, golden.gemm(a, b))
                tiles = [
                    WsTile(i.k, i.m) if i.dataflow == 0 else OsTile(i.k)
                    for i in program.instructions
                    if isinstance(i, Compute)
                ]
                array_cycles = program_cycles(tiles, n)
                macs = counters["macs"]
                cycles = counters["cycles"]
                rows.append(
                    {
                        "gemm": name,
                        "shape": f"{m}x{k}x{nn}",
                        "dataflow": mode.upper(),
                        "bit_exact": exact,
                        "macs": macs,
                        "ideal_cycles": -(-macs // (n * n)),
                        "array_cycles": array_cycles,
                        "cycles": cycles,
                        "utilization": round(macs / (cycles * n * n), 3),
                        "array_utilization": round(macs / (array_cycles * n * n), 3),
                        "vs_array": round(array_cycles / cycles, 3),
                        "compute_busy": round(counters["compute_busy"] / cycles, 3),
                        "wall_s": round(wall, 2),
                        "macs_per_s": round(macs / wall),
                    }
                )
                dut._log.info(str(rows[-1]))
        job_path.with_suffix(".result.json").write_text(json.dumps(rows))
