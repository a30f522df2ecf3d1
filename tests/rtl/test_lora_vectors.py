"""The real LoRA vectors on the RTL: every GEMM of a layer's forward and backward, bit-exact.

The layers in ``golden/vectors`` come from a diffusers UNet with peft LoRA after a real training
step. Each stored INT8 GEMM is compiled and run on the accelerator's RTL (one simulator for all
of them) and must give the stored INT32 result, which :func:`cdm_qta.golden.gemm` recomputes;
then the whole quantized layer runs with the RTL as its GEMM executor and must give golden's
FP32 outputs bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from regression import require_simulator

from cdm_qta import golden
from cdm_qta.golden.lora import lora_quantized
from cdm_qta.golden.vectors import load_all
from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.sw.rtl_backend import RtlBackend
from cdm_qta.sw.runtime import run_gemm

CFG = AcceleratorConfig.small(8, rows=512)
#: Verilator runs every GEMM of two layers and the layer through the RTL executor; Icarus, a
#: hundred times slower on this design (155 k cycles took 217 s), the rank-4 GEMMs of one layer.
LAYERS = {"verilator": 2, "icarus": 1}
ICARUS_GEMMS = ("fwd_up", "bwd_dh", "wgrad_b")


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_every_gemm_of_real_lora_layers_is_bit_exact_on_the_rtl(sim: str) -> None:
    require_simulator(sim)
    layers = load_all()[: LAYERS[sim]]
    with RtlBackend(sim, CFG, dram_bytes=1 << 20) as rtl:
        for v in layers:
            cycles = 0
            names = list(v.gemms) if sim == "verilator" else list(ICARUS_GEMMS)
            for name in names:
                g = v.gemms[name]
                op = g.op
                c, stats = run_gemm(rtl, CFG, g.a, g.b, "auto", op.trans_a, op.trans_b)
                assert stats.ok, (v.layer, name, stats.errors)
                want = golden.gemm(g.a.T if op.trans_a else g.a, g.b.T if op.trans_b else g.b)
                np.testing.assert_array_equal(want, g.acc)  # the stored result is golden's
                np.testing.assert_array_equal(c, g.acc, err_msg=f"{v.layer} {name}")
                assert stats.macs == op.m * op.k * op.n
                cycles += stats.cycles or 0
            print(f"{sim}: {v.layer}: {len(names)} GEMMs bit-exact, {cycles} cycles")
            if sim != "verilator":
                continue

            def on_rtl(op, a, b):  # type: ignore[no-untyped-def]
                return run_gemm(rtl, CFG, a, b, "auto", op.trans_a, op.trans_b)[0]

            want = lora_quantized(v["X"], v["W"], v["A"], v["B"], v["dY"])
            got = lora_quantized(v["X"], v["W"], v["A"], v["B"], v["dY"], executor=on_rtl)
            for out in ("Y", "dX", "dA", "dB"):
                np.testing.assert_array_equal(getattr(got, out), getattr(want, out), err_msg=out)
