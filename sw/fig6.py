"""The paper's Fig. 6: latency and EDP of Full model, LoRA OS, LoRA WS and LoRA Hybrid.

``qta fig6 [--workload sd15] [--array-n 64] --out DIR`` writes ``fig6.png``, ``fig6.json`` and
``fig6.md`` (our ratios beside the paper's) for two scopes of one training step: the
cross-attention layers alone (every GEMM of an ``attn2`` module: ``to_q``, ``to_k``, ``to_v``
and their LoRA adapters, both attention products, ``to_out``; forward and backward) and the
whole UNet step.

What the four bars are
----------------------
* **Full model** (the paper's baseline, Custom Diffusion without LoRA): ``qta trace --mode
  full``: the ``attn2.to_k`` / ``attn2.to_v`` weights of every cross-attention layer train in
  full (their weight gradients ``X^T dY`` are computed), everything else is frozen, the text
  embedding gets no gradient. Same INT8 operands and INT32 accumulation on the same
  accelerator (the only precision it runs), and a fixed **weight-stationary** dataflow: the
  conventional systolic array the flexible one is compared with (SCALE-Sim's default). The
  paper does not state the baseline's precision or dataflow; ``full_hybrid`` in the JSON is
  the same step with the hybrid dataflow, so the LoRA effect and the dataflow effect can be
  told apart.
* **LoRA OS / WS / Hybrid**: ``qta trace --mode lora`` (rank 4 on the same projections, the
  base weights frozen), every GEMM output-stationary, weight-stationary, or per GEMM the faster
  of the two (:mod:`cdm_qta.sw.perf`).

Latency = cycles / clock; EDP = energy x latency (energy with DRAM). Bars are normalized to
the Full model; the table gives each configuration's ratio to LoRA Hybrid (the paper's
"speed-up" and "EDP reduction"). Every number is a :func:`cdm_qta.sw.perf.evaluate_step` total.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cdm_qta.hw.files import write_atomic

from .errors import CliError
from .perf import add_common, config_for, load_workload, perf_doc
from .tables import format_table

__all__ = ["BARS", "PAPER", "add_parser", "fig6", "plot_fig6", "run", "scope_totals"]

#: The paper's Sec. IV-C: LoRA Hybrid over each configuration.
PAPER = {
    "speedup": {"full": 1.81, "lora_os": 1.22, "lora_ws": 1.27},
    "edp_reduction": {"full": 5.5, "lora_os": 1.39, "lora_ws": 1.20},
}
#: bar -> (trace mode, dataflow), in the paper's order.
BARS = {
    "full": ("full", "ws"),
    "lora_os": ("lora", "os"),
    "lora_ws": ("lora", "ws"),
    "lora_hybrid": ("lora", "hybrid"),
}
LABELS = {
    "full": "Full model",
    "lora_os": "LoRA OS",
    "lora_ws": "LoRA WS",
    "lora_hybrid": "LoRA Hybrid",
    "full_hybrid": "Full model, hybrid",
}
SCOPES = {"cross_attention": "cross-attention layers", "unet": "whole UNet step"}


def in_scope(scope: str, name: str) -> bool:
    """``cross_attention``: a GEMM of an ``attn2`` module (or below it); ``unet``: any GEMM."""
    if scope == "unet":
        return True
    if scope == "cross_attention":
        return "attn2" in name.split(".")
    raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")


def scope_totals(doc: Mapping[str, Any], scope: str, clock_mhz: float) -> dict[str, float]:
    """Cycles, MACs, energy, latency and EDP of the GEMMs of ``doc`` (a ``qta perf`` JSON
    document) that fall in ``scope``: sums of its per-GEMM rows."""
    rows = [r for r in doc["gemms"] if in_scope(scope, r["name"])]
    cycles = sum(r["cycles"] for r in rows)
    energy = sum(r["energy_pj"] for r in rows) * 1e-12
    latency = cycles / (clock_mhz * 1e6)
    macs = sum(r["macs"] for r in rows)
    n2 = doc["config"]["array_n"] ** 2
    return {
        "gemms": len(rows),
        "cycles": cycles,
        "macs": macs,
        "utilization": macs / (cycles * n2) if cycles else 0.0,
        "latency_s": latency,
        "energy_j": energy,
        "edp_js": energy * latency,
        "os_gemms": sum(r["dataflow"] == "os" for r in rows),
    }


def fig6(
    workload: str,
    args: argparse.Namespace,
    *,
    traces: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every bar of both scopes (see the module docstring); ``traces`` maps mode -> GEMM list
    (traced when missing)."""
    cfg = config_for(args.array_n)
    gemms = dict(traces or {})
    for mode in ("full", "lora"):
        if mode not in gemms:
            gemms[mode] = load_workload(workload, mode)[1]
    runs = {**BARS, "full_hybrid": ("full", "hybrid")}
    docs = {
        bar: perf_doc(
            gemms[mode], cfg, args, workload=f"{workload} ({mode})", dataflow=flow, transpose="off"
        )
        for bar, (mode, flow) in runs.items()
    }
    out: dict[str, Any] = {
        "workload": workload,
        "array_n": cfg.n,
        "clock_mhz": args.clock_mhz,
        "predictor": docs["lora_hybrid"]["config"]["predictor"],
        "definitions": {bar: {"mode": m, "dataflow": f} for bar, (m, f) in runs.items()},
        "paper": PAPER,
        "scopes": {},
        "notes": sorted({n for d in docs.values() for n in d["notes"]}),
    }
    for scope in SCOPES:
        tot = {bar: scope_totals(d, scope, args.clock_mhz) for bar, d in docs.items()}
        hy, full = tot["lora_hybrid"], tot["full"]
        out["scopes"][scope] = {
            "totals": tot,
            "normalized_to_full": {
                bar: {
                    "latency": t["latency_s"] / full["latency_s"] if full["latency_s"] else None,
                    "edp": t["edp_js"] / full["edp_js"] if full["edp_js"] else None,
                }
                for bar, t in tot.items()
            },
            "hybrid_speedup": {
                bar: t["latency_s"] / hy["latency_s"] for bar, t in tot.items() if hy["latency_s"]
            },
            "hybrid_edp_reduction": {
                bar: t["edp_js"] / hy["edp_js"] for bar, t in tot.items() if hy["edp_js"]
            },
        }
    return out


def ratio_table(doc: Mapping[str, Any]) -> str:
    """Markdown table: our ratios (LoRA Hybrid over each bar) beside the paper's."""
    lines = [
        "| over | scope | speed-up ours | paper | EDP reduction ours | paper | "
        "MACs vs LoRA | utilization |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for bar in ("full", "lora_os", "lora_ws", "full_hybrid"):
        for scope, s in doc["scopes"].items():
            t, hy = s["totals"][bar], s["totals"]["lora_hybrid"]
            lines.append(
                f"| {LABELS[bar]} | {SCOPES[scope]} | {s['hybrid_speedup'][bar]:.3f}x | "
                f"{_paper(doc, 'speedup', bar)} | {s['hybrid_edp_reduction'][bar]:.3f}x | "
                f"{_paper(doc, 'edp_reduction', bar)} | {t['macs'] / hy['macs']:.3f} | "
                f"{t['utilization']:.1%} |"
            )
    return "\n".join(lines)


def _paper(doc: Mapping[str, Any], what: str, bar: str) -> str:
    value = doc["paper"][what].get(bar)
    return "-" if value is None else f"{value}x"


def totals_table(doc: Mapping[str, Any]) -> str:
    rows = []
    for scope, s in doc["scopes"].items():
        for bar, t in s["totals"].items():
            rows.append(
                {
                    "scope": SCOPES[scope],
                    "config": LABELS[bar],
                    "GEMMs": t["gemms"],
                    "cycles": f"{t['cycles']:,}",
                    "latency ms": f"{t['latency_s'] * 1e3:.3f}",
                    "util": f"{t['utilization']:.1%}",
                    "energy mJ": f"{t['energy_j'] * 1e3:.4g}",
                    "EDP J*s": f"{t['edp_js']:.4g}",
                    "OS GEMMs": t["os_gemms"],
                }
            )
    return format_table(rows, list(rows[0]))


def plot_fig6(doc: Mapping[str, Any], path: Path) -> None:
    """Two panels (latency, EDP), a group of four bars per scope, normalized to Full model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    bars = list(BARS)
    width = 0.8 / len(bars)
    for ax, metric, title in zip(
        axes, ("latency", "edp"), ("(a) latency", "(b) energy-delay product"), strict=True
    ):
        for i, bar in enumerate(bars):
            xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(SCOPES))]
            ys = [doc["scopes"][s]["normalized_to_full"][bar][metric] for s in SCOPES]
            rects = ax.bar(xs, ys, width, label=LABELS[bar])
            ax.bar_label(rects, fmt="%.2f", fontsize=7)
        ax.set_xticks(range(len(SCOPES)), [SCOPES[s] for s in SCOPES])
        ax.set_ylabel("normalized to Full model")
        ax.set_title(title)
        ax.set_ylim(0, 1.25 * max(max(b.datavalues) for b in ax.containers))
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(
        f"{doc['workload']} training step on a {doc['array_n']}x{doc['array_n']} array "
        f"({doc['clock_mhz']:g} MHz)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_fig6(doc: Mapping[str, Any], out: Path, command: str) -> list[Path]:
    """``fig6.png``, ``fig6.json`` and ``fig6.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    plot_fig6(doc, out / "fig6.png")
    write_atomic(out / "fig6.json", json.dumps(doc, indent=2) + "\n")
    md = [
        f"# Fig. 6: {doc['workload']}, N={doc['array_n']}",
        "",
        f"Command: `{command}`",
        "",
        ratio_table(doc),
        "",
        "```",
        totals_table(doc),
        "```",
        "",
        *[f"- {n}" for n in doc["notes"]],
    ]
    write_atomic(out / "fig6.md", "\n".join(md) + "\n")
    return [out / "fig6.png", out / "fig6.json", out / "fig6.md"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fig6",
        help="the paper's Fig. 6: latency and EDP of Full / LoRA OS / WS / Hybrid",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--workload", default="sd15", help="sd15 (default), sd21, sdxl, tiny")
    p.add_argument("--array-n", type=int, default=64)
    p.add_argument("--jobs", type=int, default=1, help="processes for the distinct shapes")
    p.add_argument("--out", type=Path, default=Path("build/fig6"), help="folder (build/fig6)")
    p.add_argument("--json", action="store_true", help="print the JSON document")
    add_common(p)
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.workload.endswith(".jsonl"):
        raise CliError("fig6 traces both modes itself: give a model name (sd15, sd21, sdxl, tiny)")
    config_for(args.array_n)
    doc = fig6(args.workload, args)
    cmd = f"qta fig6 --workload {args.workload} --array-n {args.array_n} --out {args.out}"
    write_fig6(doc, args.out, cmd)
    print(json.dumps(doc, indent=2) if args.json else ratio_table(doc) + "\n" + totals_table(doc))
    return 0
