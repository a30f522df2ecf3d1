"""The RTL back end: instruction streams on the generated Verilog, under Verilator or Icarus.

One simulator process serves the back end's whole life (a training step's dozens of programs
pay for one build and one launch): :meth:`RtlBackend.load` writes DRAM through the simulated
RAM's back door, :meth:`RtlBackend.run` queues the words through the AXI4-Lite registers and
waits until the accelerator is idle, and the error bits and every hardware counter come back.
The jobs are :class:`cdm_qta.tb.accel_jobs.AcceleratorJobs`; the session is
:class:`cdm_qta.tb.session.SimSession`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.isa import Instruction
from cdm_qta.hw.regs import COUNTERS, ERRORS
from cdm_qta.tb.session import JobFailed, SimSession, SimulationFailed
from cdm_qta.tb.targets import SimTarget, Top
from cdm_qta.tb.toolchain import build_root as default_build_root

from .backend import Backend, RunStats
from .cycle_model import DeadlockError, predict
from .dram import DramImage

__all__ = ["JobFailed", "RtlBackend", "SimulationFailed", "cycle_budget"]


def cycle_budget(cfg: AcceleratorConfig, program: Sequence[Instruction | int]) -> int:
    """Cycles the accelerator may take before a run counts as hung.

    Derived from the cycle model's prediction (a wrong program fails in seconds, not after a
    fixed budget of millions of cycles); generous because the model is an estimate.
    """
    try:
        predicted = predict(cfg, program).cycles
    except DeadlockError:
        predicted = 0  # the hardware will hang too: give it just long enough to show it
    return 20 * predicted + 20 * len(program) + 10_000


class RtlBackend(Backend):
    """Run programs on the accelerator's Verilog (``sim`` = ``"verilator"`` or ``"icarus"``).

    Parameters
    ----------
    sim : str
    cfg : AcceleratorConfig
    build_root : Path, optional
        Where Verilog and builds go (default :func:`cdm_qta.tb.toolchain.build_root`).
    pause : float, optional
        Probability of a stall on every AXI channel in every cycle (back-pressure testing).
    ram_size : int, optional
        Bytes of simulated DRAM from ``cfg.dram_base`` (default: the whole window, allocated
        lazily by the RAM model).
    """

    def __init__(
        self,
        sim: str,
        cfg: AcceleratorConfig,
        build_root: Path | None = None,
        *,
        pause: float | None = None,
        ram_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(cfg)
        self.name = sim
        self.target = SimTarget(sim, Top.ACCELERATOR, cfg, root=build_root or default_build_root())
        self.session = SimSession(
            self.target,
            label="rtl_backend",
            options={"seed": seed, "pause": pause, "ram_size": ram_size},
        )

    def _window(self, addr: int, nbytes: int) -> None:
        cfg = self.cfg
        if nbytes < 0 or addr < cfg.dram_base or addr + nbytes > cfg.dram_base + cfg.dram_size:
            raise ValueError(f"[{addr:#x}, {addr + nbytes:#x}) is outside the DRAM window")

    def load(self, image: DramImage) -> None:
        self._window(image.base, image.data.size)
        data = np.asarray(image.data, dtype=np.uint8).tobytes()
        self.session.call("write_dram", addr=image.base, data=data)

    def read(self, addr: int, nbytes: int) -> bytes:
        self._window(addr, nbytes)
        return bytes(self.session.call("read_dram", addr=addr, nbytes=nbytes))

    def run(self, program: Sequence[Instruction | int]) -> RunStats:
        words = [w if isinstance(w, int) else w.encode() for w in program]
        result: dict[str, Any] = self.session.call(
            "run", words=words, max_cycles=cycle_budget(self.cfg, program)
        )
        counters = result["counters"]
        missing = set(COUNTERS) - set(counters)
        if missing:
            raise SimulationFailed(f"the simulation returned no {sorted(missing)} counters")
        return RunStats(
            backend=self.name,
            counters={name: int(counters[name]) for name in COUNTERS},
            timing="hardware",
            errors={name: int(name in result["errors"]) for name in ERRORS},
        )

    def close(self) -> None:
        self.session.close()
