"""`qta sweep`: each point is a `qta perf` total plus the synthesis and CACTI areas, the Pareto
front is right on a constructed set, the executors and their errors."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from pathlib import Path

import pytest

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.sram_table import load_sram_table
from cdm_qta.hw.synth import SCHEMA, SynthResults
from cdm_qta.sw import perf, sweep
from cdm_qta.sw.cli import main

GEMMS = [
    perf.make_gemm("x", "linear", "forward", 64, 40, 24, trans_b=True),
    perf.make_gemm("y", "lora", "forward", 77, 32, 4, trans_b=True),
]


def _synth(path: Path) -> Path:
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
    path.write_text(json.dumps({"schema": SCHEMA, "designs": designs, "tool": {"name": "t"}}))
    return path


def _workload(path: Path) -> Path:
    lines = [json.dumps({"record": "trace", "model": "test", "mode": "lora"})]
    lines += [json.dumps({"record": "gemm", **dataclasses.asdict(g)}) for g in GEMMS]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pareto_front_on_a_constructed_set() -> None:
    pts = [
        {"a": 1, "t": 10},  # front: smallest area
        {"a": 2, "t": 5},  # front
        {"a": 3, "t": 5},  # beaten by (2, 5)
        {"a": 4, "t": 1},  # front: fastest
        {"a": 5, "t": 2},  # beaten by (4, 1)
        {"a": 2, "t": 5},  # equal to a front point: kept
        {"a": 1.5, "t": 11},  # beaten by (1, 10)
    ]
    assert sweep.pareto_front(pts, "a", "t") == [0, 1, 3, 5]


def test_point_config_scales_depths() -> None:
    cfg = sweep.point_config(8, 0.5)
    base = AcceleratorConfig.scaled(8)
    assert (cfg.input_rows, cfg.weight_rows, cfg.output_rows) == (4096, 4096, 2048)
    assert cfg.n == base.n and cfg.dram_bus_bytes == base.dram_bus_bytes
    with pytest.raises(ValueError, match="rows of"):
        sweep.point_config(8, 1e-4)


def test_interpolated_sram_is_flagged_and_between_its_neighbours() -> None:
    table, added = sweep.table_for([sweep.point_config(8, 0.5)])
    assert added, "half-depth buffers are not in the CACTI table"
    base = load_sram_table()
    for key in added:
        size, row, ports = (int(key.split("B_")[0]), int(key.split("B_")[1]), key.split("_")[-1])
        m = table.macro(size, row, ports)
        same = sorted(
            (c, mm.area_mm2) for (c, r, p), mm in base.macros.items() if r == row and p == ports
        )
        assert size not in [c for c, _ in same] and m.area_mm2 > 0 and m.read_pj > 0
        lower = [a for c, a in same if c < size]
        upper = [a for c, a in same if c > size]
        if lower and upper:  # interpolated, not extrapolated: between its neighbours
            assert lower[-1] < m.area_mm2 < upper[0]
    # a shape CACTI has is taken as is
    t2, added2 = sweep.table_for([AcceleratorConfig.scaled(8)])
    assert added2 == set() and t2 is not None


def test_sweep_points_are_perf_totals_plus_areas(tmp_path: Path) -> None:
    synth = _synth(tmp_path / "synth.json")
    wl = _workload(tmp_path / "w.jsonl")
    out = tmp_path / "out"
    argv = [
        "sweep",
        "--workload",
        str(wl),
        "--array-n",
        "4,8",
        "--dram-gbps",
        "3.2,100",
        "--synth",
        str(synth),
        "--predictor",
        "exact",
        "--no-cache",
        "--no-progress",
        "--jobs",
        "2",
        "--out",
        str(out),
        "--json",
    ]
    assert main(argv) == 0
    doc = json.loads((out / "sweep.json").read_text())
    # N=4's 16-byte bus peaks at 6.4 GB/s: 100 GB/s is capped there, N=8's at 12.8
    assert len(doc["points"]) == 4
    res = SynthResults(json.loads(synth.read_text()))
    table = load_sram_table()
    for p in doc["points"]:
        cfg = sweep.point_config(p["n"], 1.0)
        want = perf.evaluate_step(
            GEMMS,
            cfg,
            dram_gbps=p["dram_gbps_requested"],
            predictor="exact",
            cache_dir=None,
            synth=synth,
        )
        assert p["cycles"] == want.totals["cycles"]
        assert p["energy_mj"] == pytest.approx(want.totals["energy_j"] * 1e3)
        logic = res.accelerator_logic_um2(p["n"])[0]
        sram = sum(table.buffers_area(cfg).values())
        assert p["area_mm2"] == pytest.approx((logic + sram) / 1e6)
        assert p["logic_extrapolated"] is False
    assert sum(p["pareto"] for p in doc["points"]) >= 1
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 4 and "area_mm2" in rows[0]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    wl = _workload(tmp_path / "w.jsonl")
    base = ["sweep", "--workload", str(wl), "--no-progress", "--out", str(tmp_path / "o")]
    assert main([*base, "--synth", str(tmp_path / "missing.json")]) == 2
    assert "run `qta synth` first" in capsys.readouterr().err
    synth = str(_synth(tmp_path / "s.json"))
    assert main([*base, "--synth", synth, "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "needs the 'distributed' package" in capsys.readouterr().err
    assert main([*base, "--synth", synth, "--scheduler", "nowhere"]) == 2
    assert "--scheduler must be" in capsys.readouterr().err
    assert main([*base, "--synth", synth, "--array-n", "8,x"]) == 2
    assert "comma-separated list" in capsys.readouterr().err


def test_bandwidths_capped_by_the_bus_are_one_point(tmp_path: Path) -> None:
    args = argparse.Namespace(
        synth=_synth(tmp_path / "s.json"),
        clock_mhz=400.0,
        vdd=1.1,
        predictor="exact",
        no_cache=True,
        cache=None,
        no_progress=True,
    )
    doc = sweep.sweep(
        str(_workload(tmp_path / "w.jsonl")),
        "lora",
        ns=[4],
        dram_gbps=[100.0, None, 200.0, 3.2],
        args=args,
    )
    # N=4: a 16-byte bus at 400 MHz is 6.4 GB/s; 100, 200 and the default are all that
    assert [p["dram_gbps"] for p in doc["points"]] == [6.4, 3.2]
