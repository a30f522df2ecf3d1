"""What a training run leaves behind, in the names diffusers' training scripts use.

* ``pytorch_lora_weights.safetensors``: the LoRA adapters in peft's format, written by diffusers'
  own ``save_lora_adapter`` (peft's key names plus the ``LoraConfig`` as metadata), so
  ``unet.load_lora_adapter(folder, prefix=None)`` and ``peft.set_peft_model_state_dict`` load it
  back;
* ``<new1>.safetensors``: the modifier token's embedding, ``{token: (dim,)}``, as diffusers'
  Custom Diffusion script saves it.

:func:`output_folder` makes every run's folder appear whole or not at all: files go to a hidden
temporary folder beside the target, which is renamed into place only when the run finished.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["LORA_WEIGHTS", "load_token", "output_folder", "save_lora", "save_token"]

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def save_lora(unet: Any, folder: Path) -> Path:
    """Write ``unet``'s LoRA adapters to ``folder/pytorch_lora_weights.safetensors``."""
    import logging

    log = logging.getLogger("diffusers.models.modeling_utils")
    old = log.level
    log.setLevel(logging.ERROR)  # warns about casts to float32, which is what it is already
    try:
        unet.save_lora_adapter(str(folder), weight_name=LORA_WEIGHTS)
    finally:
        log.setLevel(old)
    return folder / LORA_WEIGHTS


def save_token(token: str, embedding: torch.Tensor, folder: Path) -> Path:
    """Write the modifier token's embedding to ``folder/<token>.safetensors``."""
    from safetensors.torch import save_file

    path = folder / f"{token}.safetensors"
    save_file({token: embedding.detach().reshape(-1).contiguous()}, str(path))
    return path


def load_token(path: Path) -> tuple[str, torch.Tensor]:
    """The (token, embedding) pair :func:`save_token` wrote."""
    from safetensors.torch import load_file

    (item,) = load_file(str(path)).items()
    return item


@contextlib.contextmanager
def output_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``target`` when the block succeeds.

    Raises
    ------
    FileNotFoundError
        The parent of ``target`` does not exist.
    RuntimeError
        ``target`` exists and is neither empty nor an earlier run's output (no ``report.json``):
        refusing to replace what this command did not write.
    """
    target = Path(target)
    if not target.parent.resolve().is_dir():
        raise FileNotFoundError(f"the parent folder of --output-dir {target} does not exist")
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / "report.json").exists())
    ):
        raise RuntimeError(
            f"--output-dir {target} exists and is not an earlier qta train output; "
            "choose another folder"
        )
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        yield tmp
        for path in [tmp, *tmp.rglob("*")]:  # safetensors and mkdtemp create private files
            path.chmod(0o755 if path.is_dir() else 0o644)
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            target.replace(old / "previous")
            tmp.replace(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.replace(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
