"""One-call paths from operands to results: compile, lay out, load, run, read back.

:func:`run_gemm` is what a user (or a training step) calls with two INT8 matrices and any
:class:`~cdm_qta.sw.backend.Backend`; :func:`compile_for` and :func:`execute` are its two
halves, for callers that want to inspect or reuse the program.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from cdm_qta.hw.config import AcceleratorConfig, Dataflow

from .backend import Backend, RunStats
from .compiler import GemmProgram, choose_dataflow, compile_gemm

__all__ = ["compile_for", "execute", "run_gemm"]


def run_gemm(
    backend: Backend,
    cfg: AcceleratorConfig,
    a: NDArray[np.integer],
    b: NDArray[np.integer],
    dataflow: Dataflow | str = "auto",
    trans_a: bool = False,
    trans_b: bool = False,
) -> tuple[NDArray[np.int32], RunStats]:
    """Compile ``op(a) @ op(b)``, place the operands in DRAM, run, and read ``C`` back.

    ``a`` and ``b`` are int8-range integer matrices *as stored*: ``a`` is ``K x M`` when
    ``trans_a`` (the product uses ``a.T``), ``b`` is ``N x K`` when ``trans_b``. ``dataflow`` is
    a :class:`Dataflow` or ``"ws"``, ``"os"``, ``"auto"`` (fewer predicted cycles). The
    result is returned even if the back end reported errors; check ``stats.ok``.
    """
    program = compile_for(cfg, a, b, dataflow, trans_a, trans_b)
    return execute(backend, program, a, b)


def compile_for(
    cfg: AcceleratorConfig,
    a: NDArray[np.integer],
    b: NDArray[np.integer],
    dataflow: Dataflow | str = "auto",
    trans_a: bool = False,
    trans_b: bool = False,
) -> GemmProgram:
    """The program :func:`run_gemm` would run for these operands."""
    sa, sb = np.shape(a), np.shape(b)
    if len(sa) != 2 or len(sb) != 2:
        raise ValueError(f"a and b must be 2-D, not shapes {sa} and {sb}")
    m, k = (sa[1], sa[0]) if trans_a else sa
    k2, n = (sb[1], sb[0]) if trans_b else sb
    if k != k2:
        raise ValueError(
            f"inner dimensions differ: op(a) is {m}x{k}, op(b) is {k2}x{n} "
            f"(trans_a={trans_a}, trans_b={trans_b})"
        )
    if isinstance(dataflow, str):
        key = dataflow.lower()
        if key == "auto":
            return choose_dataflow(cfg, m, k, n, trans_a=trans_a, trans_b=trans_b)[0]
        if key not in ("ws", "os"):
            raise ValueError(f"dataflow must be ws, os or auto, not {dataflow!r}")
        dataflow = Dataflow.WS if key == "ws" else Dataflow.OS
    return compile_gemm(cfg, m, k, n, dataflow=dataflow, trans_a=trans_a, trans_b=trans_b)


def execute(
    backend: Backend, program: GemmProgram, a: NDArray[np.integer], b: NDArray[np.integer]
) -> tuple[NDArray[np.int32], RunStats]:
    """Load ``a``/``b`` with ``program``'s layout, run it on ``backend``, unpack ``C``."""
    if backend.cfg != program.cfg:
        raise ValueError("the back end and the program were built for different configurations")
    lay = program.layout
    backend.load(lay.image(a, b))
    stats = backend.run(program.instructions)
    c = lay.unpack_c(backend.read(lay.c_base, lay.c_bytes))
    return c, stats
