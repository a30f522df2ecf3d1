"""Energy model: hand-computed arithmetic, voltage scaling, the data file's citations, counts."""

from __future__ import annotations

import pytest

from cdm_qta.hw.config import AcceleratorConfig, ArrayConfig
from cdm_qta.hw.sram_table import SramMacro
from cdm_qta.sw.energy import (
    BUFFERS,
    COUNTS,
    EnergyModel,
    array_register_bytes,
    load_figures,
    normalize_counts,
    pe_register_bits,
    scale_dynamic,
    scale_leakage,
    structural_flops,
)

FIGURES = {
    "figures": {
        "mult_int8": {"pj": 0.2, "vdd": 1.0, "source": "test"},
        "add_int32": {"pj": 0.1, "vdd": 1.0, "source": "test"},
        "dram_per_byte": {"pj": 20.0, "vdd": None, "source": "test"},
        "flop_clock": {"pj": 0.01, "vdd": 1.0, "source": "test"},
        "register_write_per_byte": {"pj": 0.04, "vdd": 1.0, "source": "test"},
    }
}


def _macro(row: int, read: float, write: float, leak: float) -> SramMacro:
    return SramMacro(1024, row, "1rw", 0.1, read, write, leak, 1.0, 1.0, 1.0)


def _model(vdd: float = 1.0, clock_mhz: float = 500.0) -> EnergyModel:
    sram = {
        "input_buffer": [_macro(8, 16.0, 24.0, 1.0)] * 2,
        "weight_buffer": [_macro(8, 8.0, 8.0, 1.0)] * 2,
        "output_buffer": [_macro(32, 64.0, 96.0, 2.0)],
    }
    return EnergyModel(
        FIGURES,
        sram,
        flops=100,
        logic_leakage_mw=5.0,
        vdd=vdd,
        clock_mhz=clock_mhz,
        logic_leakage_vdd=1.0,
    )


def test_energy_is_counts_times_figures_by_hand() -> None:
    counts = {
        "macs": 1000,
        "adds": 10,
        "input_buffer_read_bytes": 80,
        "input_buffer_write_bytes": 8,
        "weight_buffer_read_bytes": 16,
        "output_buffer_read_bytes": 32,
        "output_buffer_write_bytes": 64,
        "dram_read_bytes": 100,
        "dma_write_bytes": 50,  # the hardware counter's name for dram_write_bytes
        "register_bytes": 500,
        "cycles": 2000,
        "insns_retired": 7,  # a hardware counter without energy: ignored
    }
    r = _model().energy(counts)
    b = r.breakdown
    assert b["mac"] == pytest.approx(1000 * 0.3)
    assert b["add"] == pytest.approx(1.0)
    assert b["input_buffer_read"] == pytest.approx(80 * 2.0)
    assert b["input_buffer_write"] == pytest.approx(8 * 3.0)
    assert b["weight_buffer_read"] == pytest.approx(16 * 1.0)
    assert b["output_buffer_read"] == pytest.approx(32 * 2.0)
    assert b["output_buffer_write"] == pytest.approx(64 * 3.0)
    assert b["dram"] == pytest.approx(150 * 20.0)
    assert b["register"] == pytest.approx(500 * 0.04)
    assert b["clock"] == pytest.approx(2000 * 100 * 0.01)
    seconds = 2000 / 500e6
    assert r.seconds == pytest.approx(seconds)
    assert b["leakage_logic"] == pytest.approx(5e-3 * seconds * 1e12)
    # 2 input + 2 weight + 1 output macro leak 1 + 1 + 1 + 1 + 2 mW
    assert b["leakage_sram"] == pytest.approx(6e-3 * seconds * 1e12)
    assert r.total_pj == pytest.approx(sum(b.values()))
    assert r.on_chip_pj == pytest.approx(r.total_pj - 3000.0)
    assert r.power_w == pytest.approx(r.total_pj * 1e-12 / seconds)
    assert r.tops_per_w == pytest.approx(2000 / (r.total_pj * 1e-12) / 1e12)
    assert r.to_dict()["total_pj"] == pytest.approx(r.total_pj, abs=1e-3)


def test_dynamic_energy_scales_with_v_squared_leakage_with_v() -> None:
    assert scale_dynamic(1.0, 0.9, 1.1) == pytest.approx((1.1 / 0.9) ** 2)
    assert scale_dynamic(5.0, None, 0.7) == 5.0
    assert scale_leakage(2.0, 1.1, 0.55) == pytest.approx(1.0)
    low, high = (
        _model(vdd=0.8).energy({"macs": 1, "dram_read_bytes": 1}),
        _model(1.2).energy({"macs": 1, "dram_read_bytes": 1}),
    )
    assert high.breakdown["mac"] / low.breakdown["mac"] == pytest.approx((1.2 / 0.8) ** 2)
    assert high.breakdown["dram"] == low.breakdown["dram"], "DRAM is off-chip: not scaled"
    one = {"cycles": 1000}
    ratio = _model(1.2).energy(one).breakdown["leakage_sram"]
    assert ratio / _model(0.8).energy(one).breakdown["leakage_sram"] == pytest.approx(1.5)


def test_counts_are_checked() -> None:
    assert set(normalize_counts({})) == set(COUNTS)
    with pytest.raises(ValueError, match="unknown energy count 'mac'"):
        normalize_counts({"mac": 1})
    with pytest.raises(ValueError, match="non-negative"):
        normalize_counts({"macs": -1})
    with pytest.raises(ValueError, match="given twice"):
        normalize_counts({"dram_read_bytes": 1, "dma_read_bytes": 1})
    with pytest.raises(ValueError, match="vdd must be between"):
        _model(vdd=5.0)


def test_data_file_cites_every_figure_with_its_voltage() -> None:
    doc = load_figures()
    for name in ("mult_int8", "add_int32", "dram_per_byte", "flop_clock"):
        fig = doc["figures"][name]
        assert fig["source"] and "vdd" in fig, name
    assert doc["figures"]["mult_int8"] == {**doc["figures"]["mult_int8"], "pj": 0.2, "vdd": 0.9}
    assert doc["figures"]["add_int32"]["pj"] == 0.1
    assert "V^2" in doc["voltage_scaling"]["dynamic"]


def test_default_model_of_the_paper_design() -> None:
    cfg = AcceleratorConfig.scaled(64)
    model = EnergyModel.for_accelerator(cfg)
    assert set(model.sram) == set(BUFFERS)
    assert [m.capacity_bytes for m in model.sram["output_buffer"]] == [512 * 1024] * 2
    assert model.flops == structural_flops(cfg.array)
    assert any("no synthesis results" in n for n in model.notes)
    # Horowitz at 0.9 V scaled to 1.1 V: (0.2 + 0.1) * (1.1/0.9)^2 pJ per MAC.
    r = model.energy({"macs": 1})
    assert r.breakdown["mac"] == pytest.approx(0.3 * (1.1 / 0.9) ** 2)


def test_register_counts_follow_the_pe() -> None:
    assert pe_register_bits(ArrayConfig()) == 94  # what synthesis of the PE finds
    assert array_register_bytes(10) == 50
    n = 4
    assert structural_flops(ArrayConfig(n=n)) == 16 * 94 + 6 * (12 + 8 + 32)
