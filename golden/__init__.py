"""NumPy golden models: the only reference that the testbenches and the software compare to."""

from .gemm import check_operand, gemm, max_safe_reduction, rand_int, wrap
from .pack import pack, pack_rows, unpack, unpack_rows

__all__ = [
    "check_operand",
    "gemm",
    "max_safe_reduction",
    "pack",
    "pack_rows",
    "rand_int",
    "unpack",
    "unpack_rows",
    "wrap",
]
