"""The embedded data: scikit-learn's 8x8 digits, split once, plus a user's own image folder.

Why digits: they ship inside the scikit-learn wheel (1797 images), so pretraining, fine-tuning
and scoring run offline, and a digit classifier gives an objective "is this the concept?" score.
Digit 9 is the *new concept*: it is held out of pretraining, ten of its images are the instance
images ``qta train`` learns from, and the other nines are the validation set. The split is a
fixed permutation (seed :data:`SPLIT_SEED`), so every run and every machine sees the same images:

* ``classifier``: a third of every class, only ever used to train the frozen digit classifier;
* ``pretrain``: the rest of digits 0-8 (the base model's prior; also the class images);
* ``instance``: :data:`INSTANCE_IMAGES` nines; ``validation``: the remaining nines.

Images are float32 in [-1, 1] (the digits' 0-16 ink levels scaled), one channel, 8 x 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CLASS_WORDS",
    "CONCEPT_DIGIT",
    "IMAGE_SUFFIXES",
    "INSTANCE_IMAGES",
    "RESOLUTION",
    "DigitSplits",
    "digit_splits",
    "load_image_folder",
]

#: Side of every image the model sees (the digits' native size).
RESOLUTION = 8
#: The digit held out of pretraining: the new concept.
CONCEPT_DIGIT = 9
#: Nines the default concept is learned from ("a handful of images").
INSTANCE_IMAGES = 10
#: Seed of the one permutation that splits the data set.
SPLIT_SEED = 20250611
#: Words the base model knows for digits 0-8 (its prompts are ``"a <word> digit"``).
CLASS_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class DigitSplits:
    """The fixed split of scikit-learn's digits (images (n, 1, 8, 8) in [-1, 1], labels 0-9)."""

    classifier_x: NDArray[np.float32]
    classifier_y: NDArray[np.int64]
    pretrain_x: NDArray[np.float32]
    pretrain_y: NDArray[np.int64]
    instance_x: NDArray[np.float32]
    validation_x: NDArray[np.float32]


def _scale(images: NDArray[np.floating]) -> NDArray[np.float32]:
    return (np.asarray(images, np.float32) / 8.0 - 1.0).reshape(-1, 1, RESOLUTION, RESOLUTION)


def digit_splits() -> DigitSplits:
    """Load the digits from the scikit-learn wheel (no download) and split them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = _scale(digits.images), digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    x, y = x[order], y[order]
    to_classifier = np.zeros(len(y), dtype=bool)
    for label in range(10):
        idx = np.flatnonzero(y == label)
        to_classifier[idx[: len(idx) // 3]] = True
    rest = ~to_classifier
    nines = np.flatnonzero(rest & (y == CONCEPT_DIGIT))
    known = rest & (y != CONCEPT_DIGIT)
    return DigitSplits(
        classifier_x=x[to_classifier],
        classifier_y=y[to_classifier],
        pretrain_x=x[known],
        pretrain_y=y[known],
        instance_x=x[nines[:INSTANCE_IMAGES]],
        validation_x=x[nines[INSTANCE_IMAGES:]],
    )


def load_image_folder(folder: Path) -> NDArray[np.float32]:
    """A user's PNG/JPEG images as the model sees them: grayscale, 8 x 8, ink bright, [-1, 1].

    Photos are usually dark ink on white paper while the digits are bright ink on black, so an
    image whose border is brighter than its centre is inverted. Each image is stretched to the
    full range before scaling, as the digits use the whole 0-16 range.

    Raises
    ------
    FileNotFoundError
        The folder does not exist.
    ValueError
        It holds no PNG/JPEG image, or one of them cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"instance data folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no PNG or JPEG images")
    out = []
    for path in files:
        try:
            with Image.open(path) as img:
                gray = img.convert("L").resize((RESOLUTION, RESOLUTION), Image.Resampling.LANCZOS)
                arr = np.asarray(gray, np.float32) / 255.0
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"cannot read image {path}: {exc}") from None
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).mean()
        if border > arr[2:-2, 2:-2].mean():
            arr = 1.0 - arr
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        out.append(arr * 2.0 - 1.0)
    return np.stack(out).reshape(-1, 1, RESOLUTION, RESOLUTION).astype(np.float32)
