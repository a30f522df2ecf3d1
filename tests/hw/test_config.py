"""ArrayConfig: defaults are the paper's, invalid values are named in the error."""

from __future__ import annotations

import pytest

from cdm_qta.hw.config import CONFIG_ENV, AcceleratorConfig, ArrayConfig, Dataflow


def test_defaults_are_the_papers() -> None:
    cfg = ArrayConfig()
    assert (cfg.n, cfg.operand_bits, cfg.acc_bits) == (64, 8, 32)
    assert cfg.macs_per_cycle == 4096
    assert cfg.column_sum_bits == 22  # 64 * 16384 = 2**20 needs 21 bits + sign


def test_json_round_trip() -> None:
    cfg = ArrayConfig(n=5)
    assert ArrayConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be between 1 and 256, not 0"),
        ({"n": 2.5}, "n must be an integer, not 2.5"),
        ({"operand_bits": 1}, "operand_bits must be between 2 and 16, not 1"),
        ({"acc_bits": 16}, "acc_bits must be at least 22"),
    ],
)
def test_invalid_values_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ArrayConfig(**kwargs)


def test_unknown_fields_rejected() -> None:
    with pytest.raises(ValueError, match="unknown ArrayConfig fields"):
        ArrayConfig.from_dict({"n": 4, "rows": 4})


def test_dataflow_is_one_bit_int_enum() -> None:
    assert [int(d) for d in Dataflow] == [0, 1]


@pytest.mark.parametrize(("operand_bits", "acc_bits"), [(8, 24), (4, 32), (16, 48), (8, 64)])
def test_the_accelerator_refuses_widths_it_does_not_build(operand_bits: int, acc_bits: int) -> None:
    """DRAM rows are INT8 bytes and INT32 words: any other format is refused, by name."""
    array = ArrayConfig(n=4, operand_bits=operand_bits, acc_bits=acc_bits)
    with pytest.raises(ValueError, match=rf"operand_bits=8 and acc_bits=32 only .*{acc_bits}"):
        AcceleratorConfig(array=array)
    cfg = AcceleratorConfig.small(4)
    assert (cfg.input_row_bytes, cfg.output_row_bytes) == (4, 16)


def test_configurations_travel_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    accel = AcceleratorConfig.small(5, dram_size=1 << 16)
    for key, value in accel.to_env().items():
        monkeypatch.setenv(key, value)
    assert AcceleratorConfig.from_env() == accel
    with pytest.raises(RuntimeError, match="holds a AcceleratorConfig, not a ArrayConfig"):
        ArrayConfig.from_env()
    monkeypatch.delenv(CONFIG_ENV)
    with pytest.raises(RuntimeError, match=f"{CONFIG_ENV} is not set"):
        ArrayConfig.from_env()
    assert AcceleratorConfig.from_json(accel.to_json()) == accel


def test_the_bus_is_never_wider_than_axi4_allows() -> None:
    # AxSIZE has three bits: 128-byte beats at most. A 256-byte bus once went out announcing
    # 1-byte beats (the AXI monitors caught it at N=64).
    from cdm_qta.hw.axi import axi4_signature
    from cdm_qta.hw.config import AXI4_MAX_BUS_BYTES

    assert AXI4_MAX_BUS_BYTES == 128
    with pytest.raises(ValueError, match="dram_bus_bytes must be a power of two between 4 and 128"):
        AcceleratorConfig(dram_bus_bytes=256)
    with pytest.raises(ValueError, match="data_bytes"):
        axi4_signature(data_bytes=256)
    for n in (32, 64, 128):
        assert AcceleratorConfig.scaled(n).dram_bus_bytes == min(4 * n, 128)
        assert AcceleratorConfig.small(n).dram_bus_bytes == min(n, 128)
