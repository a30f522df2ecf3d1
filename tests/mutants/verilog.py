"""Cut generated Verilog into modules, put changed modules back, and edit text exactly once.

The generated file of a target is several ``verilog.convert`` outputs one after the other (the
PE module, the DRAM storage, the design), each a list of ``module ... endmodule`` blocks. A
mutant changes one module, so the flow hands yosys only the modules it may mutate and splices
the one yosys rewrote back into the untouched rest: the DRAM storage (``$readmemh``, which
yosys does not read back) and the protocol monitors stay byte for byte what the genuine
design simulates.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "MutantError",
    "TextEdit",
    "UnchangedMutant",
    "module_spans",
    "replace_modules",
    "resolve",
    "unescape",
]

#: A module header at the start of a line: a plain or an escaped (``\a.b.c ``) identifier.
_MODULE = re.compile(r"^module\s+(\\\S+|[A-Za-z_][\w$]*)", re.M)
_END = re.compile(r"^endmodule\b[^\n]*\n?", re.M)


class MutantError(RuntimeError):
    """A mutant could not be made as specified (the message says what did not match)."""


class UnchangedMutant(MutantError):
    """The mutation leaves the written Verilog as it was (yosys ``mutate`` can pick a bit that
    is already constant, or a port the optimiser folds away): equivalent by construction, so
    it is reported as ``unchanged`` and left out of the kill rate, not counted as an error."""


def unescape(name: str) -> str:
    """The module name as yosys prints it: without the Verilog escape backslash."""
    return name[1:] if name.startswith("\\") else name


def module_spans(text: str) -> dict[str, tuple[int, int]]:
    """``name -> (start, end)`` of every ``module ... endmodule`` block (end after the newline).

    Raises
    ------
    MutantError
        If a module has no ``endmodule`` or a name appears twice.
    """
    spans: dict[str, tuple[int, int]] = {}
    for match in _MODULE.finditer(text):
        end = _END.search(text, match.end())
        if end is None:
            raise MutantError(f"module {match[1]} has no endmodule")
        name = unescape(match[1])
        if name in spans:
            raise MutantError(f"module {name} is defined twice")
        spans[name] = (match.start(), end.end())
    return spans


def resolve(names: Iterable[str], wanted: str) -> str:
    """The one module called ``wanted`` or ending in ``.wanted`` (a path below the top).

    Hand mutants name modules by their place in the hierarchy (``core.accel.compute``), not by
    the top's name, which carries a configuration hash.
    """
    hits = [n for n in names if n == wanted or n.endswith(f".{wanted}")]
    if len(hits) != 1:
        raise MutantError(f"module {wanted!r} matches {len(hits)} modules: {hits[:4]}")
    return hits[0]


_PORT_DECL = re.compile(r"^\s*(?:input|output|inout)\b[^;]*;", re.M)


def interfaces(text: str, names: Iterable[str]) -> str:
    """Port-only stubs of the modules ``names`` of ``text``, for ``read_verilog -lib``.

    yosys must know which ports of an instance are outputs, or ``mutate`` treats every port of
    a submodule as an input; the modules' bodies stay out (the DRAM storage's ``$readmemh``
    would make yosys open its file).
    """
    spans = module_spans(text)
    out = []
    for name in names:
        block = text[slice(*spans[name])]
        header = block[: block.index(";") + 1]
        ports = _PORT_DECL.findall(block[len(header) :])
        out.append("\n".join([header, *ports, "endmodule\n"]))
    return "\n".join(out)


def replace_modules(text: str, new: Mapping[str, str]) -> str:
    """``text`` with each module named in ``new`` replaced by the ``module ... endmodule`` block
    of the same name found in ``new[name]`` (e.g. a file yosys wrote)."""
    spans = module_spans(text)
    edits = []
    for name, source in new.items():
        if name not in spans:
            raise MutantError(f"module {name} is not in the design")
        theirs = module_spans(source)
        if name not in theirs:
            raise MutantError(f"the rewritten source has no module {name}")
        start, end = theirs[name]
        edits.append((*spans[name], source[start:end]))
    out = []
    pos = 0
    for start, end, block in sorted(edits):
        out += [text[pos:start], block]
        pos = end
    return "".join([*out, text[pos:]])


@dataclasses.dataclass(frozen=True)
class TextEdit:
    """Replace the one match of ``pattern`` (a regex) inside ``module`` with ``replacement``.

    For mutations yosys' ``mutate`` cannot express (operand signedness, a narrower register):
    the pattern must match exactly once, so that a change of the generator that moves or
    renames the text makes the mutant fail loudly instead of silently becoming the genuine
    design.
    """

    module: str  #: a module name or a hierarchical path below the top (see :func:`resolve`)
    pattern: str
    replacement: str

    def apply(self, text: str) -> str:
        spans = module_spans(text)
        name = resolve(spans, self.module)
        start, end = spans[name]
        body, count = re.subn(self.pattern, self.replacement, text[start:end])
        if count != 1:
            raise MutantError(
                f"text edit {self.pattern!r} matches {count} times in module {name}, not once"
            )
        return text[:start] + body + text[end:]
