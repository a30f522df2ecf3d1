"""`qta generate`: writes Verilog and its JSON description; bad input exits non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdm_qta.sw.cli import main


def test_generate_writes_verilog_and_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "--n", "3", "--out", str(tmp_path)]) == 0
    v = tmp_path / "cdm_qta_array_n3_i8_a32.v"
    assert v.read_text().count("module cdm_qta_array_n3_i8_a32(") == 1
    desc = json.loads(v.with_suffix(".json").read_text())
    assert desc["config"] == {"n": 3, "operand_bits": 8, "acc_bits": 32}
    assert desc["latency_cycles"] == 7
    assert "wrote" in capsys.readouterr().out


def test_generate_rejects_bad_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "--n", "0", "--out", str(tmp_path)]) == 2
    assert "n must be between 1 and 256, not 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing may be written for a bad configuration"


def test_generate_refuses_an_accelerator_it_cannot_build(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["generate", "--top", "accelerator", "--n", "4", "--acc-bits", "24", "--out"]
    assert main([*argv, str(tmp_path)]) == 2
    assert "operand_bits=8 and acc_bits=32 only" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
