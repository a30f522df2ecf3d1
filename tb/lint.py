"""Run `verilator --lint-only` over generated Verilog (`python -m cdm_qta.tb.lint DIR`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .toolchain import prepare_verilator

__all__ = ["lint"]


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    """Lint one Verilog file with Verilator's default warnings, which must all be clean.

    Except WIDTH: yosys's Verilog backend (behind Amaranth) relies on Verilog's implicit
    widening of operands, e.g. ``wrow == 1'h1``, which is well defined. (``-Wall`` adds style
    warnings such as PROCASSINIT that Amaranth's register initialisers trigger by design.)
    """
    exe = prepare_verilator()
    top = path.stem
    return subprocess.run(
        [exe, "--lint-only", "-Wno-WIDTH", "--top-module", top, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "build/gen")
    files = sorted(folder.glob("*.v"))
    if not files:
        print(f"no Verilog in {folder}", file=sys.stderr)
        return 2
    status = 0
    for path in files:
        result = lint(path)
        verdict = "ok" if result.returncode == 0 else "FAILED"
        print(f"verilator --lint-only {path}: {verdict}")
        if result.returncode:
            print((result.stdout + result.stderr)[:4000], file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
