"""The CACTI SRAM table: loading, lookups, buffer mappings, CACTI input and output handling."""

from __future__ import annotations

import pytest

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.sram_table import (
    REFERENCE_SHAPES,
    SramTable,
    cacti_config,
    design_shapes,
    load_sram_table,
    parse_cacti_output,
)


def test_table_has_every_macro_the_scaled_configs_need() -> None:
    table = load_sram_table()
    assert "CACTI 7" in table.doc["source"] and table.doc["derivation"]["temperature_K"] == 300
    for shape in [*design_shapes([2, 4, 8, 16, 32, 64, 128]), *REFERENCE_SHAPES]:
        m = table.macro(*shape)
        assert m.area_mm2 > 0 and m.read_pj > 0 and m.write_pj > 0 and m.vdd == 1.1


def test_paper_buffers_under_each_mapping() -> None:
    table = load_sram_table()
    cfg = AcceleratorConfig.scaled(64)  # 512 KB, 512 KB, 1 MB
    pp = table.buffer_macros(cfg)
    assert [(m.capacity_bytes, m.row_bytes, m.ports) for m in pp["input_buffer"]] == [
        (256 * 1024, 64, "1rw")
    ] * 2
    assert [(m.capacity_bytes, m.ports) for m in pp["output_buffer"]] == [(512 * 1024, "1r1w")] * 2
    rtl = table.buffer_macros(cfg, "rtl_ports")
    assert [(m.capacity_bytes, m.ports) for m in rtl["output_buffer"]] == [(1024 * 1024, "2r1w")]
    areas = {m: sum(table.buffers_area(cfg, m).values()) for m in SramTable.MAPPINGS}
    assert areas["single_port"] < areas["pingpong"] < areas["rtl_ports"]
    with pytest.raises(ValueError, match="mapping must be one of"):
        table.buffer_macros(cfg, "dual")


def test_cacti_agrees_with_horowitz_per_64_bits() -> None:
    """CACTI (1.1 V) scaled by V^2 to Horowitz's 0.9 V gives 41-63 % of his 10/20/100 pJ (his
    are caches with tags; ours tagless scratchpads): the same order of magnitude."""
    table = load_sram_table()
    for size, horowitz in ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0)):
        pj = table.macro(size, 8, "1rw").read_pj * (0.9 / 1.1) ** 2
        assert 0.4 * horowitz < pj < 0.7 * horowitz, (size, pj)


def test_missing_macro_names_what_exists() -> None:
    with pytest.raises(KeyError, match="no 1rw SRAM of 3 bytes"):
        load_sram_table().macro(3, 1, "1rw")


def test_cacti_config_lines() -> None:
    text = cacti_config(524288, 256, "1r1w")
    lines = text.splitlines()
    for line in (
        "-size (bytes) 524288",
        "-block size (bytes) 256",
        "-output/input bus width 2048",
        "-read-write port 0",
        "-exclusive read port 1",
        "-exclusive write port 1",
        "-technology (u) 0.045",
        '-Data array cell type - "itrs-lstp"',
        '-cache type "ram"',
        "-operating temperature (K) 300",
        '-Optimize ED or ED^2 (ED, ED^2, NONE): "ED^2"',
    ):
        assert line in lines, line
    with pytest.raises(ValueError, match="ports must be one of"):
        cacti_config(1024, 8, "3rw")


CACTI_SNIPPET = """
    Access time (ns): 2.40537
    Cycle time (ns):  3.44986
    Total dynamic read energy per access (nJ): 0.199379
    Total dynamic write energy per access (nJ): 0.228259
    Total leakage power of a bank (mW): 0.00443795
    Cache height x width (mm): 1.0 x 1.03866
"""


def test_cacti_output_is_parsed() -> None:
    got = parse_cacti_output(CACTI_SNIPPET)
    assert got["access_ns"] == 2.40537 and got["cycle_ns"] == 3.44986
    assert got["read_nj"] == 0.199379 and got["leakage_mw"] == 0.00443795
    assert got["area_mm2"] == pytest.approx(1.03866)
    with pytest.raises(ValueError, match="access_ns"):
        parse_cacti_output("Floating point exception")
