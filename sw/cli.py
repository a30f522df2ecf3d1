"""The `qta` command: one entry point for generating RTL, running jobs and benchmarks.

Each sub-command lives in its own module and registers itself through ``add_parser``; the
modules are imported lazily so that ``qta trace`` does not pay for Amaranth or cocotb, and
``qta generate`` does not pay for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import CliError

__all__ = ["main"]

# sub-command -> module that defines `add_parser(subparsers)` and `run(args) -> int`
COMMANDS: dict[str, str] = {
    "generate": "cdm_qta.hw.generate",
    "demo": "cdm_qta.sw.demo",
    "bench": "cdm_qta.sw.bench",
    "trace": "cdm_qta.sw.trace",
    "gemm": "cdm_qta.sw.gemm_cmd",
    "synth": "cdm_qta.hw.synth",
    "table1": "cdm_qta.sw.table1",
    "train": "cdm_qta.sw.train.command",
    "perf": "cdm_qta.sw.perf",
    "fig6": "cdm_qta.sw.fig6",
    "sweep": "cdm_qta.sw.sweep",
    "report": "cdm_qta.sw.report",
}


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qta", description="CDM-QTA: INT8 WS/OS training accelerator, RTL and tools."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = [a for a in argv if not a.startswith("-")][:1]
    for name, module in COMMANDS.items():
        if wanted and wanted[0] in COMMANDS and wanted[0] != name:
            # Only import the chosen command; list the others without loading them.
            sub.add_parser(name, help=f"(see `qta {name} --help`)")
            continue
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (CliError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"qta {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
