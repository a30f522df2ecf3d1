"""Table I: peak TOPS, area sums and the steady-state activity behind the power figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.sram_table import load_sram_table
from cdm_qta.hw.synth import SCHEMA, SynthResults
from cdm_qta.sw.cli import main
from cdm_qta.sw.table1 import PAPER, steady_state_counts, table1


def _doc() -> dict:
    def d(block: str, n: int | None, area: float) -> dict:
        return {
            "block": block,
            "n": n,
            "flat": False,
            "area_um2": area,
            "flops": area / 15,
            "leakage_nw": area * 20,
        }

    designs = {"pe": d("pe", None, 1200.0)}
    for n in (2, 4, 8):
        designs[f"array_n{n}_hier"] = d("array", n, 1300.0 * n * n)
        designs[f"accelerator_n{n}_hier"] = d("accelerator", n, 1300.0 * n * n + 2e4 * n + 1e5)
    return {"schema": SCHEMA, "designs": designs, "tool": {"name": "test"}}


def test_table1_sums_logic_and_sram_and_says_what_is_extrapolated() -> None:
    doc = table1(64, synth=SynthResults(_doc()))
    ours = doc["ours"]
    assert ours["peak_tops"] == round(2 * 64 * 64 * 400e6 / 1e12, 2) == PAPER["peak_tops"]
    logic = (1300.0 * 64 * 64 + 2e4 * 64 + 1e5) / 1e6
    sram = sum(load_sram_table().buffers_area(AcceleratorConfig.scaled(64)).values()) / 1e6
    assert doc["area_breakdown_mm2"]["logic"] == pytest.approx(logic, abs=1e-3)
    assert doc["area_breakdown_mm2"]["logic_extrapolated"] is True
    assert ours["area_mm2"] == pytest.approx(logic + sram, abs=0.01)
    assert ours["tops_per_mm2"] == pytest.approx(ours["peak_tops"] / ours["area_mm2"], rel=0.01)
    assert ours["tops_per_w"] == pytest.approx(ours["peak_tops"] / ours["power_w"], rel=0.02)
    power = doc["power_breakdown_w"]
    assert sum(v for k, v in power.items() if k != "dram") == pytest.approx(
        ours["power_w"], abs=0.01
    )
    assert power["dram"] == 0


def test_steady_state_counts_per_cycle() -> None:
    c = steady_state_counts(8, utilization=0.5, tile_rows=16, accumulate=1.0, cycles=100)
    assert c["macs"] == 50 * 64
    assert c["input_buffer_read_bytes"] == 50 * 8
    assert c["weight_buffer_read_bytes"] == 50 * 8 * 8 / 16
    assert c["output_buffer_write_bytes"] == c["output_buffer_read_bytes"] == 50 * 32
    assert c["adds"] == 50 * 8
    os = steady_state_counts(8, dataflow="os", tile_rows=16, accumulate=0.0, cycles=100)
    assert os["weight_buffer_read_bytes"] == 100 * 8
    assert os["output_buffer_write_bytes"] == 100 * 8 / 16 * 32
    assert os["output_buffer_read_bytes"] == 0
    with pytest.raises(ValueError, match="utilization"):
        steady_state_counts(8, utilization=2)


def test_cli_prints_the_table_and_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_doc()))
    assert main(["table1", "--synth", str(path), "--n", "8"]) == 0
    out = capsys.readouterr().out
    assert "Performance (TOPS)" in out and "15.07" in out
    assert main(["table1", "--synth", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qta table1: error: no synthesis results") and "\n" not in err
