"""Pretrain the embedded base model on digits 0-8 and write the checkpoint (reproducible).

``python -m cdm_qta.sw.train.pretrain [--out DIR]`` (about 13 minutes at one torch thread;
``nice -n 10`` on a shared machine). It trains, in this order and each seeded:

1. the :class:`~cdm_qta.sw.train.models.DigitClassifier` on the classifier split only (shifted
   and noisy copies, so it also reads slightly imperfect samples), and measures its accuracy on
   every real digit it never saw;
2. the UNet and the text encoder jointly, noise-prediction MSE under the DDPM schedule, on the
   pretraining split (digits 0-8) with prompts ``"a <word> digit"``; 10 % of captions are empty
   (classifier-free guidance needs the unconditional model) and 10 % are the class prompt
   ``"a digit"`` (what Custom Diffusion's prior preservation names). The weights kept are an
   exponential moving average, which samples much cleaner than the last iterate;
3. a check: samples for every base prompt, classified, at guidance 1.0 and 1.5.

The files and their SHA-256 hashes go to the manifest (:mod:`.checkpoint`); each file is written
atomically and the manifest last, so an interrupted run never looks like a checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cdm_qta.hw.files import write_atomic

from .checkpoint import CHECKPOINT_DIR, FILES, sha256
from .data import CLASS_WORDS, digit_splits
from .models import UNET_CONFIG, DigitClassifier, TextEncoder, WordTokenizer, base_prompt
from .models import build_unet as new_unet
from .sampling import TRAIN_TIMESTEPS, sample, train_scheduler

__all__ = ["main", "pretrain"]

SEED = 0
STEPS = 4000
BATCH = 64
LR = 2e-3
EMA_DECAY = 0.999
CLASSIFIER_EPOCHS = 40


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel in each direction (zero = background fill)."""
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (2,), generator=gen).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def train_classifier(x: np.ndarray, y: np.ndarray, seed: int) -> DigitClassifier:
    """The frozen scorer: trained on the classifier split only, with shifts and noise."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in tqdm(range(CLASSIFIER_EPOCHS), desc="classifier", unit="epoch", leave=False):
        order = torch.randperm(len(yt), generator=gen)
        model.train()
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            xb = _shift(xt[idx], gen)
            xb = (xb + 0.1 * torch.randn(xb.shape, generator=gen)).clamp(-1, 1)
            loss = torch.nn.functional.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.requires_grad_(False)
    return model.eval()


def _captions(labels: torch.Tensor, gen: torch.Generator) -> list[str]:
    roll = torch.rand(len(labels), generator=gen).tolist()
    return [
        "" if r < 0.1 else "a digit" if r < 0.2 else base_prompt(int(lab))
        for r, lab in zip(roll, labels.tolist(), strict=True)
    ]


def _ema(avg: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pa, pm in zip(avg.parameters(), model.parameters(), strict=True):
            pa.lerp_(pm, 1.0 - decay)


def pretrain(out: Path, *, seed: int = SEED, steps: int = STEPS) -> dict[str, Any]:
    """Train classifier, UNet and text encoder; write the checkpoint; return the manifest."""
    from safetensors.torch import save

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    t_start = time.perf_counter()
    splits = digit_splits()
    classifier = train_classifier(splits.classifier_x, splits.classifier_y, seed)
    seen_x = np.concatenate([splits.pretrain_x, splits.instance_x, splits.validation_x])
    seen_y = np.concatenate(
        [splits.pretrain_y, np.full(len(splits.instance_x) + len(splits.validation_x), 9)]
    )
    accuracy = float((classifier.predict(torch.from_numpy(seen_x)).numpy() == seen_y).mean())
    t_classifier = time.perf_counter() - t_start

    tokenizer = WordTokenizer()
    unet, text = new_unet(), TextEncoder(len(tokenizer))
    unet_ema, text_ema = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text)
    text_ema.requires_grad_(False)
    params = [*unet.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=1e-4)
    warmup = 200
    lr_at = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * s / steps))  # noqa: E731
    sched_lr = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    noise_sched = train_scheduler()
    gen = torch.Generator().manual_seed(seed + 1)
    x_all, y_all = torch.from_numpy(splits.pretrain_x), torch.from_numpy(splits.pretrain_y)
    losses = []
    unet.train()
    bar = tqdm(range(steps), desc="pretrain UNet", unit="step")
    for step in bar:
        idx = torch.randint(0, len(y_all), (BATCH,), generator=gen)
        x0 = x_all[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, TRAIN_TIMESTEPS, (BATCH,), generator=gen)
        cond = text(tokenizer.encode(_captions(y_all[idx], gen)))
        pred = unet(noise_sched.add_noise(x0, noise, t), t, encoder_hidden_states=cond).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched_lr.step()
        decay = min(EMA_DECAY, (1 + step) / (10 + step))
        _ema(unet_ema, unet, decay)
        _ema(text_ema, text, decay)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    t_unet = time.perf_counter() - t_start - t_classifier

    recognised = {}
    prompts = [base_prompt(c) for c in range(len(CLASS_WORDS)) for _ in range(50)]
    labels = torch.tensor([c for c in range(len(CLASS_WORDS)) for _ in range(50)])
    for guidance in (1.0, 1.5):
        images = sample(unet_ema, tokenizer, text_ema, prompts, seed=seed, guidance=guidance)
        recognised[str(guidance)] = float((classifier.predict(images) == labels).float().mean())

    out.mkdir(parents=True, exist_ok=True)
    for name, module in (
        ("unet.safetensors", unet_ema),
        ("text_encoder.safetensors", text_ema),
        ("classifier.safetensors", classifier),
    ):
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        write_atomic(out / name, save(state))
    write_atomic(out / "tokenizer.json", tokenizer.to_json())
    manifest: dict[str, Any] = {
        "description": "cdm-qta's embedded base model: a text-conditional diffusers "
        "UNet2DConditionModel pretrained on scikit-learn digits 0-8 (digit 9 is the new concept)",
        "regenerate": "python -m cdm_qta.sw.train.pretrain",
        "seed": seed,
        "steps": steps,
        "batch": BATCH,
        "learning_rate": LR,
        "ema_decay": EMA_DECAY,
        "unet_config": json.loads(json.dumps(UNET_CONFIG)),
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "text_encoder_parameters": sum(p.numel() for p in text.parameters()),
        "final_loss": round(float(np.mean(losses[-200:])), 5),
        "classifier_accuracy_on_unseen_real_digits": round(accuracy, 4),
        "samples_recognised_by_guidance": {k: round(v, 4) for k, v in recognised.items()},
        "seconds": {"classifier": round(t_classifier, 1), "unet": round(t_unet, 1)},
        "torch_threads": torch.get_num_threads(),
        "versions": _versions(),
        "sha256": {name: sha256(out / name) for name in FILES},
    }
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def _versions() -> dict[str, str]:
    import diffusers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdm_qta.sw.train.pretrain", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR, help="checkpoint folder")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--steps", type=int, default=STEPS, help=f"UNet steps (default {STEPS})")
    args = parser.parse_args(argv)
    manifest = pretrain(args.out, seed=args.seed, steps=args.steps)
    print(json.dumps({k: v for k, v in manifest.items() if k != "versions"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
