"""Load (and write) the committed LoRA test vectors in ``golden/vectors/``, refusing bad files.

One ``.npz`` per layer holds plain arrays, no pickles:

- FP32 tensors from torch: ``X`` (n, d_in), ``W`` (d_in, d_out), ``A`` (d_in, r), ``B``
  (d_out, r), ``dY`` (n, d_out) are the inputs; ``Y``, ``dX``, ``dA``, ``dB`` torch's results.
- For every GEMM ``g`` of :func:`cdm_qta.golden.lora.lora_gemms`: ``g.a`` and ``g.b`` (int8,
  stored untransposed, as the GEMM's ``trans_a``/``trans_b`` say), ``g.a_scale`` and
  ``g.b_scale`` (float32, one per row/column of the result, or one per tensor) and ``g.acc``
  (int32, the exact accumulator). These are what an RTL regression loads and compares.

``metadata.json`` beside them says where every file came from, how to regenerate it
(``python -m cdm_qta.golden.capture_vectors``) and its SHA-256. The loader checks the checksum,
the keys, dtypes and shapes against the GEMM program, so a truncated, edited or foreign file
fails loudly with :class:`VectorsError` (a ``ValueError``) and a missing one with
``FileNotFoundError``; ``python -m cdm_qta.golden.vectors [FILE ...]`` checks files from the
shell and exits with 2 on the first bad one.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cdm_qta.hw.files import replacing

from .lora import GemmOp, lora_gemms

__all__ = [
    "FORMAT_VERSION",
    "VECTORS_DIR",
    "LayerVectors",
    "StoredGemm",
    "VectorsError",
    "layer_files",
    "load_all",
    "load_layer",
    "load_metadata",
    "main",
    "write_npz",
]

FORMAT_VERSION = 1
VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
METADATA = "metadata.json"

_FP32_KEYS = ("X", "W", "A", "B", "dY", "Y", "dX", "dA", "dB")
_GEMM_FIELDS = {
    "a": np.int8,
    "a_scale": np.float32,
    "b": np.int8,
    "b_scale": np.float32,
    "acc": np.int32,
}
# A fixed timestamp makes the zip bytes depend on the arrays only: regeneration is reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


class VectorsError(ValueError):
    """A vectors file or its metadata is corrupt, inconsistent or of an unknown format."""


@dataclass(frozen=True)
class StoredGemm:
    """One GEMM as stored: INT8 operands (untransposed), float32 scales, INT32 accumulator."""

    op: GemmOp
    a: NDArray[np.int8]
    a_scale: NDArray[np.float32]
    b: NDArray[np.int8]
    b_scale: NDArray[np.float32]
    acc: NDArray[np.int32]


@dataclass(frozen=True)
class LayerVectors:
    """A real LoRA layer: its FP32 tensors, its GEMM program and every stored GEMM."""

    path: Path
    layer: str
    tensors: Mapping[str, NDArray[np.float32]]
    program: tuple[GemmOp, ...]
    gemms: Mapping[str, StoredGemm]

    def __getitem__(self, key: str) -> NDArray[np.float32]:
        return self.tensors[key]


def write_npz(path: Path, arrays: Mapping[str, NDArray[Any]]) -> None:
    """Write ``arrays`` as a deflated ``.npz`` with fixed timestamps, atomically (tmp + rename)."""
    with (
        replacing(Path(path)) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf,
    ):
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def load_metadata(directory: Path | None = None) -> dict[str, Any]:
    """Read ``metadata.json`` of a vectors folder (default: the committed vectors)."""
    path = Path(directory or VECTORS_DIR) / METADATA
    if not path.is_file():
        raise FileNotFoundError(
            f"no vectors metadata at {path}; regenerate with "
            "`python -m cdm_qta.golden.capture_vectors`"
        )
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VectorsError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise VectorsError(f"{path}: unknown vectors format (want version {FORMAT_VERSION})")
    if not isinstance(meta.get("layers"), list):
        raise VectorsError(f"{path}: no 'layers' list")
    return meta


def layer_files(directory: Path | None = None) -> list[Path]:
    """The vector files listed in the metadata, in order."""
    directory = Path(directory or VECTORS_DIR)
    return [directory / m["file"] for m in load_metadata(directory)["layers"]]


def _read_arrays(path: Path) -> dict[str, NDArray[Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"vectors file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
        raise VectorsError(f"{path} is not a readable .npz vectors file: {exc}") from None


def _expect(path: Path, key: str, arr: NDArray[Any], dtype: Any, shape: tuple[int, ...]) -> None:
    if arr.dtype != np.dtype(dtype):
        raise VectorsError(f"{path}: {key} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if arr.shape != shape:
        raise VectorsError(f"{path}: {key} has shape {arr.shape}, expected {shape}")


def load_layer(path: str | Path, *, check_sha: bool = True) -> LayerVectors:
    """Load and validate one layer's vectors.

    ``path`` is a file, or the file name of a committed vector. The SHA-256 is checked when
    the folder's ``metadata.json`` lists the file (``check_sha=False`` skips it, for files
    being regenerated).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    VectorsError
        Unreadable zip, checksum mismatch, missing arrays, wrong dtypes or shapes.
    """
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (VECTORS_DIR / path).exists():
        path = VECTORS_DIR / path
    layer = path.stem
    meta_path = path.parent / METADATA
    if check_sha and path.is_file() and meta_path.is_file():
        entries = {m.get("file"): m for m in load_metadata(path.parent)["layers"]}
        entry = entries.get(path.name)
        if entry is not None:
            layer = entry.get("layer", layer)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != entry.get("sha256"):
                raise VectorsError(
                    f"{path} is corrupt: its SHA-256 does not match {meta_path.name}; "
                    "regenerate with `python -m cdm_qta.golden.capture_vectors`"
                )
    arrays = _read_arrays(path)
    missing = [k for k in _FP32_KEYS if k not in arrays]
    if missing:
        raise VectorsError(f"{path}: missing arrays {missing}")
    for k in _FP32_KEYS:
        if arrays[k].ndim != 2:
            raise VectorsError(f"{path}: {k} must be a matrix, not shape {arrays[k].shape}")
    n, d_in = arrays["X"].shape
    d_out, r = arrays["B"].shape
    shapes = {
        "X": (n, d_in), "W": (d_in, d_out), "A": (d_in, r), "B": (d_out, r), "dY": (n, d_out),
        "Y": (n, d_out), "dX": (n, d_in), "dA": (d_in, r), "dB": (d_out, r),
    }  # fmt: skip
    for k, shape in shapes.items():
        _expect(path, k, arrays[k], np.float32, shape)
    need_dx = "bwd_dx_base.a" in arrays
    try:
        program = lora_gemms(n=n, d_in=d_in, d_out=d_out, rank=r, need_dx=need_dx)
    except ValueError as exc:
        raise VectorsError(f"{path}: {exc}") from None
    gemms: dict[str, StoredGemm] = {}
    for op in program:
        fields: dict[str, NDArray[Any]] = {}
        for field in _GEMM_FIELDS:
            key = f"{op.name}.{field}"
            if key not in arrays:
                raise VectorsError(f"{path}: missing array {key}")
            fields[field] = arrays[key]
        a_shape = (op.k, op.m) if op.trans_a else (op.m, op.k)
        b_shape = (op.n, op.k) if op.trans_b else (op.k, op.n)
        a_sc = (1,) if op.a_axis is None else (op.m,)
        b_sc = (1,) if op.b_axis is None else (op.n,)
        for field, shape in (("a", a_shape), ("b", b_shape), ("a_scale", a_sc),
                             ("b_scale", b_sc), ("acc", (op.m, op.n))):  # fmt: skip
            _expect(path, f"{op.name}.{field}", fields[field], _GEMM_FIELDS[field], shape)
        for field in ("a_scale", "b_scale"):
            sc = fields[field]
            if not (np.all(np.isfinite(sc)) and np.all(sc > 0)):
                raise VectorsError(f"{path}: {op.name}.{field} holds non-positive scales")
        gemms[op.name] = StoredGemm(op=op, **fields)  # type: ignore[arg-type]
    tensors = {k: arrays[k] for k in _FP32_KEYS}
    return LayerVectors(path=path, layer=layer, tensors=tensors, program=program, gemms=gemms)


def load_all(directory: Path | None = None) -> list[LayerVectors]:
    """Load every layer listed in a folder's metadata (default: the committed vectors)."""
    return [load_layer(p) for p in layer_files(directory)]


def main(argv: Sequence[str] | None = None) -> int:
    """Check vector files from the shell: exit 0 if all load, 2 with a one-line error if not."""
    parser = argparse.ArgumentParser(
        prog="python -m cdm_qta.golden.vectors", description="Check LoRA test-vector files."
    )
    parser.add_argument("files", nargs="*", type=Path, help="default: the committed vectors")
    args = parser.parse_args(argv)
    try:
        files = args.files or layer_files()
        for f in files:
            v = load_layer(f)
            n, d_in = v["X"].shape
            print(
                f"{v.path.name}: ok, n={n} d_in={d_in} d_out={v['W'].shape[1]} "
                f"rank={v['A'].shape[1]}, {len(v.gemms)} GEMMs"
            )
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
