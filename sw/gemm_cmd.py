"""``qta gemm``: one GEMM end to end through DRAM on a chosen back end, checked against golden.

Why a command: it is the smallest complete use of the stack (compiler, DRAM layout, runtime,
back end, counters), so it is both the user's first experiment and the RTL bring-up test.
Exit status: 0 bit-exact and no error bits, 1 otherwise, 2 bad arguments or shapes.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cdm_qta.golden.gemm import gemm, rand_int
from cdm_qta.hw.config import AcceleratorConfig, Dataflow
from cdm_qta.hw.files import write_atomic

from .backends import BACKENDS, make_backend
from .compiler import GemmProgram, ShapeError, choose_dataflow, compile_gemm
from .runtime import execute

__all__ = ["add_parser", "load_npz", "make_config", "run", "save_npz"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "gemm",
        help="run one C = op(A) . op(B) through DRAM on the golden model or the RTL",
        description="Compile, run and check one INT8 GEMM; prints cycles, utilization, counters.",
    )
    parser.add_argument("--m", type=int, help="rows of op(A) and C (taken from --npz if omitted)")
    parser.add_argument("--k", type=int, help="reduction length")
    parser.add_argument("--n", type=int, help="columns of op(B) and C")
    parser.add_argument("--trans-a", action="store_true", help="A is stored K x M (use A^T)")
    parser.add_argument("--trans-b", action="store_true", help="B is stored N x K (use B^T)")
    parser.add_argument(
        "--dataflow",
        choices=["ws", "os", "auto"],
        default="auto",
        help="auto: fewer predicted cycles (default)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="golden")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--seed", type=int, default=0, help="random int8 operands (default 0)")
    src.add_argument("--npz", type=Path, help="read int8 arrays 'a' and 'b' from this file")
    parser.add_argument("--save", type=Path, help="write the int32 result 'c' to this .npz")
    parser.add_argument("--array-n", type=int, default=64, help="PE array size N (default 64)")
    parser.add_argument(
        "--sram-rows",
        type=int,
        help="rows per SRAM buffer (default: the paper's 512 KB/1 MB at N=64, else 256)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)
    return parser


def make_config(array_n: int, sram_rows: int | None = None) -> AcceleratorConfig:
    """The paper's accelerator at N=64, else a test-sized one (``AcceleratorConfig.small``)."""
    if sram_rows is None and array_n == 64:
        return AcceleratorConfig()
    return AcceleratorConfig.small(array_n, rows=256 if sram_rows is None else sram_rows)


def load_npz(path: Path, trans_a: bool, trans_b: bool) -> tuple[NDArray[np.int8], ...]:
    """``a`` and ``b`` from an .npz, checked: present, 2-D int8, inner dimensions agree."""
    if not path.is_file():
        raise FileNotFoundError(f"--npz {path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"--npz {path}: not a readable .npz file ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"--npz {path}: not an .npz archive (a single array?)")
    with data:
        missing = [name for name in ("a", "b") if name not in data.files]
        if missing:
            raise ValueError(
                f"--npz {path}: missing array(s) {missing}; it holds {sorted(data.files)}"
            )
        a, b = data["a"], data["b"]
    for name, arr in (("a", a), ("b", b)):
        if arr.dtype != np.int8 or arr.ndim != 2:
            raise ValueError(
                f"--npz {path}: '{name}' must be a 2-D int8 array, not "
                f"{arr.dtype} with shape {arr.shape}"
            )
    k_a = a.shape[0] if trans_a else a.shape[1]
    k_b = b.shape[1] if trans_b else b.shape[0]
    if k_a != k_b:
        raise ValueError(
            f"--npz {path}: inner dimensions differ (a {a.shape}, b {b.shape}, "
            f"trans_a={trans_a}, trans_b={trans_b})"
        )
    return a, b


def save_npz(path: Path, c: NDArray[np.int32]) -> None:
    """Write ``c`` atomically: a reader never sees a half-written file."""
    buf = io.BytesIO()
    np.savez(buf, c=c.astype(np.int32))
    write_atomic(path.resolve(), buf.getvalue())


def _shape(
    args: argparse.Namespace,
) -> tuple[tuple[int, int, int], tuple[NDArray[np.int8], NDArray[np.int8]] | None]:
    """``(m, k, n)`` of the GEMM, and the operands if ``--npz`` gave them (validated)."""
    if args.npz is not None:
        a, b = load_npz(args.npz, args.trans_a, args.trans_b)
        m, k = (a.shape[1], a.shape[0]) if args.trans_a else a.shape
        n = b.shape[0] if args.trans_b else b.shape[1]
        for flag, want, got in (("--m", args.m, m), ("--k", args.k, k), ("--n", args.n, n)):
            if want is not None and want != got:
                raise ValueError(f"{flag} {want} disagrees with --npz {args.npz} ({got})")
        return (int(m), int(k), int(n)), (a, b)
    if args.m is None or args.k is None or args.n is None:
        raise ValueError("--m, --k and --n are required unless --npz gives the operands")
    for flag, v in (("--m", args.m), ("--k", args.k), ("--n", args.n)):
        if v < 1:
            raise ShapeError(f"{flag} must be at least 1, not {v}")
    return (args.m, args.k, args.n), None


def _random_operands(
    args: argparse.Namespace, m: int, k: int, n: int
) -> tuple[NDArray[np.int8], NDArray[np.int8]]:
    """Seeded random operands, made only once the shape is known to run (compiled)."""
    rng = np.random.default_rng(args.seed)
    a_shape = (k, m) if args.trans_a else (m, k)
    b_shape = (n, k) if args.trans_b else (k, n)
    return rand_int(rng, a_shape).astype(np.int8), rand_int(rng, b_shape).astype(np.int8)


def _compile(
    args: argparse.Namespace, cfg: AcceleratorConfig, m: int, k: int, n: int
) -> tuple[GemmProgram, dict[str, int | str]]:
    """The program to run and the predicted cycles of each candidate dataflow."""
    if args.dataflow == "auto":
        best, cands = choose_dataflow(cfg, m, k, n, trans_a=args.trans_a, trans_b=args.trans_b)
        predicted = {
            df.name.lower(): (p.prediction.cycles if isinstance(p, GemmProgram) else str(p))
            for df, p in cands.items()
        }
        return best, predicted
    df = Dataflow.WS if args.dataflow == "ws" else Dataflow.OS
    prog = compile_gemm(cfg, m, k, n, dataflow=df, trans_a=args.trans_a, trans_b=args.trans_b)
    return prog, {args.dataflow: prog.prediction.cycles}


def run(args: argparse.Namespace) -> int:
    cfg = make_config(args.array_n, args.sram_rows)
    (m, k, n), given = _shape(args)
    # Compiling checks the shape against the accumulator, the SRAMs and the DRAM window
    # before a single operand byte is allocated.
    program, predicted = _compile(args, cfg, m, k, n)
    a, b = given if given is not None else _random_operands(args, m, k, n)
    with make_backend(args.backend, cfg) as backend:
        c, stats = execute(backend, program, a, b)
    ref = gemm(a.T if args.trans_a else a, b.T if args.trans_b else b).astype(np.int32)
    bit_exact = bool(np.array_equal(c, ref))
    if args.save is not None:
        save_npz(args.save, c)
    t = program.tiling
    report: dict[str, Any] = {
        "m": program.m,
        "k": program.k,
        "n": program.n,
        "trans_a": program.trans_a,
        "trans_b": program.trans_b,
        "array_n": cfg.n,
        "dataflow": program.dataflow.name.lower(),
        "backend": backend.name,
        "seed": None if args.npz is not None else args.seed,
        "bit_exact": bit_exact,
        "cycles": stats.cycles,
        "timing": stats.timing,
        "macs": stats.macs,
        "utilization": stats.utilization(cfg.n),
        "engines": stats.engines,
        "counters": stats.counters,
        "insns": len(program.instructions),
        "insns_retired": stats.insns_retired,
        "dma_read_bytes": stats.dma_read_bytes,
        "dma_write_bytes": stats.dma_write_bytes,
        "errors": {k_: v for k_, v in stats.errors.items() if v},
        "predicted_cycles": predicted,
        "tiling": {
            "m_block": t.m_block,
            "k_tile": t.k_tile,
            "k_chunk": t.k_chunk,
            "n_chunk": t.n_chunk,
            "weights_resident": t.weights_resident,
        },
    }
    if args.save is not None:
        report["saved"] = str(args.save)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_table(report))
    return 0 if bit_exact and stats.ok else 1


def _table(r: dict[str, Any]) -> str:
    util = r["utilization"]
    label = f" ({r['timing']})" if r["cycles"] is not None else ""
    shape = (
        f"{r['m']}x{r['k']}x{r['n']}"
        + (" A^T" if r["trans_a"] else "")
        + (" B^T" if r["trans_b"] else "")
    )
    lines = [
        f"gemm        {shape} on N={r['array_n']}, {r['dataflow'].upper()}, {r['backend']}",
        f"bit_exact   {r['bit_exact']}",
        f"cycles      {r['cycles']}{label}",
        f"macs        {r['macs']}",
        f"utilization {'-' if util is None else f'{util:.1%}'}",
        f"insns       {r['insns_retired']} retired of {r['insns']}",
        f"dma bytes   {r['dma_read_bytes']} read, {r['dma_write_bytes']} written",
        "predicted   " + ", ".join(f"{k}: {v}" for k, v in r["predicted_cycles"].items()),
        "engine      busy      wait_token  wait_bus/array",
    ]
    for eng, c in r["engines"].items():
        io_wait = c.get("wait_bus", c.get("wait_array"))
        cells = ["-" if v is None else str(v) for v in (c["busy"], c["wait_token"], io_wait)]
        lines.append(f"  {eng:<9} {cells[0]:<9} {cells[1]:<11} {cells[2]}")
    lines.append(f"errors      {r['errors'] or 'none'}")
    if "saved" in r:
        lines.append(f"saved       {r['saved']}")
    return "\n".join(lines)
