"""The cycle formulas agree with each other: closed forms, per-tile model, per-cycle model."""

from __future__ import annotations

import numpy as np
import pytest

from cdm_qta.hw.timing import (
    OsTile,
    WsTile,
    os_cycles,
    program_cycles,
    schedule,
    schedule_by_cycle,
    ws_cycles,
)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 64])
@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("m", [1, 4, 8, 20])
@pytest.mark.parametrize("tiles", [1, 2, 5])
def test_ws_closed_form_matches_models(n: int, k: int, m: int, tiles: int) -> None:
    if k > n:
        with pytest.raises(ValueError, match="weight rows"):
            ws_cycles(n, k, m, tiles)
        return
    program = [WsTile(k, m)] * tiles
    assert program_cycles(program, n) == ws_cycles(n, k, m, tiles)
    assert schedule(program, n) == schedule_by_cycle(program, n)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 64])
@pytest.mark.parametrize("k", [1, 3, 8, 70])
@pytest.mark.parametrize("tiles", [1, 2, 5])
def test_os_closed_form_matches_models(n: int, k: int, tiles: int) -> None:
    program = [OsTile(k)] * tiles
    assert program_cycles(program, n) == os_cycles(n, k, tiles)
    assert schedule(program, n) == schedule_by_cycle(program, n)


@pytest.mark.parametrize("seed", range(40))
def test_random_mixed_programs_agree(seed: int) -> None:
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 10))
    program = []
    for _ in range(int(rng.integers(1, 8))):
        if rng.random() < 0.5:
            program.append(WsTile(int(rng.integers(1, n + 1)), int(rng.integers(1, 3 * n + 2))))
        else:
            program.append(OsTile(int(rng.integers(1, 3 * n + 2))))
    assert schedule(program, n) == schedule_by_cycle(program, n)


def test_ws_to_os_waits_n_cycles_after_last_input_row() -> None:
    n = 8
    ws, os_ = schedule([WsTile(4, 10), OsTile(5)], n)
    assert os_.a_accepts[0] == ws.a_accepts[-1] + n


def test_os_to_ws_has_no_turnaround() -> None:
    n = 8
    os_, ws = schedule([OsTile(5), WsTile(4, 10)], n)
    assert ws.b_accepts[0] == os_.b_accepts[-1] + 1
    assert ws.a_accepts[0] == ws.b_accepts[-1] + 1


def test_bad_tiles_are_rejected() -> None:
    with pytest.raises(ValueError, match="k must be a positive integer, not 0"):
        WsTile(0, 3)
    with pytest.raises(ValueError, match="m must be a positive integer, not 0"):
        WsTile(3, 0)
    with pytest.raises(ValueError, match="weight rows"):
        schedule([WsTile(9, 3)], 8)
