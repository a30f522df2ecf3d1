"""UNet configurations of the Stable Diffusion models we trace, written in code.

The dicts are the ``unet/config.json`` fields of the public checkpoints that change the
architecture (everything else is diffusers' default), so ``UNet2DConditionModel(**config)`` on
the ``meta`` device rebuilds each network's exact shapes without downloading anything or
allocating memory. Parameter counts in :data:`MODELS` are asserted by the tests as a check that
the configs were copied faithfully.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MODELS", "UNetSpec", "get_model"]


@dataclass(frozen=True)
class UNetSpec:
    """One traceable UNet: its diffusers config plus what its training step feeds it.

    Members
    -------
    name : short name used on the command line.
    description : the checkpoint the config comes from.
    config : keyword arguments of ``diffusers.UNet2DConditionModel``.
    resolution : native image size in pixels (the VAE divides it by ``vae_factor``).
    text_len : text tokens (CLIP's 77).
    added_cond : extra conditioning tensors and their per-sample shapes (SDXL's micro-conditioning).
    parameters : expected number of UNet parameters (a guard against config typos).
    """

    name: str
    description: str
    config: Mapping[str, Any]
    resolution: int
    parameters: int
    text_len: int = 77
    vae_factor: int = 8
    added_cond: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def text_dim(self) -> int:
        """Width of the text embedding, the key/value projections' input."""
        return int(self.config["cross_attention_dim"])

    @property
    def latent_channels(self) -> int:
        return int(self.config["in_channels"])

    @property
    def resolution_step(self) -> int:
        """Pixel sizes must be multiples of this: VAE factor times every UNet downsampling."""
        return self.vae_factor * 2 ** (len(self.config["block_out_channels"]) - 1)


_SD15: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

MODELS: dict[str, UNetSpec] = {
    "sd15": UNetSpec(
        name="sd15",
        description="Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5), 512 px",
        config=_SD15,
        resolution=512,
        parameters=859_520_964,
    ),
    "sd21": UNetSpec(
        name="sd21",
        description="Stable Diffusion 2.1 (stabilityai/stable-diffusion-2-1, v-model), 768 px",
        config={
            **_SD15,
            "sample_size": 96,
            "cross_attention_dim": 1024,
            "attention_head_dim": (5, 10, 20, 20),
            "use_linear_projection": True,
            "upcast_attention": True,
        },
        resolution=768,
        parameters=865_910_724,
    ),
    "sdxl": UNetSpec(
        name="sdxl",
        description="Stable Diffusion XL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0), "
        "1024 px",
        config={
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "layers_per_block": 2,
            "transformer_layers_per_block": (1, 2, 10),
            "cross_attention_dim": 2048,
            "attention_head_dim": (5, 10, 20),
            "use_linear_projection": True,
            "norm_num_groups": 32,
            "addition_embed_type": "text_time",
            "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
        resolution=1024,
        parameters=2_567_463_684,
        added_cond={"text_embeds": (1280,), "time_ids": (6,)},
    ),
    "tiny": UNetSpec(
        name="tiny",
        description="a two-level toy UNet with SD's block types, for fast tests, 128 px",
        config={
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "layers_per_block": 1,
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 8,
        },
        resolution=128,
        parameters=792_964,
    ),
}


def get_model(name: str) -> UNetSpec:
    """Return the spec called ``name``, or raise a ValueError that lists the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}"
        ) from None
