"""`qta report`: every part lands in one folder, each under the command that regenerates it,
and a missing synthesis result is said, not hidden."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from cdm_qta.hw.synth import SCHEMA
from cdm_qta.sw import perf
from cdm_qta.sw.cli import main

GEMMS = [
    perf.make_gemm("x", "linear", "forward", 64, 40, 24, trans_b=True),
    perf.make_gemm("y", "lora", "forward", 77, 32, 4, trans_b=True),
]


def _files(tmp_path: Path, with_synth: bool) -> list[str]:
    wl = tmp_path / "w.jsonl"
    wl.write_text(
        "\n".join(json.dumps({"record": "gemm", **dataclasses.asdict(g)}) for g in GEMMS) + "\n"
    )
    synth = tmp_path / "synth.json"
    if with_synth:
        designs = {"pe": {"block": "pe", "n": None, "flat": False, "area_um2": 1200.0}}
        for n in (2, 4, 8):
            for block, area in (("array", 1300.0 * n * n), ("accelerator", 1400.0 * n * n + 1e5)):
                designs[f"{block}_n{n}_hier"] = {
                    "block": block,
                    "n": n,
                    "flat": False,
                    "area_um2": area,
                    "flops": area / 15,
                    "leakage_nw": area * 20,
                }
        synth.write_text(json.dumps({"schema": SCHEMA, "designs": designs, "tool": {}}))
    return [
        "report",
        "--workload",
        str(wl),
        "--sweep-workload",
        str(wl),
        "--array-n",
        "8",
        "--sweep-n",
        "4,8",
        "--synth",
        str(synth),
        "--predictor",
        "exact",
        "--no-cache",
        "--no-progress",
        "--out",
        str(tmp_path / "rep"),
    ]


def test_report_names_the_command_of_every_part(tmp_path: Path) -> None:
    assert main(_files(tmp_path, with_synth=True)) == 0
    rep = tmp_path / "rep"
    md = (rep / "report.md").read_text()
    for name in (
        "table1.md",
        "perf_ws.json",
        "perf_os.json",
        "perf_hybrid.json",
        "perf_hybrid_transposed.json",
        "sweep.png",
        "sweep.csv",
        "report.md",
    ):
        assert (rep / name).is_file(), name
    commands = re.findall(r"`(qta [^`]+)`", md)
    assert {c.split()[1] for c in commands} == {"report", "table1", "perf", "sweep"}
    # each perf command, run again, writes the same totals the report holds
    ws = next(c for c in commands if "--dataflow ws " in c)
    again = tmp_path / "again.json"
    argv = shlex.split(ws)[1:]
    argv[argv.index("--out") + 1] = str(again)
    assert main([*argv, "--no-progress", "--no-cache"]) == 0
    assert (
        json.loads(again.read_text())["totals"]
        == json.loads((rep / "perf_ws.json").read_text())["totals"]
    )
    assert "Fig. 6 needs a model name" in md


def test_report_without_synthesis_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(_files(tmp_path, with_synth=False)) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Not written: no synthesis results at" in md and "run `qta synth`" in md.lower()
    assert not (tmp_path / "rep" / "table1.md").exists()
    assert (tmp_path / "rep" / "perf_hybrid.json").is_file()
