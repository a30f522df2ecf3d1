"""Custom-Diffusion-style LoRA fine-tuning of the base model on a new concept, FP32 or INT8.

What is trained, as in Custom Diffusion with LoRA (the paper's Sec. II-A): the modifier token
``V*``'s embedding (``<new1>``, initialised from the class word's) and rank-``r`` LoRA adapters on
every cross-attention key and value projection (``attn2.to_k``/``attn2.to_v``); everything else is
frozen. The instance prompt is ``"a <new1> <class word>"``. Prior preservation: every step also
trains on class images of the digits the model already knows, each under its own prompt, with
weight ``prior_loss_weight``, so the adapters cannot repaint the other digits. The class images
are sampled from the base model (DreamBooth's convention; measured here, real digits as class
images preserve the prior no better and cost the same).

FP32 and INT8 runs are the same code with the same seeds: the instance/class batches, the noise
and the timesteps come from one generator seeded by ``seed``, the LoRA initialisation from
``torch.manual_seed(seed)``. ``precision="int8"`` only swaps the peft layers for the INT8 layer
(:func:`~cdm_qta.sw.train.qlora.int8_lora`) whose GEMMs run on the accelerator; the master
weights (A, B, ``V*``) and AdamW's state stay FP32.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import Checkpoint
from .data import DigitSplits
from .models import base_prompt
from .offload import Accelerator
from .offload_all import int8_everything
from .qlora import int8_lora, lora_layers
from .sampling import TRAIN_TIMESTEPS, train_scheduler
from .settings import TrainConfig

__all__ = [
    "TARGET_MODULES",
    "FineTuned",
    "class_images",
    "fine_tune",
    "generated_class_images",
    "prior_images",
    "validation_loss",
]

TARGET_MODULES = ("attn2.to_k", "attn2.to_v")
#: Seed of the noise and timesteps of the validation loss: one fixed draw for every model.
VALIDATION_SEED = 777


@dataclasses.dataclass
class FineTuned:
    """A trained concept: the UNet with its LoRA adapters, the tokenizer and ``V*``'s embedding."""

    config: TrainConfig
    unet: Any
    tokenizer: Any
    token_embedding: torch.Tensor
    losses: list[dict[str, float]]
    seconds: float

    @property
    def final_loss(self) -> float:
        """Mean total training loss of the last 10 % of the steps (one step is noise)."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return float(np.mean([r["loss"] for r in tail]))


def class_images(splits: DigitSplits, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` real images of the base classes, as balanced as possible, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(splits.pretrain_y))
    labels = splits.pretrain_y[order]
    per_class = [order[labels == c] for c in range(int(splits.pretrain_y.max()) + 1)]
    picked = [idx for group in zip(*per_class, strict=False) for idx in group][:count]
    return splits.pretrain_x[picked], splits.pretrain_y[picked]


def generated_class_images(
    ckpt: Checkpoint, count: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` class images *sampled from the base model* for the base prompts, balanced.

    diffusers' DreamBooth convention (``--num_class_images`` images generated for the class
    prompt): the prior loss then asks the fine-tuned model to keep drawing what the base model
    draws, rather than to refit real digits, which moves the base classes more.
    """
    from .data import CLASS_WORDS
    from .sampling import sample

    labels = np.arange(count) % len(CLASS_WORDS)
    if count == 0:
        return np.zeros((0, 1, 8, 8), np.float32), labels
    prompts = [base_prompt(int(c)) for c in labels]
    images = sample(ckpt.unet, ckpt.tokenizer, ckpt.text_encoder, prompts, seed=seed)
    return images.numpy(), labels


def prior_images(
    ckpt: Checkpoint, splits: DigitSplits, cfg: TrainConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The class images and labels ``cfg`` asks for (``cfg.num_class_images`` of them)."""
    if cfg.class_prior == "real":
        return class_images(splits, cfg.num_class_images, cfg.seed)
    return generated_class_images(ckpt, cfg.num_class_images, cfg.seed)


def add_lora(unet: Any, rank: int, seed: int) -> Any:
    """Add peft LoRA (``lora_alpha = r``: the paper's unscaled Eq. 1) to the target modules."""
    from peft import LoraConfig

    for name, module in unet.named_modules():
        if name.endswith(TARGET_MODULES) and rank > min(module.in_features, module.out_features):
            raise ValueError(
                f"rank {rank} is larger than the layer {name} ({module.in_features} -> "
                f"{module.out_features}); it must be at most "
                f"{min(module.in_features, module.out_features)}"
            )
    torch.manual_seed(seed)
    unet.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights=True, target_modules=list(TARGET_MODULES)
        )
    )
    return unet


def new_token(ckpt: Checkpoint, cfg: TrainConfig) -> tuple[Any, torch.nn.Parameter]:
    """A tokenizer with the modifier token and its FP32 embedding, from the class word's.

    Raises
    ------
    ValueError
        The class word is not a word the base model knows, or the token already is one.
    """
    tokenizer = copy.deepcopy(ckpt.tokenizer)
    if cfg.class_word not in tokenizer.ids:
        known = [w for w in tokenizer.words if not w.startswith("<")]
        raise ValueError(
            f"class word {cfg.class_word!r} is not in the model's vocabulary ({', '.join(known)})"
        )
    tokenizer.add_token(cfg.modifier_token)
    init = ckpt.text_encoder.token.weight[tokenizer.ids[cfg.class_word]].detach().clone()
    return tokenizer, torch.nn.Parameter(init[None].contiguous())


def fine_tune(
    ckpt: Checkpoint,
    instance: np.ndarray,
    prior: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    *,
    accelerator: Accelerator | None = None,
    progress: bool = True,
    position: int = 0,
) -> FineTuned:
    """Train ``cfg``'s concept on ``instance`` images; INT8 GEMMs go to ``accelerator``.

    ``prior`` holds the class images and their labels (possibly empty); ``position`` is the
    progress bar's line (runs side by side in two processes each keep their own).

    Raises
    ------
    ValueError
        No instance images, a rank larger than a layer, an unknown class word, or INT8 without an
        accelerator.
    """
    if len(instance) == 0:
        raise ValueError("no instance images to learn the concept from")
    if cfg.precision == "int8" and accelerator is None:
        raise ValueError("INT8 training needs an accelerator back end")
    torch.set_num_threads(1)
    unet = add_lora(copy.deepcopy(ckpt.unet), cfg.rank, cfg.seed)
    unet.train()
    tokenizer, token = new_token(ckpt, cfg)
    params = [
        p for layer in lora_layers(unet).values() for p in layer.parameters() if p.requires_grad
    ]
    token_lr = cfg.learning_rate if cfg.token_learning_rate is None else cfg.token_learning_rate
    opt = torch.optim.AdamW(
        [{"params": params}, {"params": [token], "lr": token_lr}],
        lr=cfg.learning_rate,
        weight_decay=0.0,
    )
    steps = cfg.max_train_steps
    decay = torch.optim.lr_scheduler.LambdaLR(
        opt,
        (lambda s: 0.5 * (1.0 + math.cos(math.pi * s / steps)))
        if cfg.lr_scheduler == "cosine"
        else (lambda s: 1.0),
    )
    sched = train_scheduler()
    gen = torch.Generator().manual_seed(cfg.seed)
    inst = torch.from_numpy(np.asarray(instance, np.float32))
    prior_x = torch.from_numpy(np.asarray(prior[0], np.float32))
    prior_y = [int(v) for v in prior[1]]
    bi = min(cfg.train_batch_size, len(inst))
    bp = min(cfg.train_batch_size, len(prior_y)) if cfg.prior_loss_weight > 0 else 0
    inst_ids = tokenizer.encode([cfg.instance_prompt] * bi)
    losses: list[dict[str, float]] = []
    t0 = time.perf_counter()
    quantized: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if cfg.precision == "int8" and accelerator is not None:
        offload = int8_everything if cfg.offload == "all" else int8_lora
        quantized = offload(unet, accelerator, grad_rounding=cfg.grad_rounding, seed=cfg.seed)
    bar = tqdm(
        range(cfg.max_train_steps),
        desc=f"train {cfg.precision}",
        unit="step",
        disable=not progress,
        leave=False,
        position=position,
    )
    with quantized:
        for step in bar:
            if accelerator is not None:
                accelerator.step = step + 1
            pick = torch.randperm(len(inst), generator=gen)[:bi]
            x0, ids = inst[pick], inst_ids
            if bp:
                cls = torch.randint(0, len(prior_y), (bp,), generator=gen)
                x0 = torch.cat([x0, prior_x[cls]])
                ids = torch.cat([ids, tokenizer.encode([base_prompt(prior_y[i]) for i in cls])])
            noise = torch.randn(x0.shape, generator=gen)
            t = torch.randint(0, TRAIN_TIMESTEPS, (len(x0),), generator=gen)
            cond = ckpt.text_encoder(ids, token)
            pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=cond).sample
            err = (pred - noise).pow(2).flatten(1).mean(1)
            loss_inst = err[:bi].mean()
            loss_prior = err[bi:].mean() if bp else torch.zeros(())
            loss = loss_inst + cfg.prior_loss_weight * loss_prior
            opt.zero_grad()
            loss.backward()
            opt.step()
            decay.step()
            losses.append(
                {"loss": loss.item(), "instance": loss_inst.item(), "prior": loss_prior.item()}
            )
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean([r['loss'] for r in losses[-20:]]):.4f}")
    unet.eval()
    return FineTuned(cfg, unet, tokenizer, token.detach().clone(), losses, time.perf_counter() - t0)


@torch.no_grad()
def validation_loss(
    unet: Any,
    ckpt: Checkpoint,
    tokenizer: Any,
    token: torch.Tensor | None,
    images: np.ndarray,
    prompt: str,
    *,
    draws: int = 8,
) -> float:
    """Noise-prediction MSE on held-out images, over one fixed draw of noise and timesteps.

    The same draw (:data:`VALIDATION_SEED`) for every model, so differences are the models'.
    """
    sched = train_scheduler()
    gen = torch.Generator().manual_seed(VALIDATION_SEED)
    x0 = torch.from_numpy(np.asarray(images, np.float32)).repeat(draws, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, TRAIN_TIMESTEPS, (len(x0),), generator=gen)
    cond = ckpt.text_encoder(tokenizer.encode([prompt]), token).expand(len(x0), -1, -1)
    was = unet.training
    unet.eval()
    total = 0.0
    for lo in range(0, len(x0), 512):
        sl = slice(lo, lo + 512)
        pred = unet(
            sched.add_noise(x0[sl], noise[sl], t[sl]), t[sl], encoder_hidden_states=cond[sl]
        )
        total += float((pred.sample - noise[sl]).pow(2).sum())
    unet.train(was)
    return total / noise.numel()
