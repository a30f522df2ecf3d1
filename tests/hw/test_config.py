"""ArrayConfig: defaults are the paper's, invalid values are named in the error."""

from __future__ import annotations

import pytest

from cdm_qta.hw.config import ArrayConfig, Dataflow


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
