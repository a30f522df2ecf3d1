"""Bit layouts of the array's ports, built from an :class:`~cdm_qta.hw.config.ArrayConfig`.

Kept apart from the components so that the testbench's packing code and the hardware read
one definition: a beat's fields, their order and widths live only here.
"""

from __future__ import annotations

from amaranth.hdl import signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

from .config import ArrayConfig, Dataflow

__all__ = [
    "FLAGS",
    "TOKEN",
    "beat_layout",
    "error_layout",
    "output_layout",
    "output_signature",
]

#: Control that travels with every operand through the PE rows (one copy per PE, so no
#: control wire ever fans out to the whole array). ``ws``: a weight-stationary input row;
#: ``os``: an output-stationary reduction step; ``sel``: the weight bank (WS) or "first step of
#: a new output tile" (OS); ``last``: last row of a WS tile / last step of an OS tile.
FLAGS = data.StructLayout({"ws": 1, "os": 1, "sel": 1, "last": 1})

#: Weight-load token that travels along one PE row, one column per cycle, in step with the
#: column's weight value on the top bus: "write the bus into weight bank ``bank``".
TOKEN = data.StructLayout({"en": 1, "bank": 1})


def beat_layout(cfg: ArrayConfig) -> data.StructLayout:
    """One vector entering the array from the left (``a``) or the top (``b``) edge.

    ``data`` holds N lanes (lane 0 in the low bits); lanes at and above ``lanes`` are treated as
    zero, so tiles narrower than N need no padding in memory. ``mode`` chooses the dataflow of
    the operation the beat belongs to; ``last`` closes a tile (see :mod:`cdm_qta.hw.core`).
    """
    return data.StructLayout(
        {
            "data": data.ArrayLayout(signed(cfg.operand_bits), cfg.n),
            "lanes": range(cfg.n + 1),
            "mode": Dataflow,
            "last": 1,
        }
    )


def output_layout(cfg: ArrayConfig) -> data.StructLayout:
    """One de-skewed output row: N accumulator lanes and the flag closing a tile."""
    return data.StructLayout({"data": data.ArrayLayout(signed(cfg.acc_bits), cfg.n), "last": 1})


def output_signature(cfg: ArrayConfig) -> wiring.Signature:
    """A stream without ``ready``: the array cannot stall, its consumer must take every row."""
    return wiring.Signature({"valid": Out(1), "payload": Out(output_layout(cfg))})


def error_layout() -> data.StructLayout:
    """Sticky error bits (cleared by reset).

    ``weight_rows``: a WS weight tile had more than N rows (the extra rows are dropped).
    ``os_last_mismatch``: the ``a`` and ``b`` beats of one OS step disagreed on ``last``.
    """
    return data.StructLayout({"weight_rows": 1, "os_last_mismatch": 1})
