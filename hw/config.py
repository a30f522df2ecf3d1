"""The one configuration of the accelerator, shared by hw, sw and tb.

This module imports nothing from Amaranth on purpose: the compiler (`cdm_qta.sw`), the
testbenches (`cdm_qta.tb`) and the cycle model read the same object that the hardware is
generated from, and none of them should need an HDL toolchain to do so.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
from typing import Any, ClassVar, Self

from .checks import check_int, check_pow2

__all__ = [
    "AXI4_MAX_BUS_BYTES",
    "CONFIG_ENV",
    "INSN_BYTES",
    "AcceleratorConfig",
    "ArrayConfig",
    "Dataflow",
    "DramTiming",
    "EnvConfig",
    "fetch_buffer_rows",
    "fetch_row_bytes",
]

#: The one environment variable that carries a configuration into a simulator process.
CONFIG_ENV = "CDM_QTA_CONFIG"

#: Bytes of one instruction word in DRAM (128 bits, little-endian).
INSN_BYTES = 16
#: AXI4's widest data bus in bytes: ``AxSIZE`` is three bits, 2**7 = 128 bytes per beat. A wider
#: bus would put a truncated size on the wire (a 256-byte bus announced 1-byte beats: the AXI
#: monitors caught it at N=64).
AXI4_MAX_BUS_BYTES = 128


def fetch_row_bytes(data_bytes: int) -> int:
    """Bytes per instruction-fetch row on a ``data_bytes`` bus: whole words, whole beats."""
    return max(INSN_BYTES, data_bytes)


def fetch_buffer_rows(data_bytes: int) -> int:
    """Fetch rows the fetch unit buffers (and so reads ahead): 32 words or 8 rows, whichever
    is more, so a DRAM latency of ~30 cycles still streams one word per cycle."""
    return max(8, 32 // (fetch_row_bytes(data_bytes) // INSN_BYTES))


class Dataflow(enum.IntEnum):
    """How a GEMM tile maps onto the PE array; chosen per operation at run time.

    An ``IntEnum`` so Amaranth takes it as a 1-bit shape and the software encodes it unchanged.
    """

    WS = 0  #: weight stationary: weights held in the PEs, input rows stream left to right
    OS = 1  #: output stationary: outputs accumulate in the PEs, operands stream in


class EnvConfig:
    """JSON and environment round trips for a frozen configuration dataclass.

    A simulator process is started by the cocotb runner, so the configuration it simulates
    travels in :data:`CONFIG_ENV` (tagged with the class name, so a test top can never read a
    configuration meant for another one).
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)!r}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))

    def to_env(self) -> dict[str, str]:
        """The environment entries that hand this configuration to a simulator process."""
        return {CONFIG_ENV: json.dumps({"kind": type(self).__name__, "config": self.to_dict()})}

    @classmethod
    def from_env(cls) -> Self:
        """The configuration :meth:`to_env` put into this (simulator) process."""
        text = os.environ.get(CONFIG_ENV)
        if text is None:
            raise RuntimeError(f"{CONFIG_ENV} is not set: start simulations through cdm_qta.tb")
        doc = json.loads(text)
        if doc.get("kind") != cls.__name__:
            raise RuntimeError(f"{CONFIG_ENV} holds a {doc.get('kind')}, not a {cls.__name__}")
        return cls.from_dict(doc["config"])


@dataclasses.dataclass(frozen=True)
class ArrayConfig(EnvConfig):
    """Shape and number formats of the N x N processing-element array.

    Parameters
    ----------
    n : int
        Rows and columns of the square PE array (the paper's design point is 64).
    operand_bits : int
        Width of the signed operands (INT8 in the paper).
    acc_bits : int
        Width of the signed accumulators. Must hold a full WS column of worst-case products,
        ``n * (-2**(operand_bits-1))**2``, so one tile never wraps; longer reductions wrap
        modulo ``2**acc_bits`` exactly like :func:`cdm_qta.golden.gemm`.

    Raises
    ------
    ValueError
        If a field is out of range; the message names the offending value.
    """

    n: int = 64
    operand_bits: int = 8
    acc_bits: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_int("n", self.n, 1, 256))
        object.__setattr__(
            self, "operand_bits", check_int("operand_bits", self.operand_bits, 2, 16)
        )
        object.__setattr__(self, "acc_bits", check_int("acc_bits", self.acc_bits, 2, 64))
        need = self.column_sum_bits
        if self.acc_bits < need:
            raise ValueError(
                f"acc_bits must be at least {need} to hold {self.n} worst-case products of "
                f"{self.operand_bits}-bit operands, not {self.acc_bits!r}"
            )

    @property
    def column_sum_bits(self) -> int:
        """Bits a signed sum of ``n`` worst-case products needs (the WS column bound)."""
        worst = self.n * (1 << (self.operand_bits - 1)) ** 2  # (-2^(b-1))^2, n times
        return worst.bit_length() + 1  # +1 sign bit: worst is positive, so it needs b+1 bits

    @property
    def module_name(self) -> str:
        """Verilog name of the generated top module, unique per configuration."""
        return f"cdm_qta_array_n{self.n}_i{self.operand_bits}_a{self.acc_bits}"

    @property
    def macs_per_cycle(self) -> int:
        return self.n * self.n

    def __str__(self) -> str:
        return f"n{self.n}"


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig(EnvConfig):
    """The whole accelerator: the array plus SRAM buffers, DRAM port and instruction queue.

    The accelerator moves operands through DRAM as bytes and results as little-endian 32-bit
    words, so it is built only for INT8 operands and INT32 accumulators
    (:attr:`OPERAND_BYTES`, :attr:`ACC_BYTES`); the array alone (:class:`ArrayConfig`) takes
    other widths.

    Parameters
    ----------
    array : ArrayConfig
        Must have ``operand_bits == 8`` and ``acc_bits == 32``.
    input_buffer_bytes, weight_buffer_bytes : int
        INT8 buffers, one SRAM row of N bytes per array row/column (paper: 512 KB each).
    output_buffer_bytes : int
        INT32 accumulator buffer, rows of 4N bytes (paper: 1 MB).
    dram_bus_bytes : int
        AXI4 data width in bytes (a power of two, 4 to 128: AXI4's widest bus).
    dram_base, dram_size : int
        The DRAM window the DMA may touch; anything outside is an error, never a bus access.
    insn_queue_depth : int
        Instructions the host (or the fetch unit) can queue ahead of the dispatcher.
    engine_queue_depth : int
        Instructions each engine's own queue holds between dispatch and the engine; with the
        token rules it decides which instructions of a wrong program run before it deadlocks,
        so the golden back end reads it too.
    dma_outstanding : int
        AXI bursts each DMA direction keeps in flight. A row is one burst, so with a DRAM read
        latency of L cycles the load stream runs at ``min(1, dma_outstanding / (L + 2))`` rows
        per cycle; 32 hides the simulated DRAM's 20-cycle latency with room to spare.
    transfers_in_flight : int
        LOAD (and STORE) instructions an engine has started but not finished: the next one's
        DMA command goes out while the previous one's rows are still on the bus, so short
        transfers do not each pay the DRAM latency.

    Each buffer is split into two halves by the compiler (ping-pong), so a load fills one half
    while compute reads the other; the hardware enforces only the dependency tokens.

    Raises
    ------
    ValueError
        If a field is out of range or the array has other number formats; the message names
        the value and what is supported.
    """

    #: Bytes of one operand lane in DRAM and in the input/weight buffers (INT8).
    OPERAND_BYTES: ClassVar[int] = 1
    #: Bytes of one result lane in the output buffer and in DRAM (INT32, little-endian).
    ACC_BYTES: ClassVar[int] = 4

    array: ArrayConfig = dataclasses.field(default_factory=ArrayConfig)
    input_buffer_bytes: int = 512 * 1024
    weight_buffer_bytes: int = 512 * 1024
    output_buffer_bytes: int = 1024 * 1024
    dram_bus_bytes: int = 64
    dram_base: int = 0
    dram_size: int = 1 << 30
    insn_queue_depth: int = 16
    engine_queue_depth: int = 4
    dma_outstanding: int = 32
    transfers_in_flight: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.array, ArrayConfig):
            raise ValueError(f"array must be an ArrayConfig, not {self.array!r}")
        widths = (self.array.operand_bits, self.array.acc_bits)
        if widths != (8 * self.OPERAND_BYTES, 8 * self.ACC_BYTES):
            raise ValueError(
                f"the accelerator supports operand_bits=8 and acc_bits=32 only (INT8 bytes and "
                f"INT32 words in DRAM), not operand_bits={widths[0]} acc_bits={widths[1]}"
            )
        for name, row in (
            ("input_buffer_bytes", self.input_row_bytes),
            ("weight_buffer_bytes", self.input_row_bytes),
            ("output_buffer_bytes", self.output_row_bytes),
        ):
            value = check_int(name, getattr(self, name), row, row << 20)
            if value % row:
                raise ValueError(f"{name} must be a multiple of the {row}-byte row, not {value!r}")
            object.__setattr__(self, name, value)
        bus = check_pow2("dram_bus_bytes", self.dram_bus_bytes, 4, AXI4_MAX_BUS_BYTES)
        object.__setattr__(self, "dram_bus_bytes", bus)
        base = check_int("dram_base", self.dram_base, 0, (1 << 32) - 1)
        size = check_int("dram_size", self.dram_size, 4096, 1 << 32)
        if base % 4096 or base + size > 1 << 32:
            raise ValueError(
                f"the DRAM window must be 4 KB aligned inside 32-bit addresses, "
                f"not base={base:#x} size={size:#x}"
            )
        object.__setattr__(
            self, "insn_queue_depth", check_int("insn_queue_depth", self.insn_queue_depth, 2, 1024)
        )
        object.__setattr__(
            self,
            "engine_queue_depth",
            check_int("engine_queue_depth", self.engine_queue_depth, 1, 64),
        )
        object.__setattr__(
            self, "dma_outstanding", check_int("dma_outstanding", self.dma_outstanding, 1, 256)
        )
        object.__setattr__(
            self,
            "transfers_in_flight",
            check_int("transfers_in_flight", self.transfers_in_flight, 1, 64),
        )

    @classmethod
    def small(cls, n: int, rows: int = 256, **kwargs: Any) -> AcceleratorConfig:
        """A test-sized accelerator: ``rows`` SRAM rows per buffer, bus as wide as a row."""
        bus = max(4, 1 << max(n - 1, 0).bit_length())
        return cls(
            array=ArrayConfig(n=n),
            input_buffer_bytes=rows * n,
            weight_buffer_bytes=rows * n,
            output_buffer_bytes=rows * 4 * n,
            dram_bus_bytes=min(bus, AXI4_MAX_BUS_BYTES),
            **kwargs,
        )

    @classmethod
    def scaled(cls, n: int, **kwargs: Any) -> AcceleratorConfig:
        """The paper's SRAM depths (8192 input, 8192 weight, 4096 output rows) at array size N,
        with a DRAM bus as wide as an output row (4N bytes, at most AXI4's 128) so DRAM keeps up."""
        return cls(
            array=ArrayConfig(n=n),
            input_buffer_bytes=8192 * n,
            weight_buffer_bytes=8192 * n,
            output_buffer_bytes=4096 * 4 * n,
            dram_bus_bytes=min(AXI4_MAX_BUS_BYTES, max(4, 1 << (4 * n - 1).bit_length())),
            **kwargs,
        )

    @property
    def n(self) -> int:
        return self.array.n

    @property
    def input_row_bytes(self) -> int:
        """Bytes of one input or weight SRAM row: N INT8 lanes (the longest LOAD row)."""
        return self.OPERAND_BYTES * self.array.n

    @property
    def output_row_bytes(self) -> int:
        """Bytes of one output SRAM row: N INT32 lanes (the longest STORE row)."""
        return self.ACC_BYTES * self.array.n

    @property
    def input_rows(self) -> int:
        return self.input_buffer_bytes // self.input_row_bytes

    @property
    def weight_rows(self) -> int:
        return self.weight_buffer_bytes // self.input_row_bytes

    @property
    def output_rows(self) -> int:
        return self.output_buffer_bytes // self.output_row_bytes

    @property
    def module_name(self) -> str:
        """Verilog name: the main sizes, readable, plus a hash of every field (DRAM window,
        queue depths), so two configurations never share a name or a build folder."""
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:8]
        return (
            f"cdm_qta_accel_n{self.n}_in{self.input_rows}_w{self.weight_rows}"
            f"_o{self.output_rows}_bus{self.dram_bus_bytes}_{digest}"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        d = dict(data)
        if isinstance(d.get("array"), dict):
            d["array"] = ArrayConfig.from_dict(d["array"])
        return super().from_dict(d)


@dataclasses.dataclass(frozen=True)
class DramTiming(EnvConfig):
    """What the simulated DRAM (:mod:`cdm_qta.tb.dram`) does, as data the cycle model reads.

    One AXI4 port; reads and writes are independent channels, each moving at most one beat of
    the bus width per cycle, throttled to ``beats_per_cycle = beat_num / beat_den``.

    Parameters
    ----------
    read_latency : int
        Cycles from an accepted AR to the first R beat of that burst (at least 2).
    write_latency : int
        Cycles from a burst's last accepted W beat to its B response (at least 1).
    beat_num, beat_den : int
        Sustained beats per cycle per direction, ``beat_num / beat_den`` (at most 1).
    max_outstanding : int
        Read bursts and write bursts the DRAM holds at once; it stops accepting AR (AW)
        while that many are waiting for their data (response).
    """

    read_latency: int = 20
    write_latency: int = 10
    beat_num: int = 1
    beat_den: int = 1
    max_outstanding: int = 32

    def __post_init__(self) -> None:
        check_int("read_latency", self.read_latency, 2, 1 << 16)
        check_int("write_latency", self.write_latency, 1, 1 << 16)
        check_int("beat_den", self.beat_den, 1, 64)
        check_int("beat_num", self.beat_num, 1, self.beat_den)
        check_int("max_outstanding", self.max_outstanding, 1, 64)

    @property
    def beats_per_cycle(self) -> float:
        return self.beat_num / self.beat_den
