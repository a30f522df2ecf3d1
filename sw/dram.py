"""The DRAM image the host hands to a back end, and the tiled GEMM layouts the compiler reads.

Why tiled layouts: the ISA requires every LOAD/STORE ``dram_addr`` and ``stride`` to be a
multiple of the bus width W, and a DMA row to be at most one SRAM row (N bytes for operands,
4N for results). A row-major ``A[M x K]`` only satisfies that when ``N % W == 0``; a panel
layout whose rows are exactly one SRAM row, padded to a W multiple, works for every N and
keeps each LOAD one strided burst. The software (not the hardware) transposes operands while
packing, so ``A^T B`` and ``A B^T`` cost nothing on the accelerator.

Layouts (``N`` array size, ``W`` bus bytes, ``pad(x) = ceil(x / W) * W``; all bases W-aligned):

* **A, weight-stationary**: k-tile panels. Row ``kt * M + i`` holds ``A[i, kt*N : kt*N + kl]``
  (``kl = min(K, N)`` lanes, zero beyond K), stride ``pad(kl)``. An input block of rows
  ``i0 .. i0+mb`` of k-tile ``kt`` is one LOAD of ``mb`` rows.
* **A, output-stationary**: ``A^T`` per m-block of ``mb <= N`` rows. Row ``blk * K + t`` holds
  ``A[blk*mb : blk*mb + mb, t]`` (one column of A, lanes < mb), stride ``pad(mb)``.
* **B** (both dataflows): column-tile panels. Row ``jt * K + t`` holds ``B[t, jt*N : jt*N + nl]``
  (``nl = min(n, N)``), stride ``pad(nl)``; a weight tile is one LOAD of up to ``kl`` rows.
* **C**: column-tile panels of little-endian INT32. Row ``jt * M + i`` holds
  ``C[i, jt*N : jt*N + nl]`` (``4 * nl`` bytes), stride ``pad(4 * nl)``.

A, B and C are disjoint regions, in that order, from ``cfg.dram_base``; each base is aligned to
``max(W, 64)`` bytes.
"""

from __future__ import annotations

import dataclasses
from typing import Self

import numpy as np
from numpy.typing import NDArray

from cdm_qta.hw.config import AcceleratorConfig, Dataflow

__all__ = ["DramError", "DramImage", "GemmLayout", "round_up"]


class DramError(ValueError):
    """An access outside a DRAM image, or a layout that does not fit the DRAM window."""


def round_up(x: int, align: int) -> int:
    """Smallest multiple of ``align`` that is at least ``x``."""
    return -(-x // align) * align


@dataclasses.dataclass(frozen=True, eq=False)
class DramImage:
    """Bytes to place in DRAM starting at ``base``: what :meth:`Backend.load` receives.

    The dataclass is frozen (the placement cannot change); the byte buffer itself is mutable so
    the packers can fill it in place.
    """

    base: int
    data: NDArray[np.uint8]

    @classmethod
    def zeros(cls, base: int, size: int) -> Self:
        return cls(base=base, data=np.zeros(size, dtype=np.uint8))

    @property
    def end(self) -> int:
        """First address after the image."""
        return self.base + self.data.size

    def _span(self, addr: int, nbytes: int) -> slice:
        if nbytes < 0 or addr < self.base or addr + nbytes > self.end:
            raise DramError(
                f"[{addr:#x}, {addr + nbytes:#x}) is outside the image "
                f"[{self.base:#x}, {self.end:#x})"
            )
        return slice(addr - self.base, addr - self.base + nbytes)

    def write(self, addr: int, payload: bytes | NDArray[np.uint8]) -> None:
        raw = np.frombuffer(bytes(payload), dtype=np.uint8)
        self.data[self._span(addr, raw.size)] = raw

    def read(self, addr: int, nbytes: int) -> bytes:
        return self.data[self._span(addr, nbytes)].tobytes()


def _logical(x: NDArray[np.integer], name: str, shape: tuple[int, int], trans: bool) -> NDArray:
    """``x`` (or ``x.T``) as an int8 matrix of ``shape``; the software half of a transpose."""
    arr = np.asarray(x)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a 2-D integer matrix, not {arr.dtype} {arr.shape}")
    if trans:
        arr = arr.T
    if arr.shape != shape:
        stored = shape[::-1] if trans else shape
        raise ValueError(f"{name} must have shape {stored} (as stored), not {np.shape(x)}")
    if arr.size and (arr.min() < -128 or arr.max() > 127):
        raise ValueError(f"{name} has values outside the int8 range")
    return arr.astype(np.int8)


@dataclasses.dataclass(frozen=True)
class GemmLayout:
    """Where A, B and C of one GEMM live in DRAM (see the module docstring for the formats).

    ``m_block`` only matters for the output-stationary A layout (one ``A^T`` panel per m-block).
    """

    dataflow: Dataflow
    m: int
    k: int
    n: int
    array_n: int
    bus_bytes: int
    m_block: int
    trans_a: bool
    trans_b: bool
    a_base: int
    a_stride: int
    b_base: int
    b_stride: int
    c_base: int
    c_stride: int
    end: int

    @classmethod
    def plan(
        cls,
        cfg: AcceleratorConfig,
        m: int,
        k: int,
        n: int,
        *,
        dataflow: Dataflow,
        m_block: int,
        trans_a: bool = False,
        trans_b: bool = False,
    ) -> Self:
        """Place A, B, C from ``cfg.dram_base``; :class:`DramError` if the window is too small."""
        big_n, w = cfg.n, cfg.dram_bus_bytes
        align = max(w, 64)
        kt = -(-k // big_n)
        nt = -(-n // big_n)
        if dataflow == Dataflow.WS:
            a_stride = round_up(min(k, big_n), w)
            a_rows = kt * m
        else:
            a_stride = round_up(m_block, w)
            a_rows = -(-m // m_block) * k
        b_stride = round_up(min(n, big_n), w)
        c_stride = round_up(cfg.ACC_BYTES * min(n, big_n), w)
        a_base = cfg.dram_base
        b_base = round_up(a_base + a_rows * a_stride, align)
        c_base = round_up(b_base + nt * k * b_stride, align)
        end = c_base + nt * m * c_stride
        if end > cfg.dram_base + cfg.dram_size:
            raise DramError(
                f"the GEMM needs {end - cfg.dram_base} bytes of DRAM (A, B and C tiled) but the "
                f"window holds only {cfg.dram_size}"
            )
        return cls(
            dataflow=Dataflow(dataflow),
            m=m,
            k=k,
            n=n,
            array_n=big_n,
            bus_bytes=w,
            m_block=m_block,
            trans_a=bool(trans_a),
            trans_b=bool(trans_b),
            a_base=a_base,
            a_stride=a_stride,
            b_base=b_base,
            b_stride=b_stride,
            c_base=c_base,
            c_stride=c_stride,
            end=end,
        )

    # Addresses of panel rows: the compiler's only view of the layout.
    def a_row_addr(self, row: int) -> int:
        return self.a_base + row * self.a_stride

    def b_row_addr(self, row: int) -> int:
        return self.b_base + row * self.b_stride

    def c_row_addr(self, row: int) -> int:
        return self.c_base + row * self.c_stride

    @property
    def size(self) -> int:
        return self.end - self.a_base

    def pack_a(self, a: NDArray[np.integer]) -> NDArray[np.uint8]:
        """The A region's bytes from ``a`` as stored (``K x M`` when ``trans_a``)."""
        x = _logical(a, "a", (self.m, self.k), self.trans_a)
        if self.dataflow == Dataflow.WS:
            kl = min(self.k, self.array_n)
            kt = -(-self.k // kl)
            padded = np.zeros((self.m, kt * kl), dtype=np.int8)
            padded[:, : self.k] = x
            panels = padded.reshape(self.m, kt, kl).transpose(1, 0, 2)  # (kt, M, kl)
            out = np.zeros((kt, self.m, self.a_stride), dtype=np.uint8)
            out[..., :kl] = panels.view(np.uint8)
        else:
            mb = self.m_block
            blocks = -(-self.m // mb)
            padded = np.zeros((blocks * mb, self.k), dtype=np.int8)
            padded[: self.m] = x
            panels = padded.reshape(blocks, mb, self.k).transpose(0, 2, 1)  # (blk, K, mb)
            out = np.zeros((blocks, self.k, self.a_stride), dtype=np.uint8)
            out[..., :mb] = panels.view(np.uint8)
        return out.reshape(-1)

    def pack_b(self, b: NDArray[np.integer]) -> NDArray[np.uint8]:
        """The B region's bytes from ``b`` as stored (``N x K`` when ``trans_b``)."""
        x = _logical(b, "b", (self.k, self.n), self.trans_b)
        nl = min(self.n, self.array_n)
        nt = -(-self.n // nl)
        padded = np.zeros((self.k, nt * nl), dtype=np.int8)
        padded[:, : self.n] = x
        panels = padded.reshape(self.k, nt, nl).transpose(1, 0, 2)  # (nt, K, nl)
        out = np.zeros((nt, self.k, self.b_stride), dtype=np.uint8)
        out[..., :nl] = panels.view(np.uint8)
        return out.reshape(-1)

    def image(self, a: NDArray[np.integer], b: NDArray[np.integer]) -> DramImage:
        """A DRAM image holding packed A and B, with room (zeroed) for C."""
        img = DramImage.zeros(self.a_base, self.size)
        pa, pb = self.pack_a(a), self.pack_b(b)
        img.data[: pa.size] = pa
        img.data[self.b_base - self.a_base : self.b_base - self.a_base + pb.size] = pb
        return img

    @property
    def c_bytes(self) -> int:
        """Bytes of the C region (what to read back after a run)."""
        return self.end - self.c_base

    def unpack_c(self, raw: bytes | NDArray[np.uint8]) -> NDArray[np.int32]:
        """The ``M x n`` INT32 result from the C region's bytes."""
        nl = min(self.n, self.array_n)
        nt = -(-self.n // nl)
        buf = np.frombuffer(bytes(raw), dtype=np.uint8)
        if buf.size != self.c_bytes:
            raise DramError(f"C region is {self.c_bytes} bytes, not {buf.size}")
        rows = buf.reshape(nt, self.m, self.c_stride)[..., : 4 * nl]
        vals = np.ascontiguousarray(rows).view("<i4")  # (nt, M, nl)
        return vals.transpose(1, 0, 2).reshape(self.m, nt * nl)[:, : self.n].astype(np.int32)
