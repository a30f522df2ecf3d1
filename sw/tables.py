"""Plain fixed-width tables for terminal output (no dependency): benchmarks, demo, reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["format_table"]


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as a table of ``columns`` (missing cells blank, ``None`` as ``-``)."""

    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    text = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)) for t in text]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])
