"""The spawned call that runs FP32 beside INT8: answers, raises, dies, stops, all bounded."""

from __future__ import annotations

import os
import time

import pytest

from cdm_qta.sw.train.background import BackgroundCall


def test_the_answer_comes_back() -> None:
    with BackgroundCall(sum, [1, 2, 3]) as call:
        assert call.result() == 6


def test_the_call_s_own_exception_is_raised_here() -> None:
    with BackgroundCall(int, "not a number") as call:
        with pytest.raises(ValueError, match="invalid literal"):
            call.result()


def test_a_process_that_dies_without_an_answer_is_an_error_not_a_hang() -> None:
    with BackgroundCall(os._exit, 3) as call:
        with pytest.raises(RuntimeError, match="exit code 3"):
            call.result()


def test_cancel_stops_a_running_call() -> None:
    t0 = time.perf_counter()
    with BackgroundCall(time.sleep, 60):
        pass  # leaving the block terminates it
    assert time.perf_counter() - t0 < 30
