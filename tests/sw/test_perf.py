"""`qta perf`: each number checked against an independent fact (separate compiles, the
compiled instructions, SCALE-Sim by hand, sums), plus the CLI's errors and JSON schema."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cdm_qta.hw.config import AcceleratorConfig, Dataflow, DramTiming
from cdm_qta.hw.isa import Buffer, Compute, Load, Store
from cdm_qta.sw import perf
from cdm_qta.sw.cli import main
from cdm_qta.sw.compiler import ShapeError, compile_gemm
from cdm_qta.sw.trace import TraceGemm

#: Small GEMMs with both transposes, a K split (k > N), several column tiles and a repeat.
GEMMS = [
    perf.make_gemm("a", "linear", "forward", 100, 40, 24, count=2, trans_b=True),
    perf.make_gemm("b", "lora", "forward", 77, 32, 4, trans_b=True),
    perf.make_gemm("c", "lora", "weight_grad", 4, 77, 32, trans_a=True),
    perf.make_gemm("a2", "linear", "forward", 100, 40, 24, trans_b=True),
]
CFG = AcceleratorConfig.scaled(8)


def _eval(gemms: list[TraceGemm], **kw: object) -> perf.StepPerf:
    kw = {"predictor": "exact", "cache_dir": None, "synth": None, **kw}
    return perf.evaluate_step(gemms, CFG, **kw)  # type: ignore[arg-type]


def _instruction_counts(cfg: AcceleratorConfig, insns: tuple) -> dict[str, int]:
    """SRAM bytes and adds counted instruction by instruction (the RTL moves whole rows)."""
    out = dict.fromkeys(
        [f"{b}_buffer_{d}_bytes" for b in ("input", "weight", "output") for d in ("read", "write")]
        + ["adds"],
        0,
    )
    ri, ro = cfg.input_row_bytes, cfg.output_row_bytes
    for x in insns:
        if isinstance(x, Load):
            buf = "input" if x.buffer == Buffer.INPUT else "weight"
            out[f"{buf}_buffer_write_bytes"] += x.rows * ri
        elif isinstance(x, Compute):
            ws = x.dataflow == Dataflow.WS
            out["input_buffer_read_bytes"] += (x.m if ws else x.k) * ri
            out["weight_buffer_read_bytes"] += x.k * ri
            out["output_buffer_write_bytes"] += x.m * ro
            if x.accumulate:
                out["output_buffer_read_bytes"] += x.m * ro
                out["adds"] += x.m * x.c
        elif isinstance(x, Store):
            out["output_buffer_read_bytes"] += x.rows * ro
    return out


@pytest.mark.parametrize(
    ("cfg", "shape"),
    [
        (AcceleratorConfig.scaled(8), (100, 40, 24)),
        (AcceleratorConfig.scaled(4), (9, 30, 13)),
        # few SRAM rows: weights rotate through a ring, several M blocks and K chunks
        (AcceleratorConfig.small(4, rows=32), (50, 37, 21)),
        (AcceleratorConfig.small(4, rows=16), (7, 70, 9)),
    ],
    ids=["scaled8", "scaled4", "small4-rows32", "small4-rows16"],
)
@pytest.mark.parametrize("flow", [Dataflow.WS, Dataflow.OS], ids=lambda f: f.name)
def test_sram_counts_equal_the_compiled_instructions(
    cfg: AcceleratorConfig, shape: tuple[int, int, int], flow: Dataflow
) -> None:
    prog = compile_gemm(cfg, *shape, dataflow=flow)
    assert perf.sram_counts(cfg, *shape, prog.tiling) == _instruction_counts(cfg, prog.instructions)


def test_each_gemm_is_its_compiled_program_and_totals_are_sums() -> None:
    res = _eval(GEMMS, dataflow="ws")
    for g, row in zip(GEMMS, res.gemms, strict=True):
        prog = compile_gemm(
            CFG, g.m, g.k, g.n, dataflow=Dataflow.WS, trans_a=g.trans_a, trans_b=g.trans_b
        )
        assert row["cycles"] == prog.prediction.cycles * g.count
        assert row["macs"] == g.macs == prog.prediction.macs * g.count
        assert row["dram_read_bytes"] == prog.prediction.counters["dma_read_bytes"] * g.count
    t = res.totals
    for key in ("cycles", "macs", "sram_bytes", "dram_bytes"):
        assert t[key] == sum(r[key] for r in res.gemms), key
    assert t["energy_j"] == pytest.approx(sum(r["energy_pj"] for r in res.gemms) * 1e-12)
    assert t["edp_js"] == pytest.approx(t["energy_j"] * t["cycles"] / 400e6)
    assert t["utilization"] == pytest.approx(t["macs"] / (t["cycles"] * 64), abs=1e-5)
    assert t["distinct_shapes"] == 3


def test_hybrid_is_the_faster_dataflow_per_gemm() -> None:
    ws, os_, hy = (_eval(GEMMS, dataflow=f) for f in ("ws", "os", "hybrid"))
    chosen = set()
    for a, b, h in zip(ws.gemms, os_.gemms, hy.gemms, strict=True):
        assert h["cycles"] == min(a["cycles"], b["cycles"])
        assert h["dataflow"] == ("ws" if a["cycles"] <= b["cycles"] else "os")
        chosen.add(h["dataflow"])
    assert chosen == {"ws", "os"}, "this set is meant to need both dataflows"
    assert hy.totals["cycles"] < min(ws.totals["cycles"], os_.totals["cycles"])


def test_transpose_is_its_own_knob() -> None:
    assert perf.transposed((5, 6, 7, False, True)) == (7, 6, 5, False, True)
    assert perf.transposed(perf.transposed((5, 6, 7, True, False))) == (5, 6, 7, True, False)
    off, auto = _eval(GEMMS, transpose="off"), _eval(GEMMS, transpose="auto")
    for a, b, g in zip(off.gemms, auto.gemms, GEMMS, strict=True):
        assert b["cycles"] <= a["cycles"]
        if b["transposed"]:  # the transposed program, compiled separately
            prog = compile_gemm(
                CFG,
                g.n,
                g.k,
                g.m,
                dataflow=Dataflow[b["dataflow"].upper()],
                trans_a=not g.trans_b,
                trans_b=not g.trans_a,
            )
            assert b["cycles"] == prog.prediction.cycles * g.count
    assert auto.totals["transpose"]["cycles_without"] == off.totals["cycles"]
    assert auto.totals["transpose"]["gemms_transposed"] >= 1


def test_scalesim_columns_by_hand() -> None:
    res = _eval(GEMMS[:1], dataflow="os")
    row = res.gemms[0]
    # 100x40x24 on 8x8, count 2. WS: ceil(40/8)=5 * ceil(24/8)=3 * (16 + 8 + 100 - 2) = 1830
    assert row["scalesim_ws_cycles"] == 2 * 1830
    # OS: ceil(100/8)=13 * 3 * (40 + 8 + 8 - 2) = 2106
    assert row["scalesim_os_cycles"] == row["scalesim_cycles"] == 2 * 2106
    assert row["compute_bound_cycles"] == 2 * 1500  # 96000 MACs / 64 PEs
    assert res.totals["scalesim"]["chosen_dataflow_cycles"] == 2 * 2106


def test_a_gemm_that_does_not_compile_is_split_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    real = perf._predict_one

    def picky(cfg, key, dataflow, timing, predictor):  # type: ignore[no-untyped-def]
        if key[0] > 30:
            raise ShapeError("too many rows for this test")
        return real(cfg, key, dataflow, timing, predictor)

    perf._cached_piece.cache_clear()
    monkeypatch.setattr(perf, "_predict_one", picky)
    try:
        g = perf.make_gemm("big", "linear", "forward", 100, 16, 8)
        row = _eval([g], dataflow="ws").gemms[0]
    finally:
        perf._cached_piece.cache_clear()
    # 100 -> 50 + 50 -> four pieces of 25 rows, run one after another
    assert row["pieces"] == 4
    assert "too many rows" in row["split_reason"]
    one = compile_gemm(CFG, 25, 16, 8, dataflow=Dataflow.WS).prediction.cycles
    assert row["cycles"] == 4 * one
    assert row["macs"] == 100 * 16 * 8


def test_an_unsplittable_gemm_is_reported_unsupported() -> None:
    ok = perf.make_gemm("ok", "linear", "forward", 8, 8, 8)
    huge_k = perf.make_gemm("long", "conv", "weight_grad", 2, 1 << 18, 2)
    res = _eval([ok, huge_k])
    assert [u["name"] for u in res.unsupported] == ["long"]
    assert "overflow" in res.unsupported[0]["reason"]
    assert res.totals["unsupported_macs"] == huge_k.macs
    assert res.totals["macs"] == ok.macs
    assert any("unsupported" in n for n in res.notes)


def test_dram_bandwidth_becomes_beats_per_cycle() -> None:
    # N=8: 32-byte bus at 400 MHz = 12.8 GB/s peak
    timing, gbps, note = perf.dram_timing_for(CFG, 6.4, 400)
    assert (timing.beat_num, timing.beat_den, gbps, note) == (1, 2, 6.4, None)
    timing, gbps, note = perf.dram_timing_for(CFG, 100, 400)
    assert timing == DramTiming() and gbps == 12.8 and "bus limits" in (note or "")
    with pytest.raises(ValueError, match="positive"):
        perf.dram_timing_for(CFG, -1, 400)
    slow = _eval(GEMMS[:1], dram_gbps=1.6)
    fast = _eval(GEMMS[:1])
    assert slow.totals["cycles"] > fast.totals["cycles"]
    assert slow.config["dram_timing"]["beat_den"] == 8


def test_disk_cache_is_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _eval(GEMMS, cache_dir=tmp_path, dataflow="ws")
    assert len(list(tmp_path.glob("*.json"))) == 3
    perf._cached_piece.cache_clear()

    def boom(*a: object) -> None:
        raise AssertionError("must come from the disk cache")

    monkeypatch.setattr(perf, "_predict_one", boom)
    try:
        again = _eval(GEMMS, cache_dir=tmp_path, dataflow="ws")
    finally:
        perf._cached_piece.cache_clear()
    assert again.to_dict() == first.to_dict()
    other = perf.cache_key(CFG, (1, 2, 3, False, False), Dataflow.WS, DramTiming(), "exact")
    assert other != perf.cache_key(CFG, (1, 2, 3, False, False), Dataflow.OS, DramTiming(), "exact")


def _write(path: Path, gemms: list[TraceGemm]) -> Path:
    lines = [json.dumps({"record": "trace", "model": "test", "mode": "lora"})]
    lines += [json.dumps({"record": "gemm", **dataclasses.asdict(g)}) for g in gemms]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_json_schema(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    wl = _write(tmp_path / "w.jsonl", GEMMS)
    argv = ["perf", "--workload", str(wl), "--array-n", "8", "--json", "--no-progress"]
    assert main([*argv, "--predictor", "exact", "--no-cache", "--synth", "none.json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "cdm_qta.perf/1"
    assert set(doc) == {"schema", "config", "totals", "gemms", "unsupported", "notes"}
    for key in (
        "cycles",
        "latency_s",
        "utilization",
        "sram_bytes",
        "dram_bytes",
        "energy_j",
        "edp_js",
        "roofline",
        "scalesim",
        "transpose",
    ):
        assert key in doc["totals"], key
    assert len(doc["gemms"]) == len(GEMMS)
    assert {"name", "dataflow", "cycles", "energy_pj", "scalesim_cycles"} <= set(doc["gemms"][0])
    assert doc["totals"]["latency_s"] == pytest.approx(doc["totals"]["cycles"] / 400e6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--array-n", "0"], "--array-n must be a positive integer"),
        (["--dram-gbps", "-3"], "--dram-gbps must be a positive number"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--mode", "full"], "is a 'lora' trace, not 'full'"),
    ],
)
def test_cli_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    wl = _write(tmp_path / "w.jsonl", GEMMS[:1])
    assert main(["perf", "--workload", str(wl), "--no-cache", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_bad_workloads_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["perf", "--workload", str(tmp_path / "missing.jsonl")]) == 2
    assert "workload file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"record": "gemm", "m": 4, "k": 0, "n": 2}\n')
    assert main(["perf", "--workload", str(bad)]) == 2
    assert "bad.jsonl:1: k must be a positive integer, not 0" in capsys.readouterr().err
    assert main(["perf", "--workload", "sd99"]) == 2
    assert "workload must be one of" in capsys.readouterr().err


def test_local_processes_give_the_same_numbers() -> None:
    from cdm_qta.sw.parallel import executor_for

    with executor_for(2) as pool:
        assert pool is not None
        parallel = _eval(GEMMS, executor=pool)
    assert parallel.to_dict() == _eval(GEMMS).to_dict()
