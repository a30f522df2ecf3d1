"""Emit the array core as Verilog plus a JSON description of its configuration.

One entry point for nox, the testbenches and users: ``qta generate --n 64 --out build/gen`` or
``python -m cdm_qta.hw.generate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from .config import AcceleratorConfig, ArrayConfig
from .files import write_atomic
from .timing import latency

__all__ = [
    "add_parser",
    "describe",
    "emit",
    "generate",
    "generate_accelerator",
    "main",
    "run",
    "source_fingerprint",
]


class PortsOnly(wiring.Component):
    """A top level that only has ports: ``inner`` one level down, every member passed through.

    Verilator makes the top module's signals public for cocotb (``--public-depth 1``), which
    keeps them from being optimised and made the skew registers of an N=32 array cost 3x its
    simulation speed; behind this wrapper only the ports are public. Port names are unchanged.
    """

    def __init__(self, inner: wiring.Component) -> None:
        self._inner = inner
        super().__init__(dict(inner.signature.members))

    def elaborate(self, platform: object) -> Module:
        m = Module()
        m.submodules.core = self._inner
        outer = self.signature.flatten(self)
        inner = self._inner.signature.flatten(self._inner)
        for (_, member, mine), (_, _, theirs) in zip(outer, inner, strict=True):
            if member.flow == Out:
                m.d.comb += mine.eq(theirs)
            else:
                m.d.comb += theirs.eq(mine)
        return m


def describe(cfg: ArrayConfig) -> dict[str, Any]:
    """What a consumer of the Verilog needs to know without reading it."""
    return {
        "config": cfg.to_dict(),
        "macs_per_cycle": cfg.macs_per_cycle,
        "latency_cycles": latency(cfg.n),
        "ports": {
            "clk": "clock, rising edge",
            "rst": "synchronous reset, active high",
            "a__payload/a__valid/a__ready": "left-edge stream (WS input rows, OS columns of A)",
            "b__payload/b__valid/b__ready": "top-edge stream (WS weight rows, OS rows of B)",
            "o__payload/o__valid": "output rows, no back-pressure",
            "busy": "accepted beats still in flight",
            "error": "sticky error bits: [0] weight_rows, [1] os_last_mismatch",
        },
        "beat_fields_lsb_first": {
            "data": f"{cfg.n} x int{cfg.operand_bits}, lane 0 lowest",
            "lanes": f"{cfg.n.bit_length()} bits, lanes >= this count read as zero",
            "mode": "1 bit, 0 = WS, 1 = OS",
            "last": "1 bit, closes a tile",
        },
        "output_fields_lsb_first": {
            "data": f"{cfg.n} x int{cfg.acc_bits}, lane 0 lowest",
            "last": "1 bit, closes a tile",
        },
    }


def source_fingerprint(extra: Sequence[Path] = ()) -> str:
    """SHA-256 of every gateware source file (and ``extra`` ones, e.g. a test top's):
    generated Verilog is reused while it matches."""
    digest = hashlib.sha256()
    for path in [*sorted(Path(__file__).parent.glob("*.py")), *map(Path, extra)]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def emit(
    out_dir: Path,
    module: str,
    description: dict[str, Any],
    convert: Callable[[], str],
    *,
    extra_sources: Sequence[Path] = (),
) -> Path:
    """Write ``<module>.v`` (from ``convert()``) and ``<module>.json``; return the ``.v`` path.

    Converting a 64 x 64 design takes tens of seconds, so when the JSON beside an existing
    ``.v`` records the same description and gateware fingerprint, the file is kept as it is
    (and keeps its timestamp, so a simulator build is not redone either).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    v_path = out_dir / f"{module}.v"
    j_path = v_path.with_suffix(".json")
    desc = {**description, "module": module, "fingerprint": source_fingerprint(extra_sources)}
    text = json.dumps(desc, indent=2) + "\n"
    if v_path.exists() and j_path.exists() and j_path.read_text() == text:
        return v_path
    write_atomic(v_path, convert())
    write_atomic(j_path, text)
    return v_path


def generate(cfg: ArrayConfig, out_dir: Path) -> Path:
    """Write ``<module>.v`` and ``<module>.json`` into ``out_dir``; return the Verilog path."""

    def convert() -> str:
        from amaranth.back import verilog

        from .array import pe_verilog
        from .core import ArrayCore

        top = PortsOnly(ArrayCore(cfg))
        return pe_verilog(cfg) + verilog.convert(top, name=cfg.module_name, emit_src=False)

    return emit(out_dir, cfg.module_name, describe(cfg), convert)


def generate_accelerator(cfg: AcceleratorConfig, out_dir: Path) -> Path:
    """Write the whole accelerator as ``<module>.v`` plus its configuration as JSON."""
    from .regs import COUNTERS, ERRORS

    def convert() -> str:
        from amaranth.back import verilog

        from .accelerator import Accelerator
        from .array import pe_verilog

        top = PortsOnly(Accelerator(cfg))
        return pe_verilog(cfg.array) + verilog.convert(top, name=cfg.module_name, emit_src=False)

    desc = {
        "config": cfg.to_dict(),
        "ports": {
            "clk/rst": "clock (rising edge), synchronous active-high reset",
            "s_axil__*": "AXI4-Lite slave, registers of cdm_qta.hw.regs",
            "m_axi__*": f"AXI4 master, {8 * cfg.dram_bus_bytes}-bit data, to DRAM",
            "busy": "an instruction is queued or running",
        },
        "status_errors": list(ERRORS),
        "counters": list(COUNTERS),
    }
    return emit(out_dir, cfg.module_name, desc, convert)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate", help="emit the array core or the whole accelerator as Verilog (+ JSON)"
    )
    defaults = ArrayConfig()
    parser.add_argument("--n", type=int, default=defaults.n, help="array size N (default 64)")
    parser.add_argument(
        "--top",
        choices=["array", "accelerator"],
        default="array",
        help="array: the PE array with its edges; accelerator: SRAMs, DMA, controller too "
        "(the paper's SRAM depths, a 4N-byte DRAM bus)",
    )
    parser.add_argument("--operand-bits", type=int, default=defaults.operand_bits)
    parser.add_argument("--acc-bits", type=int, default=defaults.acc_bits)
    parser.add_argument("--out", type=Path, default=Path("build/gen"), help="output folder")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    cfg = ArrayConfig(n=args.n, operand_bits=args.operand_bits, acc_bits=args.acc_bits)
    start = time.perf_counter()
    if args.top == "accelerator":
        accel = dataclasses.replace(AcceleratorConfig.scaled(args.n), array=cfg)
        path = generate_accelerator(accel, args.out)
    else:
        path = generate(cfg, args.out)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    print(f"wrote {path.with_suffix('.json')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdm_qta.hw.generate")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["generate", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
