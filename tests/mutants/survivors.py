"""Why each known surviving yosys mutant survives: equivalent, or a hole that was closed.

Keyed by ``<target>: <mutate command>`` (the sample is seeded, so the same mutants come back
while the generated Verilog is unchanged). A survivor that is not listed here is reported as
unexplained and fails the run: it needs triage (prove it equivalent, or add a test).
"""

from __future__ import annotations

__all__ = ["EXPLAINED"]

EXPLAINED: dict[str, str] = {}
