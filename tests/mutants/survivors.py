"""Why each known surviving yosys mutant survives: equivalent, or a hole that was closed.

Keyed by ``<target>: <mutate command>`` (the sample is seeded, so the same mutants come back
while the generated Verilog is unchanged). A survivor that is not listed here is reported as
unexplained and fails the run: it needs triage (prove it equivalent, or add a test).
"""

from __future__ import annotations

__all__ = ["EXPLAINED"]

EXPLAINED: dict[str, str] = {
    # pe_0_3 is the last PE of row 0 at N=4: hw/array.py wires a PE's token only into its right
    # neighbour, so the last column's tok_out drives nothing (only d_out and the corner PE's
    # flags leave the grid). Any change to it is invisible by construction.
    "core: mutate -mode cnot1 -module cdm_qta_array_n4_i8_a32.core.array -cell pe_0_3 "
    "-port tok_out -portbit 1 -ctrlbit 0": "equivalent: the last column's tok_out has no reader",
}
