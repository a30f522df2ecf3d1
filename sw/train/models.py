"""The embedded model's parts: tokenizer, text encoder, UNet config and digit classifier.

Everything is the project's own and tiny, so it pretrains on two cores in minutes and nothing is
ever downloaded:

* :class:`WordTokenizer`: whitespace words -> ids, a fixed :data:`MAX_LENGTH` with ``<bos>``,
  ``<eos>`` and ``<pad>``, like CLIP's 77 tokens in miniature; modifier tokens (``<new1>``) are
  appended at fine-tuning time, as Custom Diffusion adds ``V*`` to CLIP's tokenizer.
* :class:`TextEncoder`: token plus position embedding, one pre-norm transformer layer and a final
  LayerNorm (CLIP's text tower in miniature). It is frozen after pretraining; a modifier token's
  embedding lives *outside* it (``extra``) as its own FP32 parameter, so training ``V*`` can
  never move the embeddings of the words the model already knows.
* :data:`UNET_CONFIG`: a diffusers ``UNet2DConditionModel`` with cross-attention at 8 x 8 and in
  the 4 x 4 middle: four transformer blocks, so eight ``attn2.to_k``/``attn2.to_v`` projections
  (text width 64 -> 32 or 64 channels) for LoRA.
* :class:`DigitClassifier`: a small CNN trained on the classifier split only; it scores samples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .data import CLASS_WORDS, RESOLUTION

__all__ = [
    "MAX_LENGTH",
    "TEXT_DIM",
    "UNET_CONFIG",
    "DigitClassifier",
    "TextEncoder",
    "WordTokenizer",
    "base_prompt",
    "build_unet",
]

#: Tokens per prompt, ``<bos>`` and ``<eos>`` included (padded with ``<pad>``).
MAX_LENGTH = 8
#: Width of the text embedding: the key/value projections' input (``cross_attention_dim``).
TEXT_DIM = 64
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
#: The class word of every base prompt.
CLASS_WORD = "digit"

UNET_CONFIG: dict[str, Any] = {
    "sample_size": RESOLUTION,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "layers_per_block": 1,
    "cross_attention_dim": TEXT_DIM,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
}


def base_prompt(label: int) -> str:
    """The prompt the base model learned digit ``label`` (0-8) under."""
    return f"a {CLASS_WORDS[label]} {CLASS_WORD}"


def build_unet() -> Any:
    """A fresh (random) UNet of :data:`UNET_CONFIG`."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


@dataclass
class WordTokenizer:
    """Whitespace word tokenizer with a fixed length; serialises to a small JSON vocabulary."""

    words: list[str] = field(
        default_factory=lambda: [*SPECIAL_TOKENS, "a", CLASS_WORD, *CLASS_WORDS]
    )
    max_length: int = MAX_LENGTH

    def __post_init__(self) -> None:
        if len(set(self.words)) != len(self.words) or list(self.words[:4]) != list(SPECIAL_TOKENS):
            raise ValueError("a tokenizer vocabulary starts with the special tokens, no repeats")

    @property
    def ids(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def add_token(self, token: str) -> int:
        """Append a new token (a modifier such as ``<new1>``) and return its id.

        Raises
        ------
        ValueError
            The token is empty, contains whitespace, or is already a word of the vocabulary.
        """
        if not token or token.split() != [token]:
            raise ValueError(f"a modifier token is one word without spaces, not {token!r}")
        if token in self.words:
            raise ValueError(f"the token {token!r} is already in the vocabulary; choose another")
        self.words.append(token)
        return len(self.words) - 1

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token ids, (len(prompts), max_length), unknown words as ``<unk>``.

        Raises
        ------
        ValueError
            A prompt longer than ``max_length - 2`` words (it would be cut silently otherwise).
        """
        ids = self.ids
        out = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = prompt.split()
            if len(words) > self.max_length - 2:
                raise ValueError(
                    f"prompt {prompt!r} has {len(words)} words; at most {self.max_length - 2}"
                )
            seq = [ids["<bos>"], *(ids.get(w, ids["<unk>"]) for w in words), ids["<eos>"]]
            out[row, : len(seq)] = torch.tensor(seq)
        return out

    def to_json(self) -> str:
        return json.dumps({"words": self.words, "max_length": self.max_length}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> WordTokenizer:
        doc = json.loads(text)
        return cls(words=list(doc["words"]), max_length=int(doc["max_length"]))


class TextEncoder(nn.Module):
    """A miniature CLIP text tower: embeddings, one pre-norm transformer layer, LayerNorm."""

    def __init__(self, vocab_size: int, dim: int = TEXT_DIM, max_length: int = MAX_LENGTH) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(max_length, dim)
        self.layer = nn.TransformerEncoderLayer(
            dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(dim)

    def embed(self, ids: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings; ids from ``vocab_size`` on take rows of ``extra`` (new tokens)."""
        emb = self.token(ids.clamp(max=self.vocab_size - 1))
        new = ids >= self.vocab_size
        if extra is None:
            if bool(new.any()):
                raise ValueError("the prompt uses a new token but no embedding was given for it")
            return emb
        rows = extra[(ids - self.vocab_size).clamp(min=0)]
        return torch.where(new[..., None], rows, emb)

    def forward(self, ids: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        pos = self.position(torch.arange(ids.shape[1], device=ids.device))[None]
        return self.norm(self.layer(self.embed(ids, extra) + pos))


class DigitClassifier(nn.Module):
    """Two 3x3 convolutions, a pool and two linear layers: 8 x 8 image in [-1, 1] -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * (RESOLUTION // 2) ** 2, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        """Predicted labels (eval mode, no gradients), in batches."""
        self.eval()
        return torch.cat([self(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
