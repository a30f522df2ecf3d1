"""The run's pictures and reports: loss curve and sample grid (PNG), ``report.md``.

The sample grid is the paper's Fig. 5 in miniature: one row per model (base, FP32 LoRA, INT8
LoRA), the same prompts and the same starting noise in every column, so any difference is the
model's. ``report.json`` is written by the command (it is the data); ``report.md`` is its
readable summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_grid", "plot_losses", "write_markdown"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: Sequence[float], window: int) -> np.ndarray:
    v = np.asarray(values, np.float64)
    if len(v) < window or window < 2:
        return v
    kernel = np.ones(window) / window
    return np.convolve(v, kernel, mode="valid")


def plot_losses(curves: Mapping[str, Sequence[float]], path: Path) -> None:
    """Training loss per step (light) and its moving average (bold), one colour per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for i, (label, values) in enumerate(curves.items()):
        colour = f"C{i}"
        ax.plot(np.arange(1, len(values) + 1), values, color=colour, alpha=0.2, lw=0.8)
        window = max(1, len(values) // 20)
        sm = _smooth(values, window)
        ax.plot(np.arange(len(sm)) + (len(values) - len(sm)) + 1, sm, color=colour, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (instance + prior)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_grid(rows: Mapping[str, np.ndarray], titles: Sequence[str], path: Path) -> None:
    """Images (models x columns, each 1 x 8 x 8 in [-1, 1]) as one labelled grid."""
    plt = _pyplot()
    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(0.8 * n_cols + 1.2, 0.9 * n_rows + 0.6), dpi=120, squeeze=False
    )
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(images[c].reshape(8, 8), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=6)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def write_markdown(report: Mapping[str, Any], path: Path) -> None:
    """A short readable report of ``report.json``."""
    s = report["settings"]
    lines = [
        "# qta train",
        "",
        f"Concept `{s['instance_prompt']}` from {report['instance_images']} images; "
        f"{s['max_train_steps']} steps, rank {s['rank']}, learning rate {s['learning_rate']}, "
        f"seed {s['seed']}, back end `{report['backend']}` (N={report['array_n']}), "
        f"offload `{s['offload']}`.",
        "",
        "| model | final training loss | validation loss | concept score | prior score | "
        "wall time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in report["models"].items():
        sc = run.get("scores") or {}
        loss, val, wall = run.get("final_loss"), sc.get("validation_loss"), run.get("seconds")
        lines.append(
            f"| {name} | {'-' if loss is None else f'{loss:.4f}'} | "
            f"{'-' if val is None else f'{val:.4f}'} | {_pct(sc.get('concept_score'))} | "
            f"{_pct(sc.get('prior_score'))} | {'-' if wall is None else f'{wall:.0f} s'} |"
        )
    n = report["models"].get("base", {}).get("scores", {}).get("samples")
    if n:
        lines += ["", f"Scores from {n} samples per score (guidance {report['guidance']})."]
    hw = report.get("hardware")
    if hw:
        st = hw["per_step"]
        util = st["utilization"]
        lines += [
            "",
            "## Hardware (one INT8 training step)",
            "",
            f"- GEMMs per step: {st['gemms']} on `{hw['backend']}` "
            f"(cycles from the {', '.join(st['cycles_source'])})",
            f"- MACs per step: {st['macs']:,}",
            f"- cycles per step: {st['cycles']:,}" if st["cycles"] else "- cycles: -",
            f"- utilization: {_pct(util)} of a {hw['array_n']}x{hw['array_n']} array",
            f"- dataflows chosen: {st['gemms_by_dataflow']}",
            "",
            "| phase | GEMMs | MACs | cycles |",
            "| --- | --- | --- | --- |",
        ]
        for phase, v in st["by_phase"].items():
            lines.append(f"| {phase} | {v['gemms']} | {v['macs']:,} | {v['cycles']:,} |")
    check = report.get("golden_check")
    if check:
        lines += [
            "",
            f"Bit-for-bit check against the golden back end: "
            f"{'identical' if check['identical'] else 'DIFFERENT'} "
            f"({check['gemms_compared']} INT32 results, {check['tensors_compared']} tensors).",
        ]
    path.write_text("\n".join(lines) + "\n")
