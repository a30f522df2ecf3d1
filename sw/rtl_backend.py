"""The RTL back end: instruction streams on the generated Verilog, under Verilator or Icarus.

One simulator process serves the back end's whole life (a training step's dozens of programs
pay for one build and one launch): :meth:`RtlBackend.load` writes DRAM through the simulated
DRAM's back door, :meth:`RtlBackend.run` puts the words into DRAM, starts them through the
FETCH registers and waits for the ``done`` edge, and the error bits and every hardware
counter come back.
The jobs are :class:`cdm_qta.tb.accel_jobs.AcceleratorJobs`; the session is
:class:`cdm_qta.tb.session.SimSession`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdm_qta.hw.config import AcceleratorConfig, DramTiming
from cdm_qta.hw.isa import Instruction
from cdm_qta.hw.regs import COUNTERS, ERRORS
from cdm_qta.tb.session import JobFailed, SimSession, SimulationFailed
from cdm_qta.tb.sim_top import SimTopConfig
from cdm_qta.tb.targets import SimTarget, Top
from cdm_qta.tb.toolchain import build_root as default_build_root

from .backend import Backend, RunStats
from .cycle_model import DeadlockError, predict
from .dram import DramImage

__all__ = ["JobFailed", "RtlBackend", "SimulationFailed", "cycle_budget"]


def cycle_budget(
    cfg: AcceleratorConfig,
    program: Sequence[Instruction | int],
    *,
    timing: DramTiming | None = None,
    pause: float | None = None,
) -> int:
    """Cycles the accelerator may take before a run counts as hung.

    The cycle model is exact on the in-simulator DRAM (``timing``, default the simulated
    DRAM's), so a wrong program fails in seconds, not after millions of cycles. The factor 3
    covers what the model does not know: random bus stalls of the testbench (``pause``, the
    stall probability per channel and cycle: each stalled channel moves ``1 - pause`` beats per
    cycle, and a transfer crosses two channels), cocotbext-axi's DRAM instead of the model;
    the fixed margin covers short programs and the host's start.
    """
    try:
        predicted = predict(cfg, program, timing).cycles
    except DeadlockError:
        predicted = 0  # the hardware will hang too: give it just long enough to show it
    stalls = 1.0 / (1.0 - min(max(pause or 0.0, 0.0), 0.9)) ** 2
    return int(3 * stalls * predicted) + 20 * len(program) + 10_000


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
    dram : str
        ``"model"`` (the in-simulator DRAM, fast) or ``"cocotb"`` (cocotbext-axi's AXI RAM, the
        protocol reference).
    dram_bytes : int, optional
        Simulated DRAM from address 0 (a power of two; default: the DRAM window, at most 16 MB);
        its top quarter (at most 1 MB) holds programs.
    timing : DramTiming, optional
        The simulated DRAM's latency and bandwidth.
    """

    def __init__(
        self,
        sim: str,
        cfg: AcceleratorConfig,
        build_root: Path | None = None,
        *,
        pause: float | None = None,
        dram: str = "model",
        dram_bytes: int | None = None,
        timing: DramTiming | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(cfg)
        self.name = sim
        if dram_bytes is None:
            window_end = cfg.dram_base + cfg.dram_size
            dram_bytes = min(1 << 24, 1 << (window_end.bit_length() - 1))
        self.top = SimTopConfig(
            accel=cfg, dram=dram, dram_bytes=dram_bytes, timing=timing or DramTiming()
        )
        root = build_root or default_build_root()
        self.target = SimTarget(sim, Top.ACCELERATOR, self.top, root=root)
        self.session = SimSession(
            self.target, label="rtl_backend", options={"seed": seed, "pause": pause}
        )

    def _window(self, addr: int, nbytes: int) -> None:
        """Data must stay in the simulated DRAM, below its program area."""
        cfg, top = self.cfg, self.top
        if nbytes < 0 or addr < cfg.dram_base or addr + nbytes > top.program_base:
            raise ValueError(
                f"[{addr:#x}, {addr + nbytes:#x}) is outside the simulated DRAM's data area "
                f"[{cfg.dram_base:#x}, {top.program_base:#x}) (pass a larger dram_bytes)"
            )

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
            "run",
            words=words,
            max_cycles=cycle_budget(
                self.cfg, program, timing=self.top.timing, pause=self.session.options["pause"]
            ),
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
