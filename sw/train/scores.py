"""Quality, measured: concept score, prior score and validation loss of one model.

* **concept score**: the share of samples for the concept prompt (``"a <new1> digit"``) that the
  frozen classifier reads as the concept digit (9);
* **prior score**: the share of samples for the base prompts (``"a three digit"`` ...) read as
  their own digit, every base class equally often: what the fine-tune must not break;
* **validation loss**: noise-prediction MSE on the held-out concept images
  (:func:`~cdm_qta.sw.train.loop.validation_loss`).

Samples are drawn with seeds that depend on ``seed`` only, so base, FP32 and INT8 models are
scored on the same starting noise. With ``n`` samples a score's sampling noise is about
``100 * sqrt(p (1 - p) / n)`` points: 2.2 at n = 500 and p = 0.5.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from .checkpoint import Checkpoint
from .data import CLASS_WORDS, CONCEPT_DIGIT
from .loop import validation_loss
from .models import base_prompt
from .sampling import GUIDANCE, sample

__all__ = ["Scores", "score_model"]


@dataclasses.dataclass(frozen=True)
class Scores:
    """What :func:`score_model` measured (scores are fractions, 0 to 1)."""

    concept_score: float
    prior_score: float
    validation_loss: float
    samples: int
    guidance: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def score_model(
    ckpt: Checkpoint,
    unet: Any,
    tokenizer: Any,
    token: torch.Tensor,
    *,
    concept_prompt: str,
    validation_images: np.ndarray,
    samples: int = 500,
    seed: int = 0,
    guidance: float = GUIDANCE,
) -> Scores:
    """Score ``unet`` with ``token`` as the modifier's embedding (``samples`` per score)."""
    concept = sample(
        unet, tokenizer, ckpt.text_encoder, [concept_prompt] * samples, seed=seed,
        extra=token, guidance=guidance,
    )  # fmt: skip
    labels = [c % len(CLASS_WORDS) for c in range(samples)]
    prior = sample(
        unet, tokenizer, ckpt.text_encoder, [base_prompt(c) for c in labels], seed=seed + 1,
        extra=token, guidance=guidance,
    )  # fmt: skip
    hit = (ckpt.classifier.predict(concept) == CONCEPT_DIGIT).float().mean()
    kept = (ckpt.classifier.predict(prior) == torch.tensor(labels)).float().mean()
    val = validation_loss(unet, ckpt, tokenizer, token, validation_images, concept_prompt)
    return Scores(float(hit), float(kept), val, samples, guidance)
