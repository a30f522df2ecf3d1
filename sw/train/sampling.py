"""Noise schedule and sampling: the DDPM schedule the model trains with, DDIM to sample.

Why DDIM with few steps: scoring needs hundreds of samples per model and seed on two cores;
deterministic DDIM (eta = 0) with :data:`SAMPLE_STEPS` steps gives the same pictures for the
same seeds, so base, FP32 and INT8 models are compared on identical starting noise.
Classifier-free guidance is kept low (:data:`GUIDANCE`): at 3.0 the samples of this small model
stop looking like digits. Guidance 1.0 is the plain conditional model (one UNet pass per step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .data import RESOLUTION
from .models import TextEncoder, WordTokenizer

__all__ = [
    "GUIDANCE",
    "SAMPLE_STEPS",
    "TRAIN_TIMESTEPS",
    "encode_prompts",
    "sample",
    "train_scheduler",
]

TRAIN_TIMESTEPS = 1000
SAMPLE_STEPS = 50
GUIDANCE = 1.0


def train_scheduler() -> Any:
    """The DDPM noise schedule of pretraining and fine-tuning (cosine betas suit 8 x 8 images)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2")


def encode_prompts(
    tokenizer: WordTokenizer,
    text_encoder: TextEncoder,
    prompts: Sequence[str],
    extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text embeddings (len(prompts), MAX_LENGTH, TEXT_DIM) of ``prompts``."""
    return text_encoder(tokenizer.encode(prompts), extra)


@torch.no_grad()
def sample(
    unet: Any,
    tokenizer: WordTokenizer,
    text_encoder: TextEncoder,
    prompts: Sequence[str],
    *,
    seed: int,
    extra: torch.Tensor | None = None,
    guidance: float = GUIDANCE,
    steps: int = SAMPLE_STEPS,
    batch: int = 512,
) -> torch.Tensor:
    """One image per prompt, (len(prompts), 1, 8, 8) in [-1, 1]; the noise depends on ``seed``
    and the prompt's position only, so two models sampled with one seed start from one noise."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(train_scheduler().config)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(prompts), 1, RESOLUTION, RESOLUTION, generator=gen)
    uncond = encode_prompts(tokenizer, text_encoder, [""])
    out = []
    was_training = unet.training
    unet.eval()
    for lo in range(0, len(prompts), batch):
        cond = encode_prompts(tokenizer, text_encoder, prompts[lo : lo + batch], extra)
        x = noise[lo : lo + batch]
        for t in sched.timesteps:
            if guidance == 1.0:
                eps = unet(x, t, encoder_hidden_states=cond).sample
            else:
                both = torch.cat([uncond.expand(len(x), -1, -1), cond])
                e_u, e_c = unet(torch.cat([x, x]), t, encoder_hidden_states=both).sample.chunk(2)
                eps = e_u + guidance * (e_c - e_u)
            x = sched.step(eps, t, x).prev_sample
        out.append(x.clamp(-1.0, 1.0))
    unet.train(was_training)
    return torch.cat(out)
