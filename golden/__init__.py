"""NumPy golden models: the only reference that the testbenches and the software compare to."""

from .gemm import check_operand, gemm, max_safe_reduction, rand_int, wrap
from .lora import GemmOp, Phase, ScaleAxis, lora_fp32, lora_gemms, lora_quantized
from .pack import pack, pack_rows, unpack, unpack_rows
from .quant import QTensor, dequantize, quantize

__all__ = [
    "GemmOp",
    "Phase",
    "QTensor",
    "ScaleAxis",
    "check_operand",
    "dequantize",
    "gemm",
    "lora_fp32",
    "lora_gemms",
    "lora_quantized",
    "max_safe_reduction",
    "pack",
    "pack_rows",
    "quantize",
    "rand_int",
    "unpack",
    "unpack_rows",
    "wrap",
]
