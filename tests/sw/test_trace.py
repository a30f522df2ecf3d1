"""`qta trace`: the GEMMs autograd runs, checked against FlopCounterMode and the golden LoRA."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cdm_qta.golden.lora import lora_gemms  # noqa: E402
from cdm_qta.sw.cli import main  # noqa: E402
from cdm_qta.sw.trace import build_unet, trace_step  # noqa: E402
from cdm_qta.sw.unet_configs import MODELS  # noqa: E402

torch.set_num_threads(1)
aten = torch.ops.aten


def traced(model: str, mode: str, **kw: object):
    fc = FlopCounterMode(display=False)
    tr = trace_step(model, mode, flop_counter=fc, **kw)
    return tr, fc


@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("batch", [1, 2])
def test_tiny_macs_equal_flop_counter_per_op(mode: str, batch: int) -> None:
    tr, fc = traced("tiny", mode, batch=batch)
    assert 2 * tr.total_macs == fc.get_total_flops()
    ours: Counter[str] = Counter()
    for g in tr.gemms:
        ours[g.op] += 2 * g.macs
    theirs = {op.__name__.split(".")[0]: f for op, f in fc.get_flop_counts()["Global"].items()}
    assert dict(ours) == theirs


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_sd15_matches_flop_counter(mode: str) -> None:
    tr, fc = traced("sd15", mode)
    assert 2 * tr.total_macs == fc.get_total_flops()
    s = tr.summary()
    # Regression figures (see the closing note of issue 5).
    assert s["total_macs"] == {"full": 834_582_446_080, "lora": 833_144_613_376}[mode]
    assert s["trainable_parameters"] == {"full": 19_169_280, "lora": 198_144}[mode]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_configs_build_the_real_networks(name: str) -> None:
    unet = build_unet(MODELS[name], "full", None)
    assert sum(p.numel() for p in unet.parameters()) == MODELS[name].parameters
    assert all(p.device.type == "meta" for p in unet.parameters())


def test_trainable_weights_get_weight_gradients() -> None:
    full, _ = traced("tiny", "full")
    lora, _ = traced("tiny", "lora")
    wg_full = {g.name for g in full.gemms if g.phase == "weight_grad"}
    assert wg_full and all(n.endswith(("attn2.to_k", "attn2.to_v")) for n in wg_full)
    wg_lora = {g.name for g in lora.gemms if g.phase == "weight_grad"}
    assert wg_lora and all(".lora_" in n for n in wg_lora)
    for tr in (full, lora):
        assert all(g.trainable for g in tr.gemms if g.phase == "weight_grad")
        # Frozen weights' gradients are left out, and said so.
        assert any("frozen" in why for *_, why, _m in tr.skipped)
    assert {g.kind for g in lora.gemms} == {"attention", "conv", "linear", "lora"}


def test_lora_layer_gemms_agree_with_golden_program() -> None:
    tr, _ = traced("sd15", "lora")
    layer = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    mine = [g for g in tr.gemms if g.name.startswith(layer)]
    spec = MODELS["sd15"]
    golden = lora_gemms(n=spec.text_len, d_in=spec.text_dim, d_out=320, rank=4, need_dx=False)

    def key(phase: str, m: int, k: int, n: int) -> tuple[str, int, tuple[int, int]]:
        # aten may compute a product transposed (C^T = B^T A^T): same k, m and n swapped.
        return (phase, k, (min(m, n), max(m, n)))

    assert Counter(key(g.phase, g.m, g.k, g.n) for g in mine) == Counter(
        key(str(g.phase), g.m, g.k, g.n) for g in golden
    )
    # With the text embedding trained, the layer's input gradients appear as in need_dx=True.
    tr2 = trace_step("tiny", "lora", text_grad=True)
    tiny = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v"
    golden2 = lora_gemms(n=77, d_in=32, d_out=32, rank=4, need_dx=True)
    mine2 = [g for g in tr2.gemms if g.name.startswith(tiny)]
    assert Counter(key(g.phase, g.m, g.k, g.n) for g in mine2) == Counter(
        key(str(g.phase), g.m, g.k, g.n) for g in golden2
    )


def test_attention_is_batched_over_batch_and_heads() -> None:
    tr = trace_step("tiny", "full", batch=3)
    heads = 8  # diffusers' `attention_head_dim` of SD-1-style configs counts heads
    att = [g for g in tr.gemms if g.kind == "attention"]
    assert att and all(g.count == 3 * heads for g in att)
    convs = [g for g in tr.gemms if g.kind == "conv" and g.phase == "forward"]
    assert convs[0].m == 3 * 16 * 16  # conv_in: batch x latent pixels


def test_cli_writes_jsonl_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["trace", "--model", "tiny", "--mode", "lora", "--rank", "2", "--out",
                 str(out), "--summary"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "total MACs" in text and "MACs by phase" in text and "left out" in text
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    head, rows = lines[0], lines[1:]
    assert head["record"] == "trace" and head["rank"] == 2 and head["gemms"] == len(rows)
    assert {"name", "phase", "m", "k", "n", "count", "trans_a", "trans_b", "trainable"} <= set(
        rows[0]
    )
    assert sum(r["macs"] for r in rows) == head["total_macs"]
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "sd3", "--mode", "lora"], "unknown model 'sd3'"),
        (["--model", "tiny", "--mode", "half"], "unknown mode 'half'"),
        (["--model", "tiny", "--mode", "lora", "--rank", "33"], "rank 33 is larger than"),
        (["--model", "tiny", "--mode", "lora", "--rank", "0"], "rank must be a positive"),
        (["--model", "tiny", "--mode", "full", "--batch", "0"], "batch must be a positive"),
        (["--model", "tiny", "--mode", "full", "--resolution", "100"], "not a multiple of 16"),
    ],
)
def test_bad_input_fails_cleanly(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["trace", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_missing_output_folder_and_nothing_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "--model", "tiny", "--mode", "full",
                 "--out", str(tmp_path / "no" / "t.jsonl")]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    assert main(["trace", "--model", "tiny", "--mode", "full"]) == 2
    assert "nothing to do" in capsys.readouterr().err
