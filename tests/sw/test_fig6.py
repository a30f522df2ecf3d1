"""Fig. 6: the bars are `qta perf` totals of the right GEMMs, the ratios divide them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.sw import fig6, perf

ATTN = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
LORA = [
    perf.make_gemm(f"{ATTN}.to_q", "linear", "forward", 64, 32, 32, trans_b=True),
    perf.make_gemm(f"{ATTN}.to_k.lora_A.default", "lora", "forward", 77, 32, 4, trans_b=True),
    perf.make_gemm(ATTN, "attention", "forward", 64, 4, 77, count=2, trans_b=True),
    perf.make_gemm("down_blocks.0.resnets.0.conv1", "conv", "forward", 64, 72, 8, trans_b=True),
    perf.make_gemm(f"{ATTN}1.to_q", "linear", "forward", 40, 16, 16, trans_b=True),  # attn1x
]
FULL = [*LORA[:1], perf.make_gemm(f"{ATTN}.to_k", "linear", "weight_grad", 32, 77, 32), *LORA[2:]]


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(
        array_n=8,
        clock_mhz=400.0,
        vdd=1.1,
        predictor="exact",
        cache=tmp_path,
        no_cache=True,
        synth=tmp_path / "none.json",
        no_progress=True,
        jobs=1,
        scheduler=None,
    )


def test_scope_filter() -> None:
    assert fig6.in_scope("cross_attention", f"{ATTN}.to_v.lora_B.default")
    assert fig6.in_scope("cross_attention", ATTN)
    assert not fig6.in_scope("cross_attention", f"{ATTN}1.to_q")
    assert not fig6.in_scope("cross_attention", ATTN.replace("attn2", "attn1"))
    assert fig6.in_scope("unet", "anything")
    with pytest.raises(ValueError, match="scope must be one of"):
        fig6.in_scope("vae", "x")


def test_bars_are_perf_totals_and_ratios_divide_them(tmp_path: Path) -> None:
    doc = fig6.fig6("test", _args(tmp_path), traces={"full": FULL, "lora": LORA})
    cfg = AcceleratorConfig.scaled(8)

    def cycles(gemms: list, flow: str, attn_only: bool) -> int:
        if attn_only:
            gemms = [g for g in gemms if "attn2" in g.name.split(".")]
        res = perf.evaluate_step(
            gemms, cfg, dataflow=flow, predictor="exact", cache_dir=None, synth=None
        )
        return res.totals["cycles"]

    for scope, attn in (("cross_attention", True), ("unet", False)):
        s = doc["scopes"][scope]
        want = {
            "full": cycles(FULL, "ws", attn),
            "lora_os": cycles(LORA, "os", attn),
            "lora_ws": cycles(LORA, "ws", attn),
            "lora_hybrid": cycles(LORA, "hybrid", attn),
        }
        assert {b: s["totals"][b]["cycles"] for b in want} == want
        assert s["totals"]["lora_hybrid"]["gemms"] == (3 if attn else 5)
        for bar in want:
            assert s["hybrid_speedup"][bar] == pytest.approx(want[bar] / want["lora_hybrid"])
            t = s["totals"][bar]
            assert t["edp_js"] == pytest.approx(t["energy_j"] * t["cycles"] / 400e6)
            assert s["normalized_to_full"][bar]["latency"] == pytest.approx(
                want[bar] / want["full"]
            )
        assert s["hybrid_speedup"]["lora_ws"] >= 1 and s["hybrid_speedup"]["lora_os"] >= 1
    assert doc["paper"]["speedup"]["full"] == 1.81


def test_files_written(tmp_path: Path) -> None:
    doc = fig6.fig6("test", _args(tmp_path), traces={"full": FULL, "lora": LORA})
    files = fig6.write_fig6(doc, tmp_path / "out", "qta fig6 ...")
    assert [f.name for f in files] == ["fig6.png", "fig6.json", "fig6.md"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files[2].read_text()
    assert "| Full model | cross-attention layers |" in md and "1.81x" in md
