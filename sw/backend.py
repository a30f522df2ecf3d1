"""The one interface every execution back end implements, and what a run reports.

Why an interface: the compiler's programs, the GEMM command and the training loop must run
unchanged on the NumPy golden model and on the generated RTL, and give bit-identical results::

    backend.load(image)           # DramImage -> DRAM, bytes outside the image untouched
    stats = backend.run(program)  # instructions (or raw 128-bit words), ends when all retired
    raw = backend.read(addr, n)   # bytes back from DRAM
    backend.close()               # release simulators etc. (also via ``with backend:``)

:func:`cdm_qta.sw.backends.make_backend` builds one by name.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.isa import Engine, Instruction
from cdm_qta.hw.regs import COUNTERS

from .dram import DramImage

__all__ = ["Backend", "RunStats", "engine_counters"]


def engine_counters(counters: dict[str, int | None]) -> dict[str, dict[str, int | None]]:
    """The per-engine counters (``load_wait_bus`` ...) grouped by engine, prefix removed.

    LOAD and STORE report ``busy``, ``wait_token``, ``wait_bus``; COMPUTE reports ``busy``,
    ``wait_token``, ``wait_array``: the hardware's own counter names (:data:`COUNTERS`).
    """
    out: dict[str, dict[str, int | None]] = {}
    for engine in Engine:
        prefix = f"{engine.label}_"
        out[engine.label] = {
            name.removeprefix(prefix): counters.get(name)
            for name in COUNTERS
            if name.startswith(prefix)
        }
    return out


@dataclasses.dataclass(frozen=True)
class RunStats:
    """What one :meth:`Backend.run` did.

    ``counters`` holds every name of :data:`cdm_qta.hw.regs.COUNTERS`. The RTL back end reads
    them from the hardware (``timing="hardware"``). The golden back end counts MACs,
    instructions and DMA bytes itself and takes the timing counters (``cycles``, ``*_busy``,
    ``*_wait_*``) from the cycle model (``timing="model"``), ``None`` where the model has no
    figure. ``insns_retired`` counts every instruction that retired, FENCEs and error-skipped
    ones included; ``macs`` only the executed COMPUTEs (``m * k * c`` each).
    """

    backend: str
    counters: dict[str, int | None]
    timing: str
    errors: dict[str, int]
    error_log: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = set(COUNTERS) - set(self.counters)
        if missing:
            raise ValueError(f"RunStats needs every hardware counter; missing {sorted(missing)}")

    @property
    def ok(self) -> bool:
        return not any(self.errors.values())

    @property
    def cycles(self) -> int | None:
        return self.counters["cycles"]

    @property
    def macs(self) -> int:
        return int(self.counters["macs"] or 0)

    @property
    def insns_retired(self) -> int:
        return int(self.counters["insns_retired"] or 0)

    @property
    def dma_read_bytes(self) -> int:
        return int(self.counters["dma_read_bytes"] or 0)

    @property
    def dma_write_bytes(self) -> int:
        return int(self.counters["dma_write_bytes"] or 0)

    @property
    def engines(self) -> dict[str, dict[str, int | None]]:
        """Busy and waiting cycles per engine (see :func:`engine_counters`)."""
        return engine_counters(self.counters)

    def utilization(self, array_n: int) -> float | None:
        """MACs / (cycles * N^2), or ``None`` without a cycle count."""
        return self.macs / (self.cycles * array_n**2) if self.cycles else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["error_log"] = list(self.error_log)
        return d


class Backend(abc.ABC):
    """Something that can hold a DRAM image and execute instruction streams against it."""

    #: Short name for reports ("golden", "verilator", "icarus").
    name: str = "backend"

    def __init__(self, cfg: AcceleratorConfig) -> None:
        self.cfg = cfg

    @abc.abstractmethod
    def load(self, image: DramImage) -> None:
        """Copy ``image`` into DRAM at ``image.base`` (must lie inside the DRAM window)."""

    @abc.abstractmethod
    def run(self, program: Sequence[Instruction | int]) -> RunStats:
        """Execute ``program`` (typed instructions or 128-bit words) until every one retired."""

    @abc.abstractmethod
    def read(self, addr: int, nbytes: int) -> bytes:
        """Return ``nbytes`` of DRAM from ``addr`` (inside the window)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most back ends hold nothing
        """Release resources (simulator processes, build directories)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
