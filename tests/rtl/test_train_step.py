"""One full INT8 training step of the embedded model on the RTL, bit for bit against golden.

Forward, backward and the AdamW update of every LoRA layer (eight ``attn2.to_k``/``to_v``
projections, 64 INT8 GEMMs) run once on the golden back end and once on the generated Verilog;
every INT32 result, the loss and every trained tensor must be identical. The step is the
smallest real one (one instance image, no class images: 8 text tokens per GEMM) so that Icarus
runs it in well under a minute.
"""

from __future__ import annotations

import pytest
from regression import require_simulator

torch = pytest.importorskip(
    "torch", reason="the training step needs torch==2.13.0 and the ml extra"
)

from cdm_qta.sw.gemm_cmd import make_config  # noqa: E402
from cdm_qta.sw.train.checkpoint import load_checkpoint  # noqa: E402
from cdm_qta.sw.train.data import digit_splits  # noqa: E402
from cdm_qta.sw.train.loop import class_images  # noqa: E402
from cdm_qta.sw.train.settings import TrainConfig  # noqa: E402
from cdm_qta.sw.train.step_check import compare_backends  # noqa: E402

CFG = make_config(8)  # what `qta train --array-n 8` runs: AcceleratorConfig.small(8)


@pytest.mark.sim
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_one_training_step_is_bit_identical_on_the_rtl(sim: str) -> None:
    require_simulator(sim)
    torch.set_num_threads(1)
    splits = digit_splits()
    train = TrainConfig(precision="int8", max_train_steps=1, train_batch_size=1, num_class_images=0)
    check, run, rtl = compare_backends(
        load_checkpoint(), splits.instance_x, class_images(splits, 0), train, sim, CFG
    )
    print(f"{sim}: {check.backend_seconds} s on the RTL, {check.golden_seconds} s on golden")
    assert check.identical, "\n".join(check.mismatches)
    assert check.gemms_compared == 64 and check.tensors_compared == 17
    assert {r.source for r in rtl.records} == {"hardware"}
    assert {r.phase for r in rtl.records} == {"forward", "input_grad", "weight_grad"}
    assert all(r.macs == r.m * r.k * r.n for r in rtl.records)
    trained_b = [p for n, p in run.unet.named_parameters() if "lora_B" in n]
    assert len(trained_b) == 8 and all(bool(p.abs().sum() > 0) for p in trained_b), (
        "the step updated every adapter (B starts at zero)"
    )
