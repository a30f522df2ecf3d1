"""What can be simulated, and the one place that names its files.

A :class:`SimTarget` is a top-level design (the array core, the whole accelerator, or the DMA
test top) in one configuration under one simulator. Everything that runs a simulation, a
regression of cocotb tests or a job session (:mod:`cdm_qta.tb.session`), goes through it: it
generates the Verilog, builds it once per folder and hands the configuration to the simulator
process through :meth:`~cdm_qta.hw.config.EnvConfig.to_env`.

Files (under :func:`~cdm_qta.tb.toolchain.build_root`, ``build/`` by default)::

    gen/<module>.v, gen/<module>.json        generated Verilog and its description
    sim/<simulator>/<module>/                the simulator build (reused while sources match)
    sim/<simulator>/<module>.<label>.log     the output of one run (build and simulation)
"""

from __future__ import annotations

import dataclasses
import enum
import resource
import time
from pathlib import Path

from cdm_qta.hw.config import ArrayConfig

from .dma_top import DmaTopConfig, generate_dma_top
from .sim_top import SimTopConfig, generate_sim_top
from .toolchain import SIMULATORS, build, build_root

__all__ = ["BuildReport", "Config", "SimTarget", "Top"]

Config = ArrayConfig | SimTopConfig | DmaTopConfig


class Top(enum.StrEnum):
    """The designs with a simulation flow."""

    ARRAY = "array"  #: :class:`~cdm_qta.hw.core.ArrayCore` (ArrayConfig)
    ACCELERATOR = "accelerator"  #: the accelerator with DRAM and monitors (SimTopConfig)
    DMA = "dma"  #: :class:`~cdm_qta.tb.dma_top.DmaTop`, the DMA engines' test top


_CONFIG_OF = {Top.ARRAY: ArrayConfig, Top.ACCELERATOR: SimTopConfig, Top.DMA: DmaTopConfig}


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """What generating and building a target cost."""

    fresh: bool  #: the build folder did not exist before
    generate_s: float
    build_s: float
    build_peak_mb: float | None  #: peak memory of the build's processes, when measurable


@dataclasses.dataclass(frozen=True)
class SimTarget:
    """One design in one configuration under one simulator.

    Raises
    ------
    ValueError
        An unknown simulator, or a configuration of the wrong kind for ``top``.
    """

    sim: str
    top: Top
    config: Config
    root: Path = dataclasses.field(default_factory=build_root)

    def __post_init__(self) -> None:
        if self.sim not in SIMULATORS:
            raise ValueError(f"sim must be one of {', '.join(SIMULATORS)}, not {self.sim!r}")
        object.__setattr__(self, "top", Top(self.top))
        want = _CONFIG_OF[self.top]
        if not isinstance(self.config, want):
            raise ValueError(f"the {self.top} top takes a {want.__name__}, not {self.config!r}")
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def module(self) -> str:
        """Verilog name of the top module."""
        return self.config.module_name

    @property
    def build_dir(self) -> Path:
        return self.root / "sim" / self.sim / self.module

    def log_file(self, label: str) -> Path:
        """Where the output of a run called ``label`` goes."""
        return self.root / "sim" / self.sim / f"{self.module}.{label}.log"

    def generate(self) -> Path:
        """The Verilog of this design (regenerated only when sources or config changed)."""
        out = self.root / "gen"
        if self.top == Top.ARRAY:
            from cdm_qta.hw.generate import generate

            return generate(self.config, out)  # type: ignore[arg-type]
        if self.top == Top.ACCELERATOR:
            return generate_sim_top(self.config, out)  # type: ignore[arg-type]
        return generate_dma_top(self.config, out)  # type: ignore[arg-type]

    def build(self, *, waves: bool = False, label: str = "build") -> BuildReport:
        """Generate and build (both skipped when nothing changed); say what it cost."""
        fresh = not self.build_dir.exists()
        rss_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        source = self.generate()
        generate_s = time.perf_counter() - start
        build_s = build(
            sim=self.sim,
            sources=[source],
            toplevel=self.module,
            build_dir=self.build_dir,
            waves=waves,
            log_file=self.log_file(label),
        )
        rss_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        # ru_maxrss of children is the largest child so far (kB on Linux): the compiler's peak
        # for a fresh build, unknown if an earlier child of this process was larger.
        peak = round(rss_after / 1024, 1) if rss_after > rss_before else None
        return BuildReport(fresh, round(generate_s, 2), round(build_s, 2), peak)

    def env(self) -> dict[str, str]:
        """Environment entries that tell a simulator process what it simulates."""
        return self.config.to_env()

    def __str__(self) -> str:
        return f"{self.sim}:{self.module}"
