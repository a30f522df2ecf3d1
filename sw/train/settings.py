"""The settings of one fine-tuning run, free of torch so the command line can show defaults.

Why a module of its own: ``qta --help`` and ``qta train --help`` must work (and print the tuned
defaults) without importing torch, and the defaults must be written once. The values are the
tuned ones (README, "Fine-tuning a new concept", has the measured scores and which targets they
still miss).
"""

from __future__ import annotations

import dataclasses

from cdm_qta.golden.quant import Rounding
from cdm_qta.hw.checks import check_int, check_positive

__all__ = ["OFFLOADS", "PRECISIONS", "TrainConfig"]

PRECISIONS = ("fp32", "int8")
OFFLOADS = ("lora", "all")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a fine-tuning run depends on (the defaults are the tuned ones)."""

    precision: str = "int8"
    max_train_steps: int = 2000
    rank: int = 4
    learning_rate: float = 2e-2
    #: Learning rate of ``V*``'s embedding (None: ``learning_rate``), as textual inversion tunes it.
    token_learning_rate: float | None = None
    seed: int = 0
    modifier_token: str = "<new1>"
    class_word: str = "digit"
    train_batch_size: int = 8
    num_class_images: int = 180
    prior_loss_weight: float = 1.0
    grad_rounding: Rounding = "nearest"
    offload: str = "lora"
    #: ``constant`` or ``cosine`` (decay to zero over the run), diffusers' ``--lr_scheduler``.
    lr_scheduler: str = "cosine"
    #: Class images for prior preservation: ``generated`` by the base model (DreamBooth's way)
    #: or ``real`` digits of the base classes.
    class_prior: str = "generated"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        check_positive("max_train_steps", self.max_train_steps)
        check_positive("rank", self.rank)
        check_positive("train_batch_size", self.train_batch_size)
        check_int("num_class_images", self.num_class_images, 0, 1 << 20)
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, not {self.learning_rate!r}")
        if not self.prior_loss_weight >= 0:
            raise ValueError(f"prior_loss_weight must be >= 0, not {self.prior_loss_weight!r}")
        if self.lr_scheduler not in ("constant", "cosine"):
            raise ValueError(f"lr_scheduler must be constant or cosine, not {self.lr_scheduler!r}")
        if self.class_prior not in ("generated", "real"):
            raise ValueError(f"class_prior must be generated or real, not {self.class_prior!r}")
        if self.offload not in OFFLOADS:
            raise ValueError(f"offload must be one of {OFFLOADS}, not {self.offload!r}")
        if self.grad_rounding not in ("nearest", "stochastic"):
            raise ValueError(
                f"grad_rounding must be nearest or stochastic, not {self.grad_rounding!r}"
            )

    @property
    def instance_prompt(self) -> str:
        return f"a {self.modifier_token} {self.class_word}"
