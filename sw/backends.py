"""Build an execution back end by name: what ``--backend`` on the command line chooses.

``golden`` is :class:`~cdm_qta.sw.golden_backend.GoldenBackend` (NumPy); ``verilator`` and
``icarus`` are :class:`~cdm_qta.sw.rtl_backend.RtlBackend` (the generated RTL), imported only
when asked for, so the golden path needs no simulator, Amaranth or cocotb.
"""

from __future__ import annotations

import importlib
from typing import Any

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.tb.toolchain import SIMULATORS

from .backend import Backend

__all__ = ["BACKENDS", "make_backend"]

#: Names :func:`make_backend` accepts.
BACKENDS: tuple[str, ...] = ("golden", *SIMULATORS)

_RTL_MODULE = "cdm_qta.sw.rtl_backend"


def make_backend(name: str, cfg: AcceleratorConfig, **options: Any) -> Backend:
    """``golden``, or ``verilator``/``icarus`` from the RTL module, imported only when asked."""
    if name == "golden":
        from .golden_backend import GoldenBackend

        return GoldenBackend(cfg, **options)
    if name not in BACKENDS:
        raise ValueError(f"unknown back end {name!r}; choose one of {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(_RTL_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in (_RTL_MODULE, None):
            raise  # the RTL module exists but one of *its* dependencies is missing: say which
        raise RuntimeError(
            f"the {name} back end needs {_RTL_MODULE} (the RTL runtime), which is not "
            f"installed in this checkout; use --backend golden"
        ) from None
    return module.RtlBackend(name, cfg, **options)
