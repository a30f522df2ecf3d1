"""The quality study: base / FP32 LoRA / INT8 LoRA over several seeds, with spread and targets.

``python -m cdm_qta.sw.train.quality [--seeds 0 1 2] [--samples 500] [--out DIR]`` (about two
minutes per seed at one thread; ``nice -n 10`` on a shared machine). For every seed it trains
FP32 and INT8 with the same data, seeds and steps (``qta train``'s defaults unless overridden),
then scores all three models on ``--samples`` generated samples per score, and finally reports
each figure as mean +- standard deviation over the seeds, checked against the issue's targets:

* INT8 validation loss within 2 % of FP32 (means over seeds);
* FP32 concept score at least 70 %; INT8 concept score within 5 points of FP32;
* prior score of both LoRA models within 3 points of the base model.

``--variant stochastic`` adds the ablation with stochastic rounding of every backward GEMM's
operands (``golden.quant``'s seeded stochastic rounding), next to the paper's nearest rounding.
``--merge A/quality.json B/quality.json`` joins studies run over disjoint seeds (in parallel
processes, one per core).
Writes ``quality.json`` and ``quality.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cdm_qta.hw.files import write_atomic
from cdm_qta.sw.gemm_cmd import make_config

from .checkpoint import CHECKPOINT_DIR, load_checkpoint
from .data import digit_splits
from .loop import fine_tune, new_token, prior_images
from .offload import Accelerator
from .scores import score_model
from .settings import TrainConfig

__all__ = ["TARGETS", "main", "study"]

#: The issue's targets, checked on the means over seeds.
TARGETS = {
    "int8_val_loss_rel": 0.02,
    "fp32_concept_min": 0.70,
    "int8_concept_gap": 0.05,
    "prior_gap": 0.03,
}


def _stat(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def study(
    seeds: Sequence[int],
    samples: int,
    variants: Sequence[str],
    overrides: dict[str, Any],
    checkpoint: Path = CHECKPOINT_DIR,
) -> dict[str, Any]:
    """Run the study; returns per-seed results, statistics and the target verdicts."""
    torch.set_num_threads(1)
    ckpt = load_checkpoint(checkpoint)
    splits = digit_splits()
    base_cfg = TrainConfig(**overrides)
    accel_cfg = make_config(64)
    models = ["base", "fp32", *(f"int8-{v}" for v in variants)]
    per_seed: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    t_start = time.perf_counter()
    for seed in tqdm(seeds, desc="seeds", unit="seed"):
        prior = prior_images(ckpt, splits, dataclasses.replace(base_cfg, seed=seed))
        tokenizer, init = new_token(ckpt, base_cfg)
        trained: dict[str, Any] = {"base": (ckpt.unet, tokenizer, init.detach(), None)}
        fp = fine_tune(
            ckpt, splits.instance_x, prior,
            dataclasses.replace(base_cfg, precision="fp32", seed=seed),
        )  # fmt: skip
        trained["fp32"] = (fp.unet, fp.tokenizer, fp.token_embedding, fp)
        for variant in variants:
            cfg = dataclasses.replace(base_cfg, precision="int8", seed=seed, grad_rounding=variant)
            with Accelerator("golden", accel_cfg) as acc:
                q = fine_tune(ckpt, splits.instance_x, prior, cfg, accelerator=acc)
            trained[f"int8-{variant}"] = (q.unet, q.tokenizer, q.token_embedding, q)
        for name, (unet, tok, emb, run) in trained.items():
            sc = score_model(
                ckpt, unet, tok, emb, concept_prompt=base_cfg.instance_prompt,
                validation_images=splits.validation_x, samples=samples, seed=seed,
            )  # fmt: skip
            row = {"seed": seed, **sc.to_dict()}
            if run is not None:
                row.update(final_loss=run.final_loss, seconds=round(run.seconds, 1))
            per_seed[name].append(row)
    return _summarise(
        {
            "seeds": list(seeds),
            "samples_per_score": samples,
            "variants": list(variants),
            "settings": dataclasses.asdict(base_cfg),
            "per_seed": per_seed,
            "seconds": round(time.perf_counter() - t_start, 1),
        }
    )


def _summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Add statistics over seeds and the target verdicts to a study's per-seed rows."""
    keys = ("final_loss", "validation_loss", "concept_score", "prior_score", "seconds")
    result["stats"] = {
        m: {k: _stat([r[k] for r in rows]) for k in keys if k in rows[0]}
        for m, rows in result["per_seed"].items()
    }
    result["targets"] = TARGETS
    result["verdicts"] = _verdicts(result["stats"], result["variants"])
    return result


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One study from several runs over disjoint seeds (e.g. run in parallel processes).

    Raises
    ------
    ValueError
        The runs differ in settings, samples or variants, or share a seed.
    """
    first = results[0]
    for r in results[1:]:
        for key in ("settings", "samples_per_score", "variants"):
            if r[key] != first[key]:
                raise ValueError(f"cannot merge studies with different {key}")
    seeds = [s for r in results for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the studies share seeds: {sorted(seeds)}")
    per_seed = {m: [row for r in results for row in r["per_seed"][m]] for m in first["per_seed"]}
    return _summarise(
        {
            **{k: first[k] for k in ("samples_per_score", "variants", "settings")},
            "seeds": seeds,
            "per_seed": per_seed,
            "seconds": sum(r["seconds"] for r in results),
        }
    )


def _verdicts(stats: dict[str, Any], variants: Sequence[str]) -> dict[str, Any]:
    m = {k: {kk: v["mean"] for kk, v in s.items()} for k, s in stats.items()}
    out: dict[str, Any] = {
        "fp32_concept": {
            "value": m["fp32"]["concept_score"],
            "target": f">= {TARGETS['fp32_concept_min']:.2f}",
            "met": m["fp32"]["concept_score"] >= TARGETS["fp32_concept_min"],
        },
        "fp32_prior_gap": {
            "value": m["fp32"]["prior_score"] - m["base"]["prior_score"],
            "target": f">= -{TARGETS['prior_gap']:.2f}",
            "met": m["fp32"]["prior_score"] - m["base"]["prior_score"] >= -TARGETS["prior_gap"],
        },
    }
    for v in variants:
        q = m[f"int8-{v}"]
        rel = q["validation_loss"] / m["fp32"]["validation_loss"] - 1.0
        gap = q["concept_score"] - m["fp32"]["concept_score"]
        prior = q["prior_score"] - m["base"]["prior_score"]
        out[f"int8-{v}"] = {
            "val_loss_rel": {"value": rel, "met": rel <= TARGETS["int8_val_loss_rel"]},
            "concept_gap": {"value": gap, "met": gap >= -TARGETS["int8_concept_gap"]},
            "prior_gap": {"value": prior, "met": prior >= -TARGETS["prior_gap"]},
        }
    return out


def format_study(result: dict[str, Any]) -> str:
    """The quality table (mean +- std over seeds) and the verdicts, as Markdown."""

    def pm(s: dict[str, float], scale: float = 1.0, digits: int = 4) -> str:
        return f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"

    rows = []
    for name, s in result["stats"].items():
        rows.append(
            {
                "model": name,
                "final training loss": pm(s["final_loss"]) if "final_loss" in s else "-",
                "validation loss": pm(s["validation_loss"]),
                "concept score %": pm(s["concept_score"], 100, 1),
                "prior score %": pm(s["prior_score"], 100, 1),
                "train s": pm(s["seconds"], 1, 0) if "seconds" in s else "-",
            }
        )
    cols = list(rows[0])
    lines = [
        f"seeds {result['seeds']}, {result['samples_per_score']} samples per score, "
        f"{result['settings']['max_train_steps']} steps, rank {result['settings']['rank']}, "
        f"learning rate {result['settings']['learning_rate']}",
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
        *("| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows),
        "",
    ]
    for name, v in result["verdicts"].items():
        if "met" in v:
            lines.append(f"- {name}: {v['value']:+.4f} (target {v['target']}): "
                         f"{'met' if v['met'] else 'MISSED'}")  # fmt: skip
        else:
            parts = ", ".join(
                f"{k} {d['value']:+.4f} {'met' if d['met'] else 'MISSED'}" for k, d in v.items()
            )
            lines.append(f"- {name}: {parts}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdm_qta.sw.train.quality", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=500, help="samples per score (500)")
    parser.add_argument(
        "--variant",
        nargs="+",
        choices=["nearest", "stochastic"],
        default=["nearest"],
        help="INT8 rounding of the backward GEMMs (nearest: the paper's)",
    )
    parser.add_argument("--steps", type=int, help="override max_train_steps")
    parser.add_argument("--rank", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT_DIR)
    parser.add_argument("--out", type=Path, required=True, help="folder for quality.json/.md")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="merge these quality.json files instead of running"
    )
    args = parser.parse_args(argv)
    if args.merge:
        result = merge([json.loads(p.read_text()) for p in args.merge])
        args.out.mkdir(parents=True, exist_ok=True)
        _write(args.out, result)
        return 0
    if args.samples < 1 or not args.seeds:
        parser.error("--samples must be positive and --seeds non-empty")
    overrides = {
        k: v
        for k, v in (
            ("max_train_steps", args.steps),
            ("rank", args.rank),
            ("learning_rate", args.learning_rate),
        )
        if v is not None
    }
    args.out.mkdir(parents=True, exist_ok=True)
    result = study(args.seeds, args.samples, args.variant, overrides, args.checkpoint)
    _write(args.out, result)
    return 0


def _write(out: Path, result: dict[str, Any]) -> None:
    text = format_study(result)
    write_atomic(out / "quality.json", json.dumps(result, indent=1) + "\n")
    write_atomic(out / "quality.md", text + "\n")
    print(text)
    print(f"\n{result['seconds']:.0f} s; wrote {out}/quality.json and quality.md")


if __name__ == "__main__":
    sys.exit(main())
