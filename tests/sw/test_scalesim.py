"""SCALE-Sim's fold formulas on hand-computed cases."""

from __future__ import annotations

import pytest

from cdm_qta.sw.scalesim import fold_counts, gemm_cycles, os_cycles, utilization, ws_cycles


def test_one_fold_each() -> None:
    # WS: ceil(64/64) * ceil(64/64) * (2*64 + 64 + 100 - 2) = 290
    assert ws_cycles(100, 64, 64, 64) == 290
    # OS: ceil(64/64) * ceil(64/64) * (100 + 64 + 64 - 2) = 226
    assert os_cycles(64, 100, 64, 64) == 226


def test_several_folds_on_a_rectangular_array() -> None:
    # M=10, K=130, N=70 on R=32 rows, C=16 columns.
    # WS: ceil(130/32)=5 * ceil(70/16)=5 * (64 + 16 + 10 - 2 = 88) = 2200
    assert ws_cycles(10, 130, 70, 32, 16) == 2200
    assert fold_counts("ws", 10, 130, 70, 32, 16) == 25
    # OS: ceil(10/32)=1 * 5 * (130 + 32 + 16 - 2 = 176) = 880
    assert os_cycles(10, 130, 70, 32, 16) == 880
    assert fold_counts("OS", 10, 130, 70, 32, 16) == 5
    assert gemm_cycles("WS", 10, 130, 70, 32, 16) == 2200


def test_utilization_and_errors() -> None:
    assert utilization("os", 64, 100, 64, 64) == pytest.approx(64 * 100 * 64 / (64 * 64 * 226))
    with pytest.raises(ValueError, match="m must be a positive integer, not 0"):
        ws_cycles(0, 1, 1, 4)
    with pytest.raises(ValueError, match="dataflow must be ws or os"):
        gemm_cycles("is", 1, 1, 1, 4)
