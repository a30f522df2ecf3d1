"""``qta train``: teach the embedded model a new concept with LoRA, FP32 and INT8 side by side.

With no images it learns the embedded default concept (digit 9, held out of pretraining, from ten
images) as ``"a <new1> digit"``; ``--instance-data-dir`` learns a user's own PNG/JPEG images
instead. ``--precision both`` (the default) trains FP32 (peft's own layers) and INT8 (every LoRA
GEMM on ``--backend``) with the same data, seeds and steps, scores base, FP32 and INT8 models and
writes to ``--output-dir``::

    loss.png, samples.png          loss curves; base / FP32 / INT8 samples on the same noise
    report.json, report.md         settings, losses, scores, wall times, the hardware report
    fp32/, int8/                   pytorch_lora_weights.safetensors and <new1>.safetensors

``--compare-golden`` (with an RTL back end) also runs the INT8 training on the golden back end
and fails unless every INT32 result and every trained tensor is identical. Option names are
those of diffusers' training scripts; their underscore spellings work too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import CliError
from .settings import TrainConfig

__all__ = ["add_parser", "run"]

#: Every training default comes from :class:`TrainConfig` (written once, torch-free).
_D = TrainConfig()
EVAL_SAMPLES = 200


def _option(p: argparse.ArgumentParser, name: str, *aliases: str, **kw: Any) -> None:
    """``--name`` plus diffusers' underscore spelling (``--max_train_steps``)."""
    spellings = [f"--{name}", *aliases]
    if "-" in name:
        spellings.append(f"--{name.replace('-', '_')}")
    p.add_argument(*spellings, **kw)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``qta train``."""
    from cdm_qta.sw.backends import BACKENDS

    p = subparsers.add_parser(
        "train",
        help="fine-tune the embedded diffusion model on a new concept with INT8 LoRA",
        description=__doc__.splitlines()[0],
    )
    _option(p, "instance-data-dir", type=Path, help="your concept's images (default: digit 9)")
    _option(p, "modifier-token", default=_D.modifier_token, help=f"default {_D.modifier_token}")
    _option(p, "class-word", default=_D.class_word, help=f"word after the token ({_D.class_word})")
    p.add_argument(
        "--precision", choices=["fp32", "int8", "both"], default="both", help="default both"
    )
    p.add_argument("--backend", default="golden", help=f"one of {', '.join(BACKENDS)}")
    p.add_argument(
        "--offload",
        choices=["lora", "all"],
        default="lora",
        help="lora: the LoRA layers' GEMMs on the accelerator; all: every GEMM of the UNet",
    )
    _option(p, "array-n", type=int, default=64, help="PE array size N (default 64)")
    _option(
        p, "max-train-steps", "--steps", type=int, default=_D.max_train_steps,
        help=f"optimizer steps (default {_D.max_train_steps})",
    )  # fmt: skip
    p.add_argument("--rank", type=int, default=_D.rank, help=f"LoRA rank (default {_D.rank})")
    _option(p, "learning-rate", type=float, default=_D.learning_rate, help=f"{_D.learning_rate}")
    p.add_argument("--seed", type=int, default=_D.seed, help=f"default {_D.seed}")
    _option(
        p, "train-batch-size", type=int, default=_D.train_batch_size,
        help=f"instance (and class) images per step (default {_D.train_batch_size})",
    )  # fmt: skip
    _option(
        p, "num-class-images", type=int, default=_D.num_class_images,
        help=f"prior-preservation images (default {_D.num_class_images})",
    )  # fmt: skip
    _option(p, "prior-loss-weight", type=float, default=_D.prior_loss_weight)
    _option(
        p, "class-prior", choices=["generated", "real"], default=_D.class_prior,
        help="class images sampled from the base model (default) or real digits 0-8",
    )  # fmt: skip
    _option(p, "lr-scheduler", choices=["constant", "cosine"], default=_D.lr_scheduler)
    _option(
        p, "validation-prompt", help="prompt of the concept samples (default: the instance one)"
    )
    _option(
        p, "grad-rounding", choices=["nearest", "stochastic"], default=_D.grad_rounding,
        help="rounding of the backward GEMMs' operands (ablation: stochastic)",
    )  # fmt: skip
    _option(
        p, "eval-samples", type=int, default=EVAL_SAMPLES,
        help="generated samples per score and model (0: no scores; the quality study uses 500)",
    )  # fmt: skip
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance")
    _option(
        p, "compare-golden", action="store_true",
        help="also run the INT8 training on the golden back end; fail unless bit-identical",
    )  # fmt: skip
    p.add_argument("--checkpoint", type=Path, help="base model folder (default: embedded)")
    p.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1),
        help="processes (default: 2 where there are 2 cores): FP32 trains beside INT8",
    )  # fmt: skip
    _option(p, "output-dir", type=Path, required=True, help="where the results go")
    p.set_defaults(run=run)
    return p


def _check_backend(name: str) -> None:
    from cdm_qta.sw.backends import BACKENDS
    from cdm_qta.tb.toolchain import simulator_available

    if name not in BACKENDS:
        raise CliError(f"unknown back end {name!r}; choose one of {', '.join(BACKENDS)}")
    if name != "golden":
        ok, why = simulator_available(name)
        if not ok:
            raise CliError(f"the {name} back end is not available: {why}")


def run(args: argparse.Namespace) -> int:
    """Validate everything, train, score, write the folder atomically, print a summary."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise CliError(f"qta train needs torch==2.13.0 and the ml extra: {exc}") from None
    from .train_run import RunOptions, train_and_report

    _check_backend(args.backend)
    precisions = ("fp32", "int8") if args.precision == "both" else (args.precision,)
    if args.compare_golden and ("int8" not in precisions or args.backend == "golden"):
        raise CliError("--compare-golden needs --precision int8 (or both) and an RTL --backend")
    if args.eval_samples < 0:
        raise CliError(f"--eval-samples must be at least 0, not {args.eval_samples}")
    if args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, not {args.jobs}")
    opts = RunOptions.from_args(args, precisions)
    t0 = time.perf_counter()
    report = train_and_report(opts)
    print(report["summary_table"])
    check = report.get("golden_check")
    if check:
        verdict = "bit-identical" if check["identical"] else "DIFFERENT"
        print(
            f"\nINT8 on {check['backend']} vs golden: {verdict} over {check['steps']} step(s), "
            f"{check['gemms_compared']} INT32 GEMM results, {check['tensors_compared']} trained "
            f"tensors; {check['backend']} {check['backend_seconds']:.1f} s, golden "
            f"{check['golden_seconds']:.1f} s"
        )
        for line in check["mismatches"][:10]:
            print(f"  {line}", file=sys.stderr)
    print(f"\nwrote {opts.output_dir} in {time.perf_counter() - t0:.0f} s")
    return 0 if not check or check["identical"] else 1
