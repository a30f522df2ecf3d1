"""One ``qta train`` run from options to a finished output folder (the command's body).

Kept apart from the argument parsing so that the quality study and the tests drive the same
code. Order matters for the "no partial output" rule: everything that can be refused (options,
checkpoint, images, back end) is checked before any training, and all files are written into a
temporary folder that replaces ``--output-dir`` only at the very end.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdm_qta.hw.config import AcceleratorConfig
from cdm_qta.hw.files import write_atomic
from cdm_qta.sw.gemm_cmd import make_config
from cdm_qta.sw.tables import format_table

from .background import BackgroundCall
from .checkpoint import CHECKPOINT_DIR, load_checkpoint, sha256
from .data import CLASS_WORDS, digit_splits, load_image_folder
from .loop import FineTuned, add_lora, fine_tune, new_token, prior_images
from .models import base_prompt
from .offload import Accelerator, summarize
from .outputs import output_folder, save_lora, save_token
from .report import plot_grid, plot_losses, write_markdown
from .sampling import GUIDANCE, sample
from .scores import Scores, score_model
from .settings import TrainConfig
from .step_check import compare_backends

__all__ = ["GRID_SEED", "RunOptions", "train_and_report"]

#: Starting noise of the sample grid (the same for every model).
GRID_SEED = 4242
GRID_CONCEPT_COLUMNS = 8


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What one run does; see ``qta train --help`` for each field."""

    output_dir: Path
    precisions: tuple[str, ...] = ("fp32", "int8")
    backend: str = "golden"
    array_n: int = 64
    offload: str = "lora"
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    instance_data_dir: Path | None = None
    validation_prompt: str | None = None
    eval_samples: int = 200
    guidance: float = GUIDANCE
    compare_golden: bool = False
    checkpoint: Path | None = None
    progress: bool = True
    #: Processes: with 2 or more, the FP32 run (and the base and FP32 scores) goes to a second
    #: process while this one trains INT8; results are the same as with 1.
    jobs: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace, precisions: tuple[str, ...]) -> RunOptions:
        train = {
            "max_train_steps": args.max_train_steps,
            "rank": args.rank,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "modifier_token": args.modifier_token,
            "class_word": args.class_word,
            "train_batch_size": args.train_batch_size,
            "num_class_images": args.num_class_images,
            "prior_loss_weight": args.prior_loss_weight,
            "grad_rounding": args.grad_rounding,
            "class_prior": args.class_prior,
            "lr_scheduler": args.lr_scheduler,
        }
        return cls(
            output_dir=args.output_dir,
            precisions=precisions,
            backend=args.backend,
            array_n=args.array_n,
            offload=args.offload,
            train=train,
            instance_data_dir=args.instance_data_dir,
            validation_prompt=args.validation_prompt,
            eval_samples=args.eval_samples,
            guidance=GUIDANCE if args.guidance is None else args.guidance,
            compare_golden=args.compare_golden,
            checkpoint=args.checkpoint,
            jobs=args.jobs,
        )

    def train_config(self, precision: str) -> TrainConfig:
        return TrainConfig(precision=precision, offload=self.offload, **self.train)


def _grid_prompts(concept_prompt: str) -> list[str]:
    return [concept_prompt] * GRID_CONCEPT_COLUMNS + [
        base_prompt(c) for c in range(len(CLASS_WORDS))
    ]


def _hardware(acc: Accelerator, run: FineTuned) -> dict[str, Any]:
    step1 = [r for r in acc.records if r.step == 1]
    return {
        "backend": acc.name,
        "array_n": acc.cfg.n,
        "config": acc.cfg.to_dict(),
        "per_step": summarize(step1, acc.cfg.n),
        "whole_run": summarize(
            [r for r in acc.records if r.step <= run.config.max_train_steps], acc.cfg.n
        ),
        "seconds_in_backend": round(acc.seconds, 2),
        "step1_gemms": [r.to_dict() for r in step1],
    }


def _summary_table(report: dict[str, Any]) -> str:
    rows = []
    for name, m in report["models"].items():
        sc = m.get("scores") or {}

        def pct(key: str, sc: dict[str, Any] = sc) -> str | None:
            v = sc.get(key)
            return None if v is None else f"{100 * v:.1f} %"

        rows.append(
            {
                "model": name,
                "final loss": None if m.get("final_loss") is None else f"{m['final_loss']:.4f}",
                "val loss": None
                if sc.get("validation_loss") is None
                else f"{sc['validation_loss']:.4f}",
                "concept": pct("concept_score"),
                "prior": pct("prior_score"),
                "wall s": None if m.get("seconds") is None else f"{m['seconds']:.1f}",
            }
        )
    text = format_table(rows, ["model", "final loss", "val loss", "concept", "prior", "wall s"])
    hw = report.get("hardware")
    if hw:
        st = hw["per_step"]
        util = "-" if st["utilization"] is None else f"{100 * st['utilization']:.1f} %"
        text += (
            f"\n\nINT8 step on {hw['backend']} (N={hw['array_n']}): {st['gemms']} GEMMs, "
            f"{st['macs']:,} MACs, {st['cycles'] or 0:,} cycles "
            f"({', '.join(st['cycles_source'])}), utilization {util}"
        )
    return text


def train_and_report(opts: RunOptions) -> dict[str, Any]:
    """Train every precision, score, write everything into ``opts.output_dir``; the report.

    Raises
    ------
    ValueError, FileNotFoundError, RuntimeError
        Bad options, a missing or corrupt checkpoint, an unreadable image folder; all before
        anything is written.
    """
    torch.set_num_threads(1)
    configs = {p: opts.train_config(p) for p in opts.precisions}
    ckpt = load_checkpoint(opts.checkpoint or CHECKPOINT_DIR)
    splits = digit_splits()
    default_concept = opts.instance_data_dir is None
    instance = splits.instance_x if default_concept else load_image_folder(opts.instance_data_dir)
    validation = splits.validation_x if default_concept else instance
    first = next(iter(configs.values()))
    prior = prior_images(ckpt, splits, first)
    new_token(ckpt, first)  # refuses an unknown class word or a taken token before any work
    accel_cfg: AcceleratorConfig = make_config(opts.array_n)
    concept_prompt = opts.validation_prompt or first.instance_prompt
    runs: dict[str, FineTuned] = {}
    report: dict[str, Any] = {
        "settings": {
            **dataclasses.asdict(first),
            "precision": list(opts.precisions),
            "offload": opts.offload,
            "instance_prompt": first.instance_prompt,
            "validation_prompt": concept_prompt,
        },
        "instance_images": len(instance),
        "instance_data": "embedded digit 9" if default_concept else str(opts.instance_data_dir),
        "validation_images": len(validation),
        "class_images": len(prior[1]),
        "backend": opts.backend,
        "array_n": accel_cfg.n,
        "guidance": opts.guidance,
        "checkpoint": {
            "folder": str(ckpt.folder),
            "manifest_sha256": sha256(ckpt.folder / "manifest.json"),
        },
        "machine": {"python": platform.python_version(), "torch": torch.__version__},
        "models": {},
    }
    scoring = {
        "concept_prompt": concept_prompt,
        "validation_images": validation,
        "samples": opts.eval_samples,
        "seed": opts.train.get("seed", 0),
        "guidance": opts.guidance,
    }
    scored: dict[str, dict[str, Any]] = {}  # model -> scores computed beside the INT8 run
    with output_folder(opts.output_dir) as tmp:
        acc = (
            Accelerator(opts.backend, accel_cfg, keep_results=opts.compare_golden)
            if "int8" in configs
            else None
        )
        beside = None
        if opts.jobs >= 2 and "fp32" in configs and len(configs) > 1:
            beside = BackgroundCall(
                _fp32_run, opts.checkpoint, instance, prior, configs["fp32"], opts.progress,
                scoring if opts.eval_samples else None,
            )  # fmt: skip
        try:
            for precision, cfg in configs.items():
                if precision == "fp32" and beside is not None:
                    continue
                if precision == "int8" and opts.compare_golden:
                    check, run, _ = compare_backends(
                        ckpt, instance, prior, cfg, opts.backend, accel_cfg,
                        progress=opts.progress, accelerator=acc,
                    )  # fmt: skip
                    report["golden_check"] = check.to_dict()
                else:
                    run = fine_tune(
                        ckpt, instance, prior, cfg,
                        accelerator=acc if precision == "int8" else None, progress=opts.progress,
                    )  # fmt: skip
                runs[precision] = run
            if beside is not None:
                done = beside.result()
                runs["fp32"] = _rebuilt(ckpt, configs["fp32"], done)
                scored = done["scores"]
            runs = {p: runs[p] for p in configs}
            for precision, run in runs.items():
                folder = tmp / precision
                folder.mkdir()
                save_lora(run.unet, folder)
                save_token(run.config.modifier_token, run.token_embedding, folder)
            if acc is not None:
                report["hardware"] = _hardware(acc, runs["int8"])
        finally:
            if acc is not None:
                acc.close()
            if beside is not None:
                beside.cancel()
        tokenizer, init_token = new_token(ckpt, first)
        models: dict[str, tuple[Any, Any, torch.Tensor]] = {
            "base": (ckpt.unet, tokenizer, init_token.detach()),
            **{f"{p} LoRA": (r.unet, r.tokenizer, r.token_embedding) for p, r in runs.items()},
        }
        for name, (unet, tok, emb) in models.items():
            entry: dict[str, Any] = {}
            run = runs.get(name.split()[0])
            if run is not None:
                entry.update(
                    final_loss=run.final_loss,
                    seconds=round(run.seconds, 1),
                    steps=len(run.losses),
                    losses=[round(r["loss"], 6) for r in run.losses],
                )
            if name in scored:
                entry["scores"] = dict(scored[name])
            elif opts.eval_samples:
                scores: Scores = score_model(ckpt, unet, tok, emb, **scoring)
                entry["scores"] = scores.to_dict()
            if "scores" in entry and not default_concept:
                entry["scores"]["concept_score"] = None  # no classifier for a user's concept
            report["models"][name] = entry
        prompts = _grid_prompts(concept_prompt)
        grid = {
            name: sample(
                unet, tok, ckpt.text_encoder, prompts, seed=GRID_SEED, extra=emb,
                guidance=opts.guidance,
            ).numpy()
            for name, (unet, tok, emb) in models.items()
        }  # fmt: skip
        titles = ["concept"] * GRID_CONCEPT_COLUMNS + list(CLASS_WORDS)
        plot_grid(grid, titles, tmp / "samples.png")
        plot_losses(
            {p: [r["loss"] for r in run.losses] for p, run in runs.items()}, tmp / "loss.png"
        )
        report["summary_table"] = _summary_table(report)
        write_atomic(tmp / "report.json", json.dumps(report, indent=1, default=_json) + "\n")
        write_markdown(report, tmp / "report.md")
    return report


def _fp32_run(
    checkpoint: Path | None,
    instance: np.ndarray,
    prior: tuple[np.ndarray, np.ndarray],
    cfg: TrainConfig,
    progress: bool,
    scoring: dict[str, Any] | None,
) -> dict[str, Any]:
    """The FP32 run in a process of its own (:class:`BackgroundCall`): train, and score the
    base model and the result if ``scoring`` (the keywords of :func:`score_model`)."""
    torch.set_num_threads(1)
    ckpt = load_checkpoint(checkpoint or CHECKPOINT_DIR)
    run = fine_tune(ckpt, instance, prior, cfg, progress=progress, position=1)
    scores: dict[str, dict[str, Any]] = {}
    if scoring is not None:
        tokenizer, init_token = new_token(ckpt, cfg)
        scores["base"] = score_model(
            ckpt, ckpt.unet, tokenizer, init_token.detach(), **scoring
        ).to_dict()
        scores["fp32 LoRA"] = score_model(
            ckpt, run.unet, run.tokenizer, run.token_embedding, **scoring
        ).to_dict()
    return {
        "unet": run.unet.state_dict(),
        "token": run.token_embedding,
        "losses": run.losses,
        "seconds": run.seconds,
        "scores": scores,
    }


def _rebuilt(ckpt: Any, cfg: TrainConfig, done: dict[str, Any]) -> FineTuned:
    """The :class:`FineTuned` of a run made in another process, from its weights."""
    unet = add_lora(copy.deepcopy(ckpt.unet), cfg.rank, cfg.seed)
    unet.load_state_dict(done["unet"])
    unet.eval()
    tokenizer, _ = new_token(ckpt, cfg)
    return FineTuned(cfg, unet, tokenizer, done["token"], done["losses"], done["seconds"])


def _json(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")
