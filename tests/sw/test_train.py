"""``qta train``: the INT8 LoRA layer is golden's program, outputs load back, bad input is refused.

Every INT8 result is compared with ``golden.lora`` element for element; the command runs end to
end on a two-step budget (the long quality runs are ``python -m cdm_qta.sw.train.quality``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="qta train needs torch==2.13.0 and the ml extra")

from cdm_qta.golden.lora import lora_quantized  # noqa: E402
from cdm_qta.hw.config import AcceleratorConfig  # noqa: E402
from cdm_qta.sw.cli import main  # noqa: E402
from cdm_qta.sw.train.checkpoint import CHECKPOINT_DIR, FILES, load_checkpoint, sha256  # noqa: E402
from cdm_qta.sw.train.data import digit_splits, load_image_folder  # noqa: E402
from cdm_qta.sw.train.loop import add_lora, class_images, fine_tune  # noqa: E402
from cdm_qta.sw.train.models import WordTokenizer  # noqa: E402
from cdm_qta.sw.train.offload import Accelerator  # noqa: E402
from cdm_qta.sw.train.outputs import LORA_WEIGHTS, load_token, output_folder  # noqa: E402
from cdm_qta.sw.train.qlora import Int8LoraLinear, int8_lora, lora_layers  # noqa: E402
from cdm_qta.sw.train.settings import TrainConfig  # noqa: E402

torch.set_num_threads(1)
SEED = 31337


@pytest.fixture(scope="module")
def ckpt():  # type: ignore[no-untyped-def]
    return load_checkpoint()


def test_the_checkpoint_matches_its_manifest(ckpt) -> None:  # type: ignore[no-untyped-def]
    hashes = ckpt.manifest["sha256"]
    assert set(hashes) == set(FILES)
    for name in FILES:
        assert sha256(CHECKPOINT_DIR / name) == hashes[name]
    assert ckpt.manifest["classifier_accuracy_on_unseen_real_digits"] >= 0.95
    assert sum(p.numel() for p in ckpt.unet.parameters()) == ckpt.manifest["unet_parameters"]
    assert not any(p.requires_grad for p in ckpt.unet.parameters())


def test_a_corrupt_or_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ckpt"
    shutil.copytree(CHECKPOINT_DIR, bad)
    data = bytearray((bad / "unet.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "unet.safetensors").write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="SHA-256"):
        load_checkpoint(bad)
    shutil.copy(CHECKPOINT_DIR / "unet.safetensors", bad / "unet.safetensors")
    load_checkpoint(bad)
    (bad / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="pretrain"):
        load_checkpoint(tmp_path / "nothing")


def test_tokenizer_pads_and_adds_a_modifier_token() -> None:
    tok = WordTokenizer()
    new = tok.add_token("<new1>")
    ids = tok.encode(["a <new1> digit", ""])
    assert ids.shape == (2, tok.max_length)
    assert ids[0, :5].tolist() == [1, tok.ids["a"], new, tok.ids["digit"], 2]
    assert ids[1, :3].tolist() == [1, 2, 0]
    assert WordTokenizer.from_json(tok.to_json()) == tok
    with pytest.raises(ValueError, match="already in the vocabulary"):
        tok.add_token("digit")
    with pytest.raises(ValueError, match="at most 6"):
        tok.encode(["a b c d e f g"])


def _layer_tensors(layer, rng):  # type: ignore[no-untyped-def]
    """A peft layer with a random, non-zero B (a fresh adapter's B = 0 hides half the GEMMs)."""
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0.0, 0.05)
    d_in = layer.base_layer.in_features
    x = torch.from_numpy(rng.standard_normal((2, 8, d_in)).astype(np.float32))
    dy = torch.from_numpy(rng.standard_normal((2, 8, layer.base_layer.out_features)) * 1e-2)
    return x.requires_grad_(True), dy.float()


@pytest.mark.parametrize("need_dx", [True, False])
def test_the_int8_layer_is_golden_lora_quantized_bit_for_bit(ckpt, need_dx: bool) -> None:  # type: ignore[no-untyped-def]
    print(f"seed={SEED}")
    unet = add_lora(__import__("copy").deepcopy(ckpt.unet), 4, 0)
    name, peft_layer = next(iter(lora_layers(unet).items()))
    x, dy = _layer_tensors(peft_layer, np.random.default_rng(SEED))
    x.requires_grad_(need_dx)
    with Accelerator("golden", AcceleratorConfig.small(8)) as acc:
        layer = Int8LoraLinear(peft_layer, name, acc)
        y = layer(x)
        y.backward(dy)
        roles = [r.role for r in acc.records]
    w = peft_layer.base_layer.weight.detach().numpy().T
    a = peft_layer.lora_A["default"].weight.detach().numpy().T
    b = peft_layer.lora_B["default"].weight.detach().numpy()
    ref = lora_quantized(
        x.detach().numpy().reshape(16, -1), w, a, b, dy.numpy().reshape(16, -1), need_dx=need_dx
    )
    assert roles == [op.name for op in ref.program]
    assert len(roles) == (8 if need_dx else 6)
    np.testing.assert_array_equal(y.detach().numpy().reshape(16, -1), ref.Y)
    np.testing.assert_array_equal(peft_layer.lora_A["default"].weight.grad.numpy().T, ref.dA)
    np.testing.assert_array_equal(peft_layer.lora_B["default"].weight.grad.numpy(), ref.dB)
    if need_dx:
        np.testing.assert_array_equal(x.grad.numpy().reshape(16, -1), ref.dX)
    else:
        assert x.grad is None
    # ... and it is the quantized layer, not FP32: peft's own output differs.
    assert not np.array_equal(peft_layer(x).detach().numpy().reshape(16, -1), ref.Y)


def test_stochastic_gradient_rounding_is_seeded(ckpt) -> None:  # type: ignore[no-untyped-def]
    unet = add_lora(__import__("copy").deepcopy(ckpt.unet), 4, 0)
    name, peft_layer = next(iter(lora_layers(unet).items()))
    x, dy = _layer_tensors(peft_layer, np.random.default_rng(SEED))
    grads = []
    for rounding, seed in (("stochastic", 1), ("stochastic", 1), ("stochastic", 2), ("nearest", 1)):
        peft_layer.lora_A["default"].weight.grad = None
        with Accelerator("golden", AcceleratorConfig.small(8)) as acc:
            Int8LoraLinear(peft_layer, name, acc, grad_rounding=rounding, seed=seed)(x).backward(dy)
        grads.append(peft_layer.lora_A["default"].weight.grad.clone())
    assert torch.equal(grads[0], grads[1])
    assert not torch.equal(grads[0], grads[2]) and not torch.equal(grads[0], grads[3])


def test_the_swap_is_undone_and_keeps_peft_names(ckpt) -> None:  # type: ignore[no-untyped-def]
    unet = add_lora(__import__("copy").deepcopy(ckpt.unet), 4, 0)
    keys = list(unet.state_dict())
    with Accelerator("golden", AcceleratorConfig()) as acc, int8_lora(unet, acc) as swapped:
        assert len(swapped) == 8
        assert all(isinstance(unet.get_submodule(n), Int8LoraLinear) for n in swapped)
    assert list(unet.state_dict()) == keys
    assert not any(isinstance(m, Int8LoraLinear) for m in unet.modules())


def test_fp32_and_int8_training_start_alike_and_diverge_a_little(ckpt) -> None:  # type: ignore[no-untyped-def]
    splits = digit_splits()
    prior = class_images(splits, 18)
    cfg = TrainConfig(precision="fp32", max_train_steps=3, train_batch_size=2)
    fp = fine_tune(ckpt, splits.instance_x, prior, cfg, progress=False)
    with Accelerator("golden", AcceleratorConfig()) as acc:
        q = fine_tune(
            ckpt, splits.instance_x, prior, TrainConfig(precision="int8", max_train_steps=3,
            train_batch_size=2), accelerator=acc, progress=False,
        )  # fmt: skip
        assert {r.step for r in acc.records} == {1, 2, 3}
        assert len([r for r in acc.records if r.step == 1]) == 8 * 8
        assert {r.source for r in acc.records} == {"model"}
    # Same data, noise and timesteps: the losses differ only by the INT8 GEMMs' error.
    for a, b in zip(fp.losses, q.losses, strict=True):
        assert a["loss"] != b["loss"] and a["loss"] == pytest.approx(b["loss"], rel=2e-2)
    assert not torch.equal(fp.token_embedding, q.token_embedding)


def test_qta_train_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    argv = ["train", "--max_train_steps", "2", "--eval-samples", "9", "--output-dir", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "int8 LoRA" in stdout and "64 GEMMs" in stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"base", "fp32 LoRA", "int8 LoRA"}
    assert report["hardware"]["per_step"]["gemms"] == 64
    assert report["hardware"]["per_step"]["macs"] == sum(
        r["macs"] for r in report["hardware"]["step1_gemms"]
    )
    assert {"layer", "role", "phase", "m", "k", "n", "dataflow", "cycles", "macs", "source"} <= set(
        report["hardware"]["step1_gemms"][0]
    )
    for f in ("loss.png", "samples.png", "report.md"):
        assert (out / f).stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left"
    # The LoRA file loads back into a fresh UNet, with diffusers and with peft.
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from cdm_qta.sw.train.models import build_unet

    saved = load_file(out / "int8" / LORA_WEIGHTS)
    assert len(saved) == 16 and any(k.endswith("lora_B.weight") for k in saved)
    unet = build_unet()
    unet.load_lora_adapter(str(out / "int8"), weight_name=LORA_WEIGHTS, prefix=None)
    loaded = {n: p for n, p in unet.named_parameters() if "lora_B" in n and n.endswith(".weight")}
    assert len(loaded) == 8 and all(p.abs().sum() > 0 for p in loaded.values()), "B is trained"
    unet2 = add_lora(build_unet(), 4, 0)
    result = set_peft_model_state_dict(unet2, saved)
    assert not result.unexpected_keys
    token, emb = load_token(out / "int8" / "<new1>.safetensors")
    assert token == "<new1>" and emb.shape == (64,)


def test_fp32_beside_int8_gives_what_one_process_gives(tmp_path: Path) -> None:
    """``--jobs 2`` trains FP32 (and scores it and the base model) in a second process: the
    report's losses and scores and the saved files are bit-identical to ``--jobs 1``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from cdm_qta.sw.train.train_run import RunOptions, train_and_report

    def _tensors(path: Path) -> dict[str, bytes]:
        return {k: v.numpy().tobytes() for k, v in load_file(path).items()}

    got = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        report = train_and_report(
            RunOptions(
                output_dir=out, train={"max_train_steps": 2, "num_class_images": 9},
                eval_samples=3, jobs=jobs, progress=False,
            )
        )  # fmt: skip
        files = {  # tensors and metadata (the header's key order is not fixed by safetensors)
            f"{p}/{f}": (_tensors(out / p / f), safe_open(out / p / f, "pt").metadata())
            for p in ("fp32", "int8")
            for f in (LORA_WEIGHTS, "<new1>.safetensors")
        }
        models = {k: (v["losses"] if "losses" in v else None, v["scores"]) for k, v in
                  report["models"].items()}  # fmt: skip
        got[jobs] = (models, files)
    assert list(got[2][0]) == ["base", "fp32 LoRA", "int8 LoRA"]
    assert got[1] == got[2]


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "max_train_steps must be a positive integer"),
        (["--rank", "100"], "rank 100 is larger than the layer"),
        (["--backend", "nope"], "unknown back end 'nope'"),
        (["--class-word", "cat"], "class word 'cat' is not in the model's vocabulary"),
        (["--checkpoint", "/nonexistent/ckpt"], "no checkpoint at"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    out = tmp_path / "run"
    code, err = _run_cli(
        ["train", "--max-train-steps", "1", "--output-dir", str(out), *extra], capsys
    )
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_bad_image_folders_and_missing_simulators(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["train", "--max-train-steps", "1", "--output-dir", str(out)]
    code, err = _run_cli([*base, "--instance-data-dir", str(empty)], capsys)
    assert code == 2 and "holds no PNG or JPEG images" in err
    (empty / "broken.png").write_bytes(b"not a png")
    code, err = _run_cli([*base, "--instance-data-dir", str(empty)], capsys)
    assert code == 2 and "cannot read image" in err
    import cdm_qta.tb.toolchain as toolchain

    monkeypatch.setattr(toolchain, "simulator_available", lambda sim: (False, f"{sim} missing"))
    code, err = _run_cli([*base, "--backend", "icarus"], capsys)
    assert code == 2 and "icarus back end is not available: icarus missing" in err
    assert not out.exists()


def test_user_images_are_resized_grayscale_and_ink_bright(tmp_path: Path) -> None:
    from PIL import Image

    img = np.full((40, 30, 3), 255, np.uint8)  # white paper ...
    img[10:30, 12:18] = 0  # ... with a dark vertical stroke
    Image.fromarray(img).save(tmp_path / "one.png")
    Image.fromarray(img).save(tmp_path / "two.JPG")
    x = load_image_folder(tmp_path)
    assert x.shape == (2, 1, 8, 8) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x[0, 0, 4, 3:5].mean() > 0.5 and x[0, 0, 0, 0] < -0.9, "the stroke is bright ink"


def test_an_interrupted_run_leaves_no_output(tmp_path: Path) -> None:
    target = tmp_path / "run"
    with pytest.raises(KeyError), output_folder(target) as tmp:
        (tmp / "report.json").write_text("{}")
        raise KeyError("interrupted")
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    with pytest.raises(RuntimeError, match="not an earlier qta train output"):
        with output_folder(target):
            pass
    assert (target / "mine.txt").read_text() == "keep"


def test_offload_all_sends_every_gemm_of_the_step(ckpt) -> None:  # type: ignore[no-untyped-def]
    """Forward MACs on the accelerator == torch's own count of the FP32 forward's GEMMs."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    splits = digit_splits()
    cfg = TrainConfig(precision="int8", offload="all", max_train_steps=1, train_batch_size=1,
                      num_class_images=0)  # fmt: skip
    with Accelerator("golden", AcceleratorConfig()) as acc:
        q = fine_tune(ckpt, splits.instance_x, class_images(splits, 0), cfg, accelerator=acc,
                      progress=False)  # fmt: skip
        records = list(acc.records)
    layers = {r.layer for r in records}
    assert {"conv_in", "conv_out", "time_embedding.linear_1"} <= layers
    assert any(n.endswith("attn1.scores") for n in layers) and any("to_q" in n for n in layers)
    assert {r.phase for r in records} == {"forward", "input_grad", "weight_grad"}
    # The same forward in FP32 under torch's FLOP counter (same shapes: batch 1, 8 tokens);
    # classic attention, whose two products the counter sees (it does not count CPU SDPA).
    from diffusers.models.attention_processor import AttnProcessor

    unet = add_lora(copy.deepcopy(ckpt.unet), 4, 0)
    unet.set_attn_processor(AttnProcessor())
    x = torch.zeros(1, 1, 8, 8)
    text = torch.zeros(1, 8, 64)
    counter = FlopCounterMode(display=False)
    with counter:
        unet(x, torch.tensor([10]), encoder_hidden_states=text)
    forward_macs = sum(r.macs for r in records if r.phase == "forward")
    assert forward_macs == counter.get_total_flops() // 2
    assert len(q.losses) == 1


def test_a_users_concept_has_no_concept_score_on_either_process(tmp_path: Path) -> None:
    """There is no classifier for a user's own images: no model gets a concept score, also
    those scored in the FP32 process beside INT8 (``jobs=2``)."""
    from PIL import Image

    from cdm_qta.sw.train.train_run import RunOptions, train_and_report

    images = tmp_path / "mine"
    images.mkdir()
    img = np.full((16, 16), 255, np.uint8)
    img[4:12, 7:9] = 0
    Image.fromarray(img).save(images / "one.png")
    report = train_and_report(
        RunOptions(
            output_dir=tmp_path / "run", instance_data_dir=images,
            train={"max_train_steps": 1, "num_class_images": 9}, eval_samples=3, jobs=2,
            progress=False,
        )
    )  # fmt: skip
    assert set(report["models"]) == {"base", "fp32 LoRA", "int8 LoRA"}
    for name, entry in report["models"].items():
        assert entry["scores"]["concept_score"] is None, name
        assert entry["scores"]["prior_score"] >= 0, name
