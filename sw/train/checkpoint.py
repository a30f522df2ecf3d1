"""The committed base model: safetensors files plus a manifest with their SHA-256 hashes.

Why a manifest: the checkpoint is data in git that code depends on, so a truncated, corrupted or
half-regenerated file must fail loudly at load time instead of training a broken model. The
files are written by :mod:`cdm_qta.sw.train.pretrain` (``python -m cdm_qta.sw.train.pretrain``)::

    checkpoint/
      unet.safetensors          diffusers UNet2DConditionModel weights (EMA)
      text_encoder.safetensors  TextEncoder weights
      classifier.safetensors    DigitClassifier weights
      tokenizer.json            the word vocabulary
      manifest.json             config, pretraining facts, sha256 of each file above
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import UNET_CONFIG, DigitClassifier, TextEncoder, WordTokenizer, build_unet

__all__ = ["CHECKPOINT_DIR", "FILES", "Checkpoint", "load_checkpoint", "sha256"]

#: Where the embedded checkpoint lives (installed as package data).
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"
FILES = ("unet.safetensors", "text_encoder.safetensors", "classifier.safetensors", "tokenizer.json")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Checkpoint:
    """The base model, frozen and in eval mode, plus its manifest."""

    unet: Any
    text_encoder: TextEncoder
    tokenizer: WordTokenizer
    classifier: DigitClassifier
    manifest: dict[str, Any]
    folder: Path


def _state(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise RuntimeError(f"checkpoint file {path} cannot be read: {exc}") from None


def load_checkpoint(folder: Path = CHECKPOINT_DIR) -> Checkpoint:
    """Verify every file against the manifest's hashes, then build the frozen models.

    Raises
    ------
    FileNotFoundError
        The folder, the manifest or one of :data:`FILES` is missing.
    RuntimeError
        A file's hash differs from the manifest (corrupt or regenerated without its manifest),
        or its tensors do not fit the models.
    """
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {folder} (manifest.json missing); "
            "run `python -m cdm_qta.sw.train.pretrain` to make one"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        hashes = manifest["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RuntimeError(f"checkpoint manifest {manifest_path} is corrupt: {exc}") from None
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {path} is missing")
        if sha256(path) != hashes.get(name):
            raise RuntimeError(
                f"checkpoint file {path} does not match its SHA-256 in manifest.json "
                "(corrupt, or regenerated without its manifest)"
            )
    tokenizer = WordTokenizer.from_json((folder / "tokenizer.json").read_text())
    unet = build_unet()
    text_encoder = TextEncoder(len(tokenizer))
    classifier = DigitClassifier()
    for module, name in (
        (unet, "unet.safetensors"),
        (text_encoder, "text_encoder.safetensors"),
        (classifier, "classifier.safetensors"),
    ):
        try:
            module.load_state_dict(_state(folder / name))
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise RuntimeError(f"checkpoint file {folder / name} does not fit: {first}") from None
        module.requires_grad_(False)
        module.eval()
    if manifest.get("unet_config") != json.loads(json.dumps(UNET_CONFIG)):
        raise RuntimeError(f"checkpoint {folder} was made for another UNet configuration")
    return Checkpoint(unet, text_encoder, tokenizer, classifier, manifest, folder)
