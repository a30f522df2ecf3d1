"""`qta gemm`: end to end through DRAM on the golden back end; clear errors for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cdm_qta.golden.gemm import gemm
from cdm_qta.sw.cli import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(["gemm", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("dataflow", ["ws", "os", "auto"])
def test_json_report(capsys: pytest.CaptureFixture[str], dataflow: str) -> None:
    code, r = run_json(
        capsys,
        "--m",
        "9",
        "--k",
        "13",
        "--n",
        "6",
        "--trans-b",
        "--array-n",
        "4",
        "--dataflow",
        dataflow,
        "--seed",
        "5",
    )
    assert code == 0
    assert r["bit_exact"] is True
    assert r["macs"] == 9 * 13 * 6
    assert r["cycles"] > 0 and r["timing"] == "model"
    assert r["utilization"] == pytest.approx(r["macs"] / (r["cycles"] * 16))
    assert set(r["engines"]) == {"load", "compute", "store"}
    assert {"busy", "wait_token", "wait_array"} == set(r["engines"]["compute"])
    assert set(r["counters"]) >= {"cycles", "load_wait_token", "store_wait_bus"}
    assert r["errors"] == {} and r["insns_retired"] == r["insns"]
    assert r["trans_b"] and not r["trans_a"] and r["seed"] == 5
    # Facts that do not come from the cycle model: every C element leaves as one INT32, every
    # operand byte is read at least once, every instruction retires.
    assert r["dma_write_bytes"] == 9 * 6 * 4
    assert r["dma_read_bytes"] >= 9 * 13 + 13 * 6
    if dataflow == "auto":
        assert set(r["predicted_cycles"]) == {"ws", "os"}
    else:
        assert r["dataflow"] == dataflow


def test_table_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gemm", "--m", "5", "--k", "4", "--n", "3", "--array-n", "2"]) == 0
    out = capsys.readouterr().out
    for word in ("bit_exact   True", "cycles", "(model)", "utilization", "compute", "errors"):
        assert word in out


def test_npz_in_and_save_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (7, 5), dtype=np.int8)  # stored K x M: --trans-a
    b = rng.integers(-128, 128, (7, 3), dtype=np.int8)
    src, out = tmp_path / "in.npz", tmp_path / "c.npz"
    np.savez(src, a=a, b=b)
    code, r = run_json(capsys, "--npz", str(src), "--trans-a", "--save", str(out), "--array-n", "4")
    assert code == 0 and r["bit_exact"] and (r["m"], r["k"], r["n"]) == (5, 7, 3)
    with np.load(out) as saved:
        assert saved["c"].dtype == np.int32
        np.testing.assert_array_equal(saved["c"], gemm(a.T, b))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "in.npz"], "no temp files"


def error_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["gemm", *argv]) == 2
    return capsys.readouterr().err


def test_npz_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no such file" in error_of(capsys, "--npz", str(tmp_path / "nope.npz"))
    only_a = tmp_path / "a.npz"
    np.savez(only_a, a=np.zeros((2, 2), np.int8))
    assert "missing array(s) ['b']" in error_of(capsys, "--npz", str(only_a))
    wide = tmp_path / "wide.npz"
    np.savez(wide, a=np.zeros((2, 2), np.int16), b=np.zeros((2, 2), np.int8))
    assert "'a' must be a 2-D int8 array" in error_of(capsys, "--npz", str(wide))
    flat = tmp_path / "flat.npz"
    np.savez(flat, a=np.zeros((2, 2), np.int8), b=np.zeros(2, np.int8))
    assert "'b' must be a 2-D int8 array" in error_of(capsys, "--npz", str(flat))
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.zeros((2, 3), np.int8), b=np.zeros((2, 2), np.int8))
    assert "inner dimensions differ" in error_of(capsys, "--npz", str(bad), "--array-n", "2")
    good = tmp_path / "good.npz"
    np.savez(good, a=np.zeros((2, 3), np.int8), b=np.zeros((3, 2), np.int8))
    assert "--m 4 disagrees" in error_of(capsys, "--npz", str(good), "--m", "4")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    assert "not a readable .npz" in error_of(capsys, "--npz", str(garbage))
    single = tmp_path / "single.npz"
    with single.open("wb") as f:
        np.save(f, np.zeros(3))
    assert "not an .npz archive" in error_of(capsys, "--npz", str(single))


def test_shape_errors_before_running(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--m must be at least 1" in error_of(capsys, "--m", "0", "--k", "2", "--n", "2")
    assert "required unless --npz" in error_of(capsys, "--m", "3")
    err = error_of(capsys, "--m", "1", "--k", "140000", "--n", "1", "--array-n", "2")
    assert "can overflow the INT32 accumulator" in err
    err = error_of(capsys, "--m", "4", "--k", "4", "--n", "4", "--array-n", "4", "--sram-rows", "1")
    assert "double buffering" in err
    # Shapes far too large: a one-line error before any operand is made (no 149 GiB array).
    err = error_of(capsys, "--m", "100000", "--k", "200000", "--n", "10")
    assert "can overflow the INT32 accumulator" in err and "Traceback" not in err
    err = error_of(capsys, "--m", "100000", "--k", "100000", "--n", "10")
    assert "bytes of DRAM" in err and err.count("\n") == 1


def test_rtl_backend_missing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "cdm_qta.sw.rtl_backend", None)  # as if not installed
    err = error_of(capsys, "--m", "2", "--k", "2", "--n", "2", "--backend", "icarus")
    assert "cdm_qta.sw.rtl_backend" in err and "--backend golden" in err
