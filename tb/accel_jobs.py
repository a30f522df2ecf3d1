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
