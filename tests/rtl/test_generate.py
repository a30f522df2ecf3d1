"""Generated Verilog passes `verilator --lint-only` (default warnings, WIDTH excepted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdm_qta.hw.config import ArrayConfig


@pytest.mark.sim
@pytest.mark.parametrize("n", [1, 3, 8])
def test_verilator_lint_is_clean(n: int, tmp_path: Path) -> None:
    from regression import require_simulator

    from cdm_qta.hw.generate import generate
    from cdm_qta.tb.lint import lint

    require_simulator("verilator")
    result = lint(generate(ArrayConfig(n=n), tmp_path))
    assert result.returncode == 0, (result.stdout + result.stderr)[:4000]
