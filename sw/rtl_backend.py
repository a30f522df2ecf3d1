"""The RTL back end: instruction streams on the generated Verilog, under Verilator or Icarus.

Each :meth:`RtlBackend.run` is one simulator run (the build is cached per configuration): the
DRAM contents and the instruction words go to the simulator in a job file, the cocotb host in
:mod:`cdm_qta.tb.accel_jobs` pushes the words through the AXI4-Lite registers and waits for the
accelerator to go idle, and the DRAM contents, error bits and hardware counters come back.
DRAM is cocotbext-axi's AXI4 RAM model, loaded and read through its back door.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.isa import Instruction, Store, decode

from .dram import DramImage
from .runtime import Backend, RunStats

__all__ = ["RtlBackend", "SimulationFailed"]

_STALLS = {"load": "load_wait_bus", "compute": "compute_wait_array", "store": "store_wait_bus"}


class SimulationFailed(RuntimeError):
    """The simulator did not complete the program (its log file says why)."""


def _extent(program: Sequence[Instruction | int]) -> int:
    """First DRAM address after every byte a STORE of ``program`` can write."""
    end = 0
    for word in program:
        insn = decode(word) if isinstance(word, int) else word
        if isinstance(insn, Store) and insn.rows:
            end = max(end, insn.dram_addr + (insn.rows - 1) * insn.stride + insn.row_bytes)
    return end


class RtlBackend(Backend):
    """Run programs on the accelerator's Verilog (``sim`` = ``"verilator"`` or ``"icarus"``)."""

    def __init__(self, sim: str, cfg: AcceleratorConfig, build_root: Path | None = None) -> None:
        super().__init__(cfg)
        if sim not in ("verilator", "icarus"):
            raise ValueError(f"sim must be 'verilator' or 'icarus', not {sim!r}")
        self.name = sim
        self.sim = sim
        from cdm_qta.tb.toolchain import build_root as default_root

        self.root = build_root or default_root()
        self.dram = np.zeros(0, dtype=np.uint8)  # from dram_base up to the highest byte used

    def _grow(self, end: int) -> None:
        need = end - self.cfg.dram_base
        if need > self.cfg.dram_size:
            raise ValueError(f"{end:#x} is outside the DRAM window")
        if need > self.dram.size:
            grown = np.zeros(need, dtype=np.uint8)
            grown[: self.dram.size] = self.dram
            self.dram = grown

    def load(self, image: DramImage) -> None:
        if image.base < self.cfg.dram_base:
            raise ValueError(f"image at {image.base:#x} starts below the DRAM window")
        self._grow(image.end)
        off = image.base - self.cfg.dram_base
        self.dram[off : off + image.data.size] = image.data

    def read(self, addr: int, nbytes: int) -> bytes:
        off = addr - self.cfg.dram_base
        if off < 0 or off + nbytes > self.cfg.dram_size:
            raise ValueError(f"[{addr:#x}, {addr + nbytes:#x}) is outside the DRAM window")
        out = np.zeros(nbytes, dtype=np.uint8)
        have = max(0, min(nbytes, self.dram.size - off))
        out[:have] = self.dram[off : off + have]
        return out.tobytes()

    def run(self, program: Sequence[Instruction | int]) -> RunStats:
        from cdm_qta.hw.generate import generate_accelerator
        from cdm_qta.tb.accel_jobs import CONFIG_ENV, JOB_ENV
        from cdm_qta.tb.toolchain import AXI_WARNINGS, build_and_test

        cfg = self.cfg
        words = [w if isinstance(w, int) else w.encode() for w in program]
        self._grow(max(_extent(words), cfg.dram_base + 4096))
        ram_size = 1 << max(self.dram.size - 1, 4095).bit_length()
        source = generate_accelerator(cfg, self.root / "gen")
        build_dir = self.root / "sim" / self.sim / cfg.module_name
        build_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="qta-rtl-") as tmp:
            job = Path(tmp) / "job.npz"
            meta = {"words": [f"{w:032x}" for w in words], "ram_size": ram_size}
            np.savez(job, dram=self.dram, meta=np.array(json.dumps(meta)))
            log = build_dir.parent / f"{cfg.module_name}.run_program.log"
            tests, failed = build_and_test(
                sim=self.sim,
                sources=[source],
                toplevel=cfg.module_name,
                test_module="cdm_qta.tb.accel_jobs",
                build_dir=build_dir,
                testcase="run_program",
                extra_env={
                    CONFIG_ENV: cfg.to_json(),
                    JOB_ENV: str(job),
                    "PYTHONWARNINGS": AXI_WARNINGS,
                },
                log_file=log,
            )
            result_path = job.with_suffix(".result.json")
            if tests == 0 or failed or not result_path.exists():
                raise SimulationFailed(f"the {self.sim} run did not complete: see {log}")
            result = json.loads(result_path.read_text())
            self.dram = np.load(job.with_suffix(".dram.npy"))
        counters = result["counters"]
        errors = dict.fromkeys(result["errors"], 1)
        return RunStats(
            backend=self.sim,
            cycles=counters["cycles"],
            cycles_source="hardware",
            macs=counters["macs"],
            busy={e: counters[f"{e}_busy"] for e in _STALLS},
            stall={e: counters[name] for e, name in _STALLS.items()},
            insns_retired=counters["insns_retired"],
            dma_read_bytes=counters["dma_read_bytes"],
            dma_write_bytes=counters["dma_write_bytes"],
            errors=errors,
            error_log=tuple(f"{k}={v}" for k, v in counters.items()),
        )
