"""``qta perf``: what one training step costs the accelerator, GEMM by GEMM and in total.

Every GEMM of a step (``qta trace``, or a JSONL file it wrote) is compiled for the configured
accelerator (:func:`~cdm_qta.sw.compiler.compile_gemm`) and its program's counters predicted by
the exact cycle model (:mod:`cdm_qta.sw.cycle_model`); cycles, MACs and DRAM bytes are the
model's counters, SRAM bytes are counted from the compiler's tiling (:func:`sram_counts`, held
to the compiled instructions by the tests), and the energy model (:mod:`cdm_qta.sw.energy`)
prices them. Nothing here is a separate timing model.

Knobs
-----
* ``dataflow``: ``ws`` or ``os`` for every GEMM, or ``hybrid``: per GEMM the dataflow with
  fewer predicted cycles (ties: WS), as the paper's flexible array does.
* ``transpose``: ``auto`` also tries ``C^T = B^T A^T`` (``m`` and ``n`` swapped, each operand's
  transpose flipped) and keeps it when it is faster; ``off`` runs every GEMM as traced. The
  result is then written transposed, which its consumer reads with the opposite transpose
  flag (the trace's layouts are free: the compiler lays out transposes in software). With
  ``auto`` the totals of both are reported, so the gain is visible.
* ``count`` identical products (attention heads, batch) run one after another: ``count``
  times the cycles of one.

GEMMs that do not compile as one program
----------------------------------------
A :class:`~cdm_qta.sw.compiler.ShapeError` (buffers too small for the tile) or a
:class:`~cdm_qta.sw.dependencies.ProgramError` (the program would need more outstanding tokens
than the hardware counts) is not dropped: the GEMM is split in halves along its larger free
dimension (``m`` or ``n``: independent output rows or columns, no host-side addition) until
every piece compiles, and the pieces run one after another (``pieces`` in the report; a
conservative time, since nothing overlaps across pieces). A reduction too long for the INT32
accumulator (``K`` beyond :func:`~cdm_qta.golden.gemm.max_safe_reduction`) cannot be split that
way: such a GEMM is listed as *unsupported*, its MACs reported apart and left out of the totals.

Predictors and caches
---------------------
``exact`` compiles each distinct (configuration, shape, transposes, dataflow) once and predicts
the whole program; ``estimate`` uses :mod:`cdm_qta.sw.estimate` (a few M blocks predicted
exactly, extended), when that module exists and the DRAM timing is the default one; ``auto``
(default) takes ``estimate`` when it can, else ``exact``. Results are cached in memory per
process and, unless disabled, on disk under ``build/perf-cache/``: one JSON file per piece,
named by the SHA-256 of (configuration, shape, transposes, dataflow, DRAM timing, predictor,
and the source of every module the prediction depends on), so a change to the compiler or the
cycle model never reads a stale entry. Deleting the folder is always safe.

Roofline and SCALE-Sim
----------------------
``compute_bound`` = MACs / N^2 cycles (every PE busy every cycle); ``dram_bound`` = the
busier DRAM direction's bytes of the compiled programs / bytes per cycle (bus width times the
DRAM's beat rate), and ``compulsory_dram_bound`` the same for each operand read once and the
result written once. Beside our cycles stand SCALE-Sim's fold formulas (:mod:`cdm_qta.sw.
scalesim`) for the same GEMMs and dataflows: they pay a whole fill and drain per fold and no
DRAM at all, where this hardware double-buffers (the next fold's weights load while the
current one streams; OS drains while the next fold accumulates) but waits for DRAM, instruction
fetch and the tokens between engines.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from cdm_qta.golden.gemm import max_safe_reduction
from cdm_qta.hw.config import AcceleratorConfig, Dataflow, DramTiming
from cdm_qta.hw.files import write_atomic

from . import scalesim
from .errors import CliError
from .tables import format_table
from .trace import TraceGemm

__all__ = [
    "DATAFLOWS",
    "Piece",
    "StepPerf",
    "add_parser",
    "dram_timing_for",
    "evaluate_step",
    "gemm_key",
    "gemm_options",
    "load_workload",
    "make_gemm",
    "piece_counts",
    "run",
    "sram_counts",
]

DATAFLOWS = ("ws", "os", "hybrid")
TRANSPOSE = ("auto", "off")
PREDICTORS = ("auto", "exact", "estimate")
WORKLOADS = ("sd15", "sd21", "sdxl", "tiny")
DEFAULT_CACHE = Path("build/perf-cache")
#: Deepest recursive split (2**depth pieces) before a GEMM is called unsupported.
MAX_SPLIT_DEPTH = 8
#: Modules whose source decides a prediction: their hash is part of every disk-cache key.
_MODEL_MODULES = (
    "cdm_qta.sw.compiler",
    "cdm_qta.sw.cycle_model",
    "cdm_qta.sw.dependencies",
    "cdm_qta.sw.dram",
    "cdm_qta.sw.estimate",
    "cdm_qta.hw.timing",
    "cdm_qta.hw.isa",
    "cdm_qta.hw.config",
)
_CACHE_VERSION = 1


# -- workloads ------------------------------------------------------------------------------------


def make_gemm(
    name: str,
    kind: str,
    phase: str,
    m: int,
    k: int,
    n: int,
    *,
    count: int = 1,
    trans_a: bool = False,
    trans_b: bool = False,
    trainable: bool = False,
    op: str = "",
) -> TraceGemm:
    """A :class:`~cdm_qta.sw.trace.TraceGemm` (the record ``qta trace`` writes) by hand."""
    return TraceGemm(
        name=name, kind=kind, phase=phase, m=m, k=k, n=n, count=count, trans_a=trans_a,
        trans_b=trans_b, trainable=trainable, op=op,
    )  # fmt: skip


def gemm_key(g: TraceGemm) -> tuple[int, int, int, bool, bool]:
    """What decides a GEMM's program: its shape and transposes (not its name or count)."""
    return (g.m, g.k, g.n, g.trans_a, g.trans_b)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return value


def read_jsonl(path: Path) -> tuple[dict[str, Any], list[TraceGemm]]:
    """The header and GEMMs of a ``qta trace --out`` file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        For a line that is not JSON, a GEMM record without ``m``/``k``/``n`` or with
        non-positive sizes, or a file without GEMMs; the message names the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"workload file not found: {path}")
    header: dict[str, Any] = {}
    gemms: list[TraceGemm] = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{no}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{no}: expected a JSON object, not {type(rec).__name__}")
        if rec.get("record") == "trace":
            header = rec
            continue
        if rec.get("record", "gemm") != "gemm":
            continue
        try:
            g = make_gemm(
                str(rec.get("name", f"line{no}")),
                str(rec.get("kind", "")),
                str(rec.get("phase", "")),
                _positive_int(rec.get("m"), "m"),
                _positive_int(rec.get("k"), "k"),
                _positive_int(rec.get("n"), "n"),
                count=_positive_int(rec.get("count", 1), "count"),
                trans_a=bool(rec.get("trans_a", False)),
                trans_b=bool(rec.get("trans_b", False)),
                trainable=bool(rec.get("trainable", False)),
                op=str(rec.get("op", "")),
            )
        except ValueError as exc:
            raise ValueError(f"{path}:{no}: {exc}") from None
        gemms.append(g)
    if not gemms:
        raise ValueError(f"{path}: no GEMM records (write one with `qta trace --out FILE.jsonl`)")
    return header, gemms


def load_workload(workload: str, mode: str | None = None) -> tuple[dict[str, Any], list[TraceGemm]]:
    """A step's GEMMs: traced (``sd15``, ``sd21``, ``sdxl``, ``tiny``; ``mode`` default
    ``lora``) or read from a ``.jsonl`` file (whose header must agree with ``mode`` if given)."""
    if mode is not None and mode not in ("full", "lora"):
        raise ValueError(f"mode must be full or lora, not {mode!r}")
    if workload in WORKLOADS:
        from .trace import trace_step

        try:
            tr = trace_step(workload, mode or "lora")
        except ImportError as exc:
            raise CliError(f"tracing {workload} needs torch and the ml extra: {exc}") from None
        return {"record": "trace", **tr.summary()}, list(tr.gemms)
    path = Path(workload)
    if path.suffix != ".jsonl" and not path.is_file():
        raise ValueError(
            f"workload must be one of {', '.join(WORKLOADS)} or a .jsonl file of `qta trace`, "
            f"not {workload!r}"
        )
    header, gemms = read_jsonl(path)
    if mode is not None and header.get("mode") not in (None, mode):
        raise ValueError(f"{path} is a {header['mode']!r} trace, not {mode!r}")
    return header, gemms


# -- one program: counters --------------------------------------------------------------------


def sram_counts(cfg: AcceleratorConfig, m: int, k: int, n: int, tiling: Any) -> dict[str, int]:
    """SRAM bytes and output-buffer additions of ``compile_gemm``'s program for this tiling.

    Counted from the compiler's loop nest (see :mod:`cdm_qta.sw.compiler`): every SRAM access
    moves a whole row (N bytes of input/weight, 4N of output), a LOAD writes its rows, a
    COMPUTE reads its input and weight rows and writes its output rows (and reads them first
    when it accumulates: every k-tile after the first, one INT32 addition per valid lane), a
    STORE reads its rows. ``tests/sw/test_perf.py`` compares this with the instructions.
    """
    big = cfg.n
    row_in, row_out = cfg.input_row_bytes, cfg.output_row_bytes
    blocks, kt, nt = tiling.counts(m, k, n, big)
    chunks = -(-nt // tiling.n_chunk)
    ws = tiling.dataflow == Dataflow.WS
    computes_rows_in = nt * kt * m if ws else blocks * nt * k  # input rows read by COMPUTE
    in_load_rows = chunks * kt * m if ws else blocks * chunks * k
    w_load_rows = nt * k if tiling.weights_resident else blocks * nt * k
    return {
        "input_buffer_write_bytes": in_load_rows * row_in,
        "input_buffer_read_bytes": computes_rows_in * row_in,
        "weight_buffer_write_bytes": w_load_rows * row_in,
        "weight_buffer_read_bytes": blocks * nt * k * row_in,
        "output_buffer_write_bytes": nt * kt * m * row_out,
        # read-modify-write of every k-tile after the first, plus every STORE's rows
        "output_buffer_read_bytes": (nt * (kt - 1) * m + nt * m) * row_out,
        "adds": (kt - 1) * m * n,
    }


@dataclasses.dataclass(frozen=True)
class Piece:
    """Counters of one GEMM run as one or more programs (``pieces`` > 1: split, serial)."""

    cycles: int
    macs: int
    dram_read_bytes: int
    dram_write_bytes: int
    sram: Mapping[str, int]
    pieces: int = 1
    exact: bool = True  #: every piece predicted as a whole program
    instructions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sram": dict(self.sram)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Piece:
        return cls(**{**d, "sram": dict(d["sram"])})

    def __add__(self, other: Piece) -> Piece:
        return Piece(
            cycles=self.cycles + other.cycles,
            macs=self.macs + other.macs,
            dram_read_bytes=self.dram_read_bytes + other.dram_read_bytes,
            dram_write_bytes=self.dram_write_bytes + other.dram_write_bytes,
            sram={k: self.sram[k] + other.sram[k] for k in self.sram},
            pieces=self.pieces + other.pieces,
            exact=self.exact and other.exact,
            instructions=self.instructions + other.instructions,
        )


class Unsupported(ValueError):
    """A GEMM no split makes runnable (a reduction too long for the INT32 accumulator)."""


def _estimate_module() -> Any | None:
    try:
        return importlib.import_module("cdm_qta.sw.estimate")
    except ImportError:
        return None


def resolve_predictor(predictor: str, timing: DramTiming) -> str:
    """``exact`` or ``estimate`` for ``predictor`` (``auto``: estimate when it can be used).

    Raises
    ------
    ValueError
        For an unknown name, or ``estimate`` when :mod:`cdm_qta.sw.estimate` is missing or the
        DRAM timing is not the default (the estimate predicts with the default timing only).
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {', '.join(PREDICTORS)}, not {predictor!r}")
    usable = _estimate_module() is not None and timing == DramTiming()
    if predictor == "estimate" and not usable:
        raise ValueError(
            "the estimate predictor needs cdm_qta.sw.estimate and the default DRAM timing "
            "(no --dram-gbps); use --predictor exact"
        )
    if predictor == "auto":
        return "estimate" if usable else "exact"
    return predictor


def _predict_one(
    cfg: AcceleratorConfig,
    key: tuple[int, int, int, bool, bool],
    dataflow: Dataflow,
    timing: DramTiming,
    predictor: str,
) -> Piece:
    """One program, exactly as compiled; raises ShapeError/ProgramError if it does not compile."""
    from .compiler import compile_gemm, plan_tiling
    from .cycle_model import predict

    m, k, n, ta, tb = key
    if predictor == "estimate":
        est = _estimate_module()
        assert est is not None
        e = est.estimate_gemm(cfg, m, k, n, dataflow=dataflow, trans_a=ta, trans_b=tb)
        counters, tiling = e.counters, e.tiling or plan_tiling(cfg, m, k, n, dataflow)
        exact, insns = bool(e.exact), int(e.instructions)
    else:
        prog = compile_gemm(cfg, m, k, n, dataflow=dataflow, trans_a=ta, trans_b=tb)
        pred = (
            prog.prediction if timing == DramTiming() else predict(cfg, prog.instructions, timing)
        )
        counters, tiling, exact, insns = pred.counters, prog.tiling, True, len(prog.instructions)
    return Piece(
        cycles=int(counters["cycles"] or 0),
        macs=int(counters["macs"] or 0),
        dram_read_bytes=int(counters["dma_read_bytes"] or 0),
        dram_write_bytes=int(counters["dma_write_bytes"] or 0),
        sram=sram_counts(cfg, m, k, n, tiling),
        exact=exact,
        instructions=insns,
    )


@functools.cache
def _model_digest() -> str:
    h = hashlib.sha256(f"perf-cache-{_CACHE_VERSION}".encode())
    for name in _MODEL_MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:
            spec = None
        origin = spec.origin if spec is not None else None
        h.update(name.encode())
        h.update(Path(origin).read_bytes() if origin and Path(origin).is_file() else b"-")
    return h.hexdigest()


def cache_key(
    cfg: AcceleratorConfig,
    key: tuple[int, int, int, bool, bool],
    dataflow: Dataflow,
    timing: DramTiming,
    predictor: str,
) -> str:
    """The disk-cache file name of one piece (see the module docstring)."""
    doc = {
        "cfg": json.loads(cfg.to_json()),
        "timing": json.loads(timing.to_json()),
        "gemm": list(key),
        "dataflow": Dataflow(dataflow).name,
        "predictor": predictor,
        "model": _model_digest(),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@functools.lru_cache(maxsize=1 << 14)
def _cached_piece(
    cfg: AcceleratorConfig,
    key: tuple[int, int, int, bool, bool],
    dataflow: Dataflow,
    timing: DramTiming,
    predictor: str,
    cache_dir: str | None,
) -> Piece | str:
    """:func:`_predict_one`, or the compile error's text; memory + disk cached."""
    from .compiler import ShapeError
    from .dependencies import ProgramError

    path = (
        Path(cache_dir) / f"{cache_key(cfg, key, dataflow, timing, predictor)}.json"
        if cache_dir
        else None
    )
    if path is not None and path.is_file():
        try:
            doc = json.loads(path.read_text())
            return doc["error"] if "error" in doc else Piece.from_dict(doc["piece"])
        except (ValueError, KeyError, TypeError):
            pass  # a damaged entry is recomputed
    try:
        out: Piece | str = _predict_one(cfg, key, dataflow, timing, predictor)
        doc = {"piece": out.to_dict()}
    except (ShapeError, ProgramError) as exc:
        out = f"{type(exc).__name__}: {exc}"
        doc = {"error": out}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({"gemm": list(key), "dataflow": dataflow.name, **doc}))
    return out


def piece_counts(
    cfg: AcceleratorConfig,
    key: tuple[int, int, int, bool, bool],
    dataflow: Dataflow,
    *,
    timing: DramTiming | None = None,
    predictor: str = "exact",
    cache_dir: Path | None = None,
    _depth: int = 0,
) -> tuple[Piece, str | None]:
    """Counters of one GEMM on ``cfg`` with ``dataflow``, split if it must be (module doc).

    Returns the counters and, when split, the first compile error that made it split.

    Raises
    ------
    Unsupported
        If the reduction is too long for the accumulator, or no split compiles.
    """
    timing = timing or DramTiming()
    m, k, n, ta, tb = key
    limit = max_safe_reduction(operand_bits=cfg.array.operand_bits, acc_bits=cfg.array.acc_bits)
    if k > limit:
        raise Unsupported(f"K = {k} can overflow the INT32 accumulator (at most {limit})")
    got = _cached_piece(
        cfg, key, Dataflow(dataflow), timing, predictor, str(cache_dir) if cache_dir else None
    )
    if isinstance(got, Piece):
        return got, None
    if _depth >= MAX_SPLIT_DEPTH or max(m, n) < 2:
        raise Unsupported(f"does not compile even split into {2**_depth} pieces: {got}")
    # halves along the larger free dimension: independent output rows (m) or columns (n)
    if m >= n:
        halves = [(m - m // 2, k, n, ta, tb), (m // 2, k, n, ta, tb)]
    else:
        halves = [(m, k, n - n // 2, ta, tb), (m, k, n // 2, ta, tb)]
    parts = [
        piece_counts(
            cfg,
            h,
            dataflow,
            timing=timing,
            predictor=predictor,
            cache_dir=cache_dir,
            _depth=_depth + 1,
        )[0]
        for h in halves
    ]
    return parts[0] + parts[1], got


def transposed(key: tuple[int, int, int, bool, bool]) -> tuple[int, int, int, bool, bool]:
    """``C^T = B^T A^T``: ``m`` and ``n`` swapped, operands swapped with flipped transposes."""
    m, k, n, ta, tb = key
    return (n, k, m, not tb, not ta)


# -- one GEMM, every option -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Option:
    dataflow: str  #: "ws" or "os"
    transposed: bool
    piece: Piece | None
    split_reason: str | None = None
    error: str | None = None


def gemm_options(
    cfg: AcceleratorConfig,
    key: tuple[int, int, int, bool, bool],
    *,
    dataflows: Sequence[str] = ("ws", "os"),
    transpose: bool = False,
    timing: DramTiming | None = None,
    predictor: str = "exact",
    cache_dir: Path | None = None,
) -> list[Option]:
    """Every way to run one GEMM: each dataflow, as traced and (``transpose``) transposed."""
    out = []
    for flow in dataflows:
        for tr in (False, True) if transpose else (False,):
            k2 = transposed(key) if tr else key
            try:
                p, why = piece_counts(
                    cfg,
                    k2,
                    Dataflow[flow.upper()],
                    timing=timing,
                    predictor=predictor,
                    cache_dir=cache_dir,
                )
                out.append(Option(flow, tr, p, why))
            except Unsupported as exc:
                out.append(Option(flow, tr, None, error=str(exc)))
    return out


def _best(options: Iterable[Option]) -> Option | None:
    ok = [o for o in options if o.piece is not None]
    if not ok:
        return None
    return min(ok, key=lambda o: (o.piece.cycles, o.dataflow != "ws", o.transposed))  # type: ignore[union-attr]


def _task(args: tuple[Any, ...]) -> tuple[tuple[int, int, int, bool, bool], list[Option]]:
    cfg, key, dataflows, transpose, timing, predictor, cache_dir = args
    return key, gemm_options(
        cfg,
        key,
        dataflows=dataflows,
        transpose=transpose,
        timing=timing,
        predictor=predictor,
        cache_dir=cache_dir,
    )


# -- the step -------------------------------------------------------------------------------------


def dram_timing_for(
    cfg: AcceleratorConfig, gbps: float | None, clock_mhz: float
) -> tuple[DramTiming, float, str | None]:
    """The simulated DRAM's timing for a sustained bandwidth of ``gbps`` GB/s per direction.

    The DRAM gives ``beat_num / beat_den`` bus beats per cycle (denominator at most 64, so
    the rate is rounded to the nearest such fraction); more than one beat per cycle cannot go
    through the bus, so a larger figure is capped there (and said so). Returns the timing, the
    bandwidth it really models (GB/s) and a note.
    """
    peak = cfg.dram_bus_bytes * clock_mhz * 1e6 / 1e9
    if gbps is None:
        return DramTiming(), peak, None
    if not gbps > 0 or math.isinf(gbps):
        raise ValueError(f"--dram-gbps must be a positive number, not {gbps!r}")
    if gbps >= peak:
        note = (
            f"{gbps:g} GB/s is at or above the {cfg.dram_bus_bytes}-byte bus at {clock_mhz:g} "
            f"MHz ({peak:g} GB/s): the bus limits, one beat per cycle"
            if gbps > peak
            else None
        )
        return DramTiming(), peak, note
    frac = Fraction(gbps / peak).limit_denominator(64)
    if frac.numerator < 1:
        frac = Fraction(1, 64)
    timing = DramTiming(beat_num=frac.numerator, beat_den=frac.denominator)
    real = peak * float(frac)
    note = (
        None
        if abs(real - gbps) < 1e-9 * gbps
        else f"{gbps:g} GB/s modelled as {frac} beats per cycle = {real:.4g} GB/s"
    )
    return timing, real, note


@dataclasses.dataclass
class StepPerf:
    """A step's numbers (see :func:`evaluate_step`); :meth:`to_dict` is the ``--json`` schema."""

    config: dict[str, Any]
    gemms: list[dict[str, Any]]
    totals: dict[str, Any]
    unsupported: list[dict[str, Any]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "cdm_qta.perf/1",
            "config": self.config,
            "totals": self.totals,
            "gemms": self.gemms,
            "unsupported": self.unsupported,
            "notes": self.notes,
        }


def _energy_model(
    cfg: AcceleratorConfig, clock_mhz: float, vdd: float, synth: Path | None, table: Any = None
) -> tuple[Any, str]:
    from .energy import EnergyModel

    results = None
    source = "structural estimate (no synthesis results)"
    if synth is not None and Path(synth).is_file():
        from cdm_qta.hw.synth import load_results

        results = load_results(Path(synth))
        source = str(synth)
    model = EnergyModel.for_accelerator(
        cfg, vdd=vdd, clock_mhz=clock_mhz, synth=results, table=table
    )
    return model, source


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="shape", file=sys.stderr, leave=False)


def evaluate_step(
    gemms: Sequence[TraceGemm],
    cfg: AcceleratorConfig,
    *,
    dataflow: str = "hybrid",
    transpose: str = "off",
    dram_gbps: float | None = None,
    clock_mhz: float = 400.0,
    vdd: float = 1.1,
    predictor: str = "auto",
    cache_dir: Path | None = DEFAULT_CACHE,
    synth: Path | None = Path("build/synth/synth_results.json"),
    progress: bool = False,
    executor: Any = None,
    workload: str = "",
    table: Any = None,
) -> StepPerf:
    """Cycles, latency, utilization, SRAM and DRAM bytes, energy and EDP of ``gemms`` on
    ``cfg`` (see the module docstring for every knob). ``executor`` (anything with a
    ``map(fn, iterable)``, e.g. a ``concurrent.futures`` executor) spreads the distinct shapes;
    ``table`` is the SRAM table (:mod:`cdm_qta.hw.sram_table`; default: the shipped one)."""
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, not {dataflow!r}")
    if transpose not in TRANSPOSE:
        raise ValueError(f"transpose must be auto or off, not {transpose!r}")
    if not clock_mhz > 0:
        raise ValueError(f"clock must be positive, not {clock_mhz!r} MHz")
    timing, gbps, bw_note = dram_timing_for(cfg, dram_gbps, clock_mhz)
    pred_name = resolve_predictor(predictor, timing)
    model, energy_source = _energy_model(cfg, clock_mhz, vdd, synth, table)
    flows = ("ws", "os") if dataflow == "hybrid" else (dataflow,)
    keys = list(dict.fromkeys(gemm_key(g) for g in gemms))
    tasks = [(cfg, key, flows, transpose == "auto", timing, pred_name, cache_dir) for key in keys]
    bar = _progress(len(tasks), progress, f"qta perf N={cfg.n} {dataflow}")
    options: dict[tuple[int, int, int, bool, bool], list[Option]] = {}
    results = executor.map(_task, tasks) if executor is not None else map(_task, tasks)
    for key, opts in results:
        options[key] = opts
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    big = cfg.n
    bus_per_cycle = cfg.dram_bus_bytes * timing.beats_per_cycle
    rows: list[dict[str, Any]] = []
    unsupported: list[dict[str, Any]] = []
    acc: dict[str, float] = {}
    breakdown: dict[str, float] = {}
    scale_ws = scale_os = scale_chosen = 0
    plain_cycles = 0  # transpose off, same dataflow rule
    for g in gemms:
        opts = options[gemm_key(g)]
        best = _best(opts)
        if best is None:
            unsupported.append(
                {
                    "name": g.name,
                    "m": g.m,
                    "k": g.k,
                    "n": g.n,
                    "count": g.count,
                    "macs": g.macs,
                    "reason": "; ".join(sorted({o.error or "" for o in opts})),
                }
            )
            continue
        p = best.piece
        assert p is not None
        plain = _best(o for o in opts if not o.transposed)
        c = g.count
        counts = {
            "macs": p.macs * c,
            "dram_read_bytes": p.dram_read_bytes * c,
            "dram_write_bytes": p.dram_write_bytes * c,
            "register_bytes": _register_bytes(p.macs * c, cfg),
            "cycles": p.cycles * c,
            **{k: v * c for k, v in p.sram.items()},
        }
        rep = model.energy(counts)
        for k, v in rep.breakdown.items():
            breakdown[k] = breakdown.get(k, 0.0) + v
        sw = scalesim.ws_cycles(g.m, g.k, g.n, big) * c
        so = scalesim.os_cycles(g.m, g.k, g.n, big) * c
        scale_ws += sw
        scale_os += so
        chosen_scale = sw if best.dataflow == "ws" else so
        scale_chosen += chosen_scale
        plain_cycles += (plain.piece.cycles if plain and plain.piece else p.cycles) * c
        sram_bytes = sum(
            v
            for k, v in counts.items()
            if k.endswith("_buffer_read_bytes") or k.endswith("_buffer_write_bytes")
        )
        dram_bytes = counts["dram_read_bytes"] + counts["dram_write_bytes"]
        compute_bound = math.ceil(g.m * g.k * g.n / big**2) * c
        dram_bound = math.ceil(
            max(counts["dram_read_bytes"], counts["dram_write_bytes"]) / bus_per_cycle
        )
        row = {
            "name": g.name,
            "kind": g.kind,
            "phase": g.phase,
            "m": g.m,
            "k": g.k,
            "n": g.n,
            "count": c,
            "trans_a": g.trans_a,
            "trans_b": g.trans_b,
            "dataflow": best.dataflow,
            "transposed": best.transposed,
            "pieces": p.pieces,
            "split_reason": best.split_reason,
            "exact": p.exact,
            "cycles": p.cycles * c,
            "cycles_each": p.cycles,
            "macs": g.macs,
            "utilization": round(g.macs / (p.cycles * c * big**2), 5) if p.cycles else 0.0,
            "sram_bytes": int(sram_bytes),
            "dram_bytes": int(dram_bytes),
            "dram_read_bytes": int(counts["dram_read_bytes"]),
            "dram_write_bytes": int(counts["dram_write_bytes"]),
            "energy_pj": round(rep.total_pj, 3),
            "compute_bound_cycles": compute_bound,
            "dram_bound_cycles": dram_bound,
            "scalesim_cycles": chosen_scale,
            "scalesim_ws_cycles": sw,
            "scalesim_os_cycles": so,
            "options": {
                f"{o.dataflow}{'_t' if o.transposed else ''}": (
                    o.piece.cycles * c if o.piece else None
                )
                for o in opts
            },
        }
        rows.append(row)
        for k in (
            "cycles",
            "macs",
            "sram_bytes",
            "dram_bytes",
            "dram_read_bytes",
            "dram_write_bytes",
            "compute_bound_cycles",
            "energy_pj",
        ):
            acc[k] = acc.get(k, 0) + row[k]
        for k, v in p.sram.items():
            acc[k] = acc.get(k, 0) + v * c

    cycles = int(acc.get("cycles", 0))
    seconds = cycles / (clock_mhz * 1e6)
    energy_j = acc.get("energy_pj", 0.0) * 1e-12
    on_chip_j = (acc.get("energy_pj", 0.0) - breakdown.get("dram", 0.0)) * 1e-12
    macs = int(acc.get("macs", 0))
    compute_bound = math.ceil(macs / big**2)
    dram_bound = math.ceil(
        max(acc.get("dram_read_bytes", 0), acc.get("dram_write_bytes", 0)) / bus_per_cycle
    )
    compulsory = sum(
        g.count * max(g.m * g.k + g.k * g.n, 4 * g.m * g.n)
        for g in gemms
        if _best(options[gemm_key(g)])
    )  # per direction: reads of A and B, writes of C
    compulsory_bound = math.ceil(compulsory / bus_per_cycle)
    roof = max(compute_bound, dram_bound)
    totals = {
        "gemms": len(rows),
        "distinct_shapes": len(keys),
        "cycles": cycles,
        "latency_s": seconds,
        "macs": macs,
        "utilization": round(macs / (cycles * big**2), 5) if cycles else 0.0,
        "sram_bytes": int(acc.get("sram_bytes", 0)),
        "sram_bytes_by_buffer": {
            k: int(v)
            for k, v in acc.items()
            if k.endswith("_buffer_read_bytes") or k.endswith("_buffer_write_bytes")
        },
        "dram_bytes": int(acc.get("dram_bytes", 0)),
        "dram_read_bytes": int(acc.get("dram_read_bytes", 0)),
        "dram_write_bytes": int(acc.get("dram_write_bytes", 0)),
        "energy_j": energy_j,
        "on_chip_energy_j": on_chip_j,
        "energy_breakdown_j": {k: v * 1e-12 for k, v in breakdown.items()},
        "edp_js": energy_j * seconds,
        "power_w": energy_j / seconds if seconds else 0.0,
        "roofline": {
            "compute_bound_cycles": compute_bound,
            "dram_bound_cycles": dram_bound,
            "compulsory_dram_bound_cycles": compulsory_bound,
            "bound": "compute" if compute_bound >= dram_bound else "dram",
            "cycles_over_roofline": round(cycles / roof, 4) if roof else None,
            "cycles_over_compute_bound": round(cycles / compute_bound, 4)
            if compute_bound
            else None,
        },
        "scalesim": {
            "ws_cycles": scale_ws,
            "os_cycles": scale_os,
            "chosen_dataflow_cycles": scale_chosen,
            "ours_over_scalesim": round(cycles / scale_chosen, 4) if scale_chosen else None,
        },
        "transpose": {
            "mode": transpose,
            "cycles_without": plain_cycles,
            "gain": round(plain_cycles / cycles, 4) if cycles else None,
            "gemms_transposed": sum(r["transposed"] for r in rows),
        },
        "dataflow_gemms": {f: sum(r["dataflow"] == f for r in rows) for f in ("ws", "os")},
        "split_gemms": sum(r["pieces"] > 1 for r in rows),
        "unsupported_gemms": len(unsupported),
        "unsupported_macs": sum(u["macs"] for u in unsupported),
        "all_exact": all(r["exact"] for r in rows),
    }
    notes = [
        "count identical products run one after another (cycles x count)",
        f"energy: {energy_source}; DRAM energy included in energy_j, not in on_chip_energy_j",
    ]
    notes += list(model.notes)
    if bw_note:
        notes.append(bw_note)
    if totals["split_gemms"]:
        notes.append(
            f"{totals['split_gemms']} GEMMs split into pieces that run one after another "
            "(they do not compile as one program: see split_reason)"
        )
    if unsupported:
        notes.append(
            f"{len(unsupported)} GEMMs unsupported, left out of the totals (see unsupported)"
        )
    config = {
        "workload": workload,
        "array_n": big,
        "dataflow": dataflow,
        "transpose": transpose,
        "clock_mhz": clock_mhz,
        "vdd": vdd,
        "dram_gbps": gbps,
        "dram_timing": json.loads(timing.to_json()),
        "dram_bus_bytes": cfg.dram_bus_bytes,
        "input_buffer_bytes": cfg.input_buffer_bytes,
        "weight_buffer_bytes": cfg.weight_buffer_bytes,
        "output_buffer_bytes": cfg.output_buffer_bytes,
        "predictor": pred_name,
    }
    return StepPerf(config=config, gemms=rows, totals=totals, unsupported=unsupported, notes=notes)


def _register_bytes(macs: int, cfg: AcceleratorConfig) -> int:
    from .energy import array_register_bytes

    return array_register_bytes(macs, cfg.array)


# -- output ---------------------------------------------------------------------------------------


def format_perf(doc: Mapping[str, Any], top: int = 10) -> str:
    """Human-readable ``qta perf`` output: the totals, the roofline, SCALE-Sim, top GEMMs."""
    c, t = doc["config"], doc["totals"]
    roof, ss, tr = t["roofline"], t["scalesim"], t["transpose"]
    lines = [
        f"{c['workload']} on N={c['array_n']} ({c['dataflow']}, transpose {c['transpose']}, "
        f"{c['clock_mhz']:g} MHz, DRAM {c['dram_gbps']:.4g} GB/s, predictor {c['predictor']})",
        f"GEMMs {t['gemms']} ({t['distinct_shapes']} distinct shapes; "
        f"WS {t['dataflow_gemms']['ws']}, OS {t['dataflow_gemms']['os']}; "
        f"split {t['split_gemms']}; unsupported "
        f"{t['unsupported_gemms']})",
        f"cycles      {t['cycles']:,}  latency {t['latency_s'] * 1e3:.3f} ms",
        f"MACs        {t['macs']:,}  utilization {t['utilization']:.1%}",
        f"SRAM bytes  {t['sram_bytes']:,}   DRAM bytes {t['dram_bytes']:,} "
        f"({t['dram_read_bytes']:,} read, {t['dram_write_bytes']:,} written)",
        f"energy      {t['energy_j'] * 1e3:.4g} mJ (on chip {t['on_chip_energy_j'] * 1e3:.4g} mJ), "
        f"power {t['power_w']:.3g} W, EDP {t['edp_js']:.4g} J*s",
        f"roofline    compute bound {roof['compute_bound_cycles']:,} cycles (MACs/N^2), DRAM "
        f"bound {roof['dram_bound_cycles']:,} "
        f"(compulsory traffic {roof['compulsory_dram_bound_cycles']:,})"
        f": {roof['bound']}-bound, {roof['cycles_over_roofline']}x the roofline",
        f"SCALE-Sim   {ss['chosen_dataflow_cycles']:,} cycles for the same dataflows (WS only "
        f"{ss['ws_cycles']:,}, OS only {ss['os_cycles']:,}); ours / SCALE-Sim = "
        f"{ss['ours_over_scalesim']}",
        "            (SCALE-Sim pays a full fill and drain per fold and no DRAM; this hardware "
        "overlaps folds by double buffering but waits for DRAM, fetch and tokens)",
    ]
    if c["transpose"] == "auto":
        lines.append(
            f"transpose   {tr['gemms_transposed']} GEMMs run as C^T = B^T A^T; without it "
            f"{tr['cycles_without']:,} cycles ({tr['gain']}x)"
        )
    if doc["gemms"]:
        rows = sorted(doc["gemms"], key=lambda r: -r["cycles"])[:top]
        lines.append(f"top {len(rows)} GEMMs by cycles:")
        table = [
            {
                "name": r["name"][-48:],
                "phase": r["phase"],
                "m,k,n x count": f"{r['m']},{r['k']},{r['n']} x{r['count']}",
                "flow": r["dataflow"] + ("^T" if r["transposed"] else ""),
                "cycles": f"{r['cycles']:,}",
                "util": f"{r['utilization']:.1%}",
                "scalesim": f"{r['scalesim_cycles']:,}",
                "pieces": r["pieces"],
            }
            for r in rows
        ]
        lines.append(format_table(table, list(table[0])))
    for u in doc["unsupported"]:
        lines.append(f"unsupported: {u['name']} ({u['m']},{u['k']},{u['n']}): {u['reason']}")
    lines += [f"note: {n}" for n in doc["notes"]]
    return "\n".join(lines)


def add_common(p: argparse.ArgumentParser) -> None:
    """Options ``qta perf``, ``qta sweep`` and ``qta report`` share."""
    p.add_argument("--clock-mhz", type=float, default=400.0, help="clock (default 400 MHz)")
    p.add_argument("--vdd", type=float, default=1.1, help="core voltage (default 1.1 V)")
    p.add_argument("--predictor", choices=PREDICTORS, default="auto", help="see qta perf --help")
    p.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"disk cache of predictions (default {DEFAULT_CACHE}; delete it freely)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the disk cache")
    p.add_argument(
        "--synth",
        type=Path,
        default=Path("build/synth/synth_results.json"),
        help="`qta synth` results for flops and leakage (default build/synth/synth_results.json;"
        " without it a structural estimate is used and noted)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "perf",
        help="cycles, latency, utilization, traffic, energy and EDP of one training step",
        description=__doc__.splitlines()[0],
        epilog="Predictors, caches, splits and the SCALE-Sim comparison: see cdm_qta.sw.perf.",
    )
    p.add_argument(
        "--workload", required=True, help=f"{'|'.join(WORKLOADS)} or FILE.jsonl (qta trace)"
    )
    p.add_argument("--mode", choices=("full", "lora"), help="training mode (default lora)")
    p.add_argument("--dataflow", choices=DATAFLOWS, default="hybrid")
    p.add_argument("--transpose", choices=TRANSPOSE, default="off", help="try C^T = B^T A^T (auto)")
    p.add_argument("--array-n", type=int, default=64, help="array size N (default 64)")
    p.add_argument(
        "--dram-gbps", type=float, help="DRAM bandwidth per direction (default: bus peak)"
    )
    p.add_argument("--jobs", type=int, default=1, help="processes for the distinct shapes")
    p.add_argument("--top", type=int, default=10, help="GEMMs listed (default 10)")
    p.add_argument("--out", type=Path, help="also write the JSON document here")
    p.add_argument("--json", action="store_true", help="print JSON (totals and every GEMM)")
    add_common(p)
    p.set_defaults(run=run)
    return p


def config_for(n: int) -> AcceleratorConfig:
    """``AcceleratorConfig.scaled(n)``, with a one-line error for a bad ``n``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--array-n must be a positive integer, not {n!r}")
    return AcceleratorConfig.scaled(n)


def run(args: argparse.Namespace) -> int:
    cfg = config_for(args.array_n)
    if args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, not {args.jobs}")
    if args.out is not None and not args.out.parent.resolve().is_dir():
        raise CliError(f"output folder {args.out.parent} does not exist")
    if args.dram_gbps is not None:
        dram_timing_for(cfg, args.dram_gbps, args.clock_mhz)  # fail before tracing
    resolve_predictor(args.predictor, DramTiming())
    _, gemms = load_workload(args.workload, args.mode)
    doc = perf_doc(gemms, cfg, args, workload=f"{args.workload} ({args.mode or 'lora'})")
    text = json.dumps(doc, indent=2)
    if args.out is not None:
        write_atomic(args.out, text + "\n")
    print(text if args.json else format_perf(doc, args.top))
    return 0


def perf_doc(
    gemms: Sequence[TraceGemm],
    cfg: AcceleratorConfig,
    args: argparse.Namespace,
    *,
    workload: str,
    dataflow: str | None = None,
    transpose: str | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_step` with the command-line options of :func:`add_common`."""
    from .parallel import executor_for

    with executor_for(getattr(args, "jobs", 1), getattr(args, "scheduler", None)) as ex:
        res = evaluate_step(
            gemms,
            cfg,
            dataflow=dataflow or args.dataflow,
            transpose=transpose or getattr(args, "transpose", "off"),
            dram_gbps=getattr(args, "dram_gbps", None),
            clock_mhz=args.clock_mhz,
            vdd=args.vdd,
            predictor=args.predictor,
            cache_dir=None if args.no_cache else args.cache,
            synth=args.synth,
            progress=not args.no_progress,
            executor=ex,
            workload=workload,
        )
    return res.to_dict()
