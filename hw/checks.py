"""Parameter checks shared by every layer: one wording for every "bad value" message.

Why one module: configurations, gateware constructors, the golden models and the software all
reject bad integers, and a user should read the same sentence whichever one caught the value.
No Amaranth and no NumPy imports, so the contracts and the golden models can use it.
"""

from __future__ import annotations

import operator
from typing import Any

__all__ = ["check_int", "check_positive", "check_pow2"]


def _as_int(name: str, value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {what}, not {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {what}, not {value!r}") from None


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an ``int`` in ``[lo, hi]``, else a :class:`ValueError` naming it."""
    ivalue = _as_int(name, value, "an integer")
    if not lo <= ivalue <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value!r}")
    return ivalue


def check_positive(name: str, value: Any) -> int:
    """``value`` as an ``int`` of at least 1 (bools are not counts)."""
    ivalue = _as_int(name, value, "a positive integer")
    if ivalue < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return ivalue


def check_pow2(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an ``int`` that is a power of two in ``[lo, hi]``."""
    ivalue = _as_int(name, value, "an integer")
    if not lo <= ivalue <= hi or ivalue & (ivalue - 1):
        raise ValueError(f"{name} must be a power of two between {lo} and {hi}, not {value!r}")
    return ivalue
