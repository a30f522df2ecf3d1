"""Capture real LoRA layers from a diffusers + peft training step as INT8 test vectors.

Run ``python -m cdm_qta.golden.capture_vectors`` (about 15 s on one thread) to regenerate
``golden/vectors/``. Needs the ``ml`` extra and ``torch==2.13.0``; this is the only module of
``golden/`` that imports torch, and nothing imports it.

What it does, and why each choice:

- Builds a small text-conditional ``UNet2DConditionModel`` (pixel space, 3 x 32 x 32, two
  cross-attention levels, ``cross_attention_dim`` 128) from a config in code, seeded: no
  pretrained weights can be downloaded here, so the UNet and the "text encoder" start random.
- The text encoder is a frozen token embedding plus position embedding plus LayerNorm over a
  77-token caption ("a photo of a V* temple"), the shape CLIP hands Stable Diffusion, so the
  key/value projections see ``X`` with SD's sequence length.
- Wraps every ``attn2.to_k`` / ``attn2.to_v`` with peft LoRA (rank 4, ``lora_alpha = 4`` so
  peft's scaling is 1 and the layer is exactly the paper's ``Y = X W + X A B^T``, Gaussian A,
  zero B) and trains only those adapters: noise-prediction MSE with a DDPM schedule on two real
  photos that ship with scikit-learn (``load_sample_images``: a temple and a flower, centre
  cropped and resized to 32 x 32). A few warm-up AdamW steps first make ``B`` non-zero; a
  fresh peft adapter has ``B = 0``, which would make ``dA`` and the ``X A B^T`` path all zero.
- On the capture step, forward hooks record each layer's input ``X`` and output ``Y``, tensor
  hooks its output gradient ``dY``; ``dA`` and ``dB`` are the adapters' ``.grad``; ``dX`` comes
  from torch autograd on the layer alone (the UNet's text input needs a gradient only when the
  modifier token V* is trained, as in Custom Diffusion, and then every layer adds to it).
- Runs the golden fully quantized layer (:func:`cdm_qta.golden.lora.lora_quantized`) on those
  tensors and saves, per layer, the FP32 tensors and every GEMM's INT8 operands, scales and
  INT32 result (see :mod:`cdm_qta.golden.vectors` for the file format), plus ``metadata.json``.

Files are written byte-for-byte deterministically (fixed zip timestamps, one thread, seeded),
each through a temporary file and a rename, so a crash never leaves a half-written vector.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdm_qta.hw.files import write_atomic

from .lora import lora_fp32, lora_quantized, rel_error
from .vectors import FORMAT_VERSION, VECTORS_DIR, write_npz

__all__ = ["capture", "main"]

SEED = 1234
WARMUP_STEPS = 8
LR = 1e-3
RANK = 4
RESOLUTION = 32
SEQ_LEN = 77
TEXT_DIM = 128

#: Layers saved as vectors: shallow, deepest and last cross-attention, key and value.
LAYERS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_v",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v",
)

UNET_CONFIG: dict[str, Any] = {
    "sample_size": RESOLUTION,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_DIM,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}

CAPTIONS = ("a photo of a V* temple", "a photo of a V* flower")


def file_name(layer: str) -> str:
    """Vector file of a layer: its module path with dots as underscores, shortened."""
    return layer.replace(".transformer_blocks.0", "").replace(".", "_") + ".npz"


def _images() -> Any:
    import torch
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg (temple), flower.jpg; 427 x 640 RGB
    out = []
    for img in photos:
        h, w, _ = img.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(img[top : top + side, left : left + side])
        small = np.asarray(crop.resize((RESOLUTION, RESOLUTION), Image.Resampling.BICUBIC))
        out.append(small.astype(np.float32) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(out).transpose(0, 3, 1, 2).copy())


def _text_encoder(torch: Any) -> tuple[Any, Any]:
    """A frozen stand-in for CLIP: word embedding + position embedding + LayerNorm."""
    words = sorted({w for c in CAPTIONS for w in c.split()})
    vocab = {w: i + 3 for i, w in enumerate(words)}  # 0 pad, 1 start, 2 end
    ids = torch.zeros(len(CAPTIONS), SEQ_LEN, dtype=torch.long)
    for row, caption in enumerate(CAPTIONS):
        tokens = [1, *(vocab[w] for w in caption.split()), 2]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    tok = torch.nn.Embedding(len(vocab) + 3, TEXT_DIM)
    pos = torch.nn.Embedding(SEQ_LEN, TEXT_DIM)
    norm = torch.nn.LayerNorm(TEXT_DIM)
    with torch.no_grad():
        emb = norm(tok(ids) + pos(torch.arange(SEQ_LEN))[None])
    return emb, ids


def capture(out_dir: Path = VECTORS_DIR, *, seed: int = SEED) -> dict[str, Any]:
    """Run the training step, write the vectors and ``metadata.json``, return the metadata."""
    import diffusers
    import peft
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    images = _images()
    text, _ = _text_encoder(torch)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=RANK,
            lora_alpha=RANK,
            init_lora_weights="gaussian",
            target_modules=["attn2.to_k", "attn2.to_v"],
        )
    )
    unet.train()
    modules = dict(unet.named_modules())
    trainable = [p for p in unet.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=LR)
    sched = DDPMScheduler(num_train_timesteps=1000)
    gen = torch.Generator().manual_seed(seed)

    def loss_of_step() -> Any:
        noise = torch.randn(images.shape, generator=gen)
        t = torch.randint(0, 1000, (images.shape[0],), generator=gen)
        noisy = sched.add_noise(images, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=text).sample
        return torch.nn.functional.mse_loss(pred, noise)

    losses = []
    for _ in range(WARMUP_STEPS):
        optim.zero_grad()
        loss = loss_of_step()
        loss.backward()
        optim.step()
        losses.append(loss.detach().item())

    seen: dict[str, dict[str, Any]] = {}
    handles = []
    for name in LAYERS:

        def hook(mod: Any, args: tuple[Any, ...], out: Any, name: str = name) -> None:
            rec = seen.setdefault(name, {})
            rec["X"], rec["Y"] = args[0].detach(), out.detach()
            out.register_hook(lambda g: rec.__setitem__("dY", g.detach()))

        handles.append(modules[name].register_forward_hook(hook))
    optim.zero_grad()
    loss = loss_of_step()
    loss.backward()
    losses.append(loss.detach().item())
    for h in handles:
        h.remove()

    out_dir.mkdir(parents=True, exist_ok=True)
    layers_meta = []
    for name in LAYERS:
        mod, rec = modules[name], seen[name]
        a_lin, b_lin = mod.lora_A["default"], mod.lora_B["default"]
        x_req = rec["X"].clone().requires_grad_(True)
        with torch.enable_grad():
            (dx,) = torch.autograd.grad(mod(x_req), x_req, rec["dY"])

        def flat(t: Any) -> np.ndarray:
            arr = t.detach().numpy().astype(np.float32)
            return np.ascontiguousarray(arr.reshape(-1, arr.shape[-1]))

        fp = {
            "X": flat(rec["X"]),
            "W": np.ascontiguousarray(flat(mod.base_layer.weight).T),
            "A": np.ascontiguousarray(flat(a_lin.weight).T),
            "B": flat(b_lin.weight),
            "dY": flat(rec["dY"]),
            "Y": flat(rec["Y"]),
            "dX": flat(dx),
            "dA": np.ascontiguousarray(flat(a_lin.weight.grad).T),
            "dB": flat(b_lin.weight.grad),
        }
        res = lora_quantized(fp["X"], fp["W"], fp["A"], fp["B"], fp["dY"])
        arrays: dict[str, np.ndarray] = dict(fp)
        for run in res.runs:
            g = run.op.name
            arrays[f"{g}.a"] = run.a_q.values
            arrays[f"{g}.a_scale"] = run.a_q.scale_vector
            arrays[f"{g}.b"] = run.b_q.values
            arrays[f"{g}.b_scale"] = run.b_q.scale_vector
            arrays[f"{g}.acc"] = run.acc.astype(np.int32)
        path = out_dir / file_name(name)
        write_npz(path, arrays)
        ref = lora_fp32(fp["X"], fp["W"], fp["A"], fp["B"], fp["dY"])
        n, d_in = fp["X"].shape
        d_out = fp["W"].shape[1]
        layers_meta.append(
            {
                "layer": name,
                "file": path.name,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "n": n,
                "d_in": d_in,
                "d_out": d_out,
                "rank": RANK,
                "gemms": [r.op.name for r in res.runs],
                # INT8 layer vs torch's own FP32 tensors, relative Frobenius error.
                "rel_error_vs_torch": {
                    k: round(rel_error(getattr(res, k), fp[k]), 6) for k in ("Y", "dX", "dA", "dB")
                },
                # Golden FP32 formulas vs torch autograd: checks the gradient algebra.
                "fp32_formula_vs_torch": {
                    k: float(f"{rel_error(getattr(ref, k), fp[k]):.3g}")
                    for k in ("Y", "dX", "dA", "dB")
                },
            }
        )

    meta = {
        "format_version": FORMAT_VERSION,
        "description": (
            "Real LoRA (rank 4) key/value cross-attention layers from one noise-prediction "
            "training step of a small random-init diffusers UNet2DConditionModel on two "
            "scikit-learn sample photos; FP32 tensors from torch plus the golden INT8 GEMMs."
        ),
        "regenerate": "python -m cdm_qta.golden.capture_vectors",
        "seed": seed,
        "warmup_steps": WARMUP_STEPS,
        "learning_rate": LR,
        "losses": [round(v, 6) for v in losses],
        "captions": list(CAPTIONS),
        "data": "sklearn.datasets.load_sample_images(): china.jpg, flower.jpg, centre crop, "
        f"bicubic {RESOLUTION}x{RESOLUTION}, scaled to [-1, 1]",
        "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()},
        "lora": {"r": RANK, "lora_alpha": RANK, "target_modules": ["attn2.to_k", "attn2.to_v"]},
        "convention": "W = base.weight.T, A = lora_A.weight.T, B = lora_B.weight, "
        "X/dY/Y/dX flattened to (batch*77, features); Y = X W + X A B^T",
        "quantization": {"q": 8, "rounding": "nearest", "acc_bits": 32},
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "peft": peft.__version__,
            "numpy": np.__version__,
        },
        "layers": layers_meta,
    }
    write_json(out_dir / "metadata.json", meta)
    return meta


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically: a temporary file beside ``path``, then a rename."""
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdm_qta.golden.capture_vectors", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=VECTORS_DIR, help="output folder")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    meta = capture(args.out, seed=args.seed)
    total = sum((args.out / m["file"]).stat().st_size for m in meta["layers"])
    for m in meta["layers"]:
        errs = " ".join(f"{k}={v:.4f}" for k, v in m["rel_error_vs_torch"].items())
        print(f"{m['file']}: n={m['n']} d_in={m['d_in']} d_out={m['d_out']}  {errs}")
    print(
        f"wrote {len(meta['layers'])} layers, {total / 1e6:.2f} MB, in "
        f"{time.perf_counter() - t0:.1f} s to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
