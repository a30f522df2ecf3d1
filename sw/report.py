"""``qta report``: every table and figure of issue 12 in one folder, with the command of each.

``qta report --out build/report [--workload sd15] [--array-n 64] [--sweep-workload tiny]
[--sweep-n 8,16,32,64]`` writes

* ``table1.md`` / ``table1.json``: the paper's Table I (:mod:`cdm_qta.sw.table1`), which
  needs ``qta synth``'s results (``build/synth/synth_results.json``); without them the
  report says so and leaves it out (so does the sweep, whose areas come from the same file);
* ``perf_{ws,os,hybrid}.json`` and ``perf_hybrid_transposed.json``: ``qta perf`` of the step;
* ``fig6.png`` / ``fig6.json`` / ``fig6.md``: the paper's Fig. 6 (:mod:`cdm_qta.sw.fig6`);
* ``sweep.png`` / ``sweep.csv`` / ``sweep.json``: ``qta sweep`` (:mod:`cdm_qta.sw.sweep`);
* ``report.md``: all of it, each part under the exact command that regenerates it.

Parts run one after another in this process and share the prediction caches, so the step's
GEMMs are predicted once for everything. ``nox -s report`` runs the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cdm_qta.hw.files import write_atomic

from . import fig6 as fig6_mod
from . import sweep as sweep_mod
from .errors import CliError
from .perf import add_common, config_for, format_perf, load_workload, perf_doc

__all__ = ["add_parser", "run", "write_report"]


def _common_flags(args: argparse.Namespace) -> str:
    flags = [f"--clock-mhz {args.clock_mhz:g}", f"--predictor {args.predictor}"]
    if args.vdd != 1.1:
        flags.append(f"--vdd {args.vdd:g}")
    if args.no_cache:
        flags.append("--no-cache")
    if str(args.synth) != "build/synth/synth_results.json":
        flags.append(f"--synth {args.synth}")
    return " ".join(flags)


def write_report(args: argparse.Namespace) -> Path:
    """Run every part (module docstring) into ``args.out``; return the ``report.md`` path."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = config_for(args.array_n)
    common = _common_flags(args)
    md: list[str] = [
        "# cdm-qta: a training step's numbers, Fig. 6, Table I and the design space",
        "",
        f"Workload {args.workload} at N={cfg.n}, {args.clock_mhz:g} MHz. Every file below was "
        "written by `qta report`; the command under each heading regenerates it alone.",
        "",
    ]

    # -- Table I -------------------------------------------------------------------------
    md += ["## Table I", ""]
    synth_ok = Path(args.synth).is_file()
    if synth_ok:
        from cdm_qta.hw.synth import load_results

        from .table1 import format_report, table1

        t1 = table1(
            cfg.n, synth=load_results(Path(args.synth)), clock_mhz=args.clock_mhz, vdd=args.vdd
        )
        write_atomic(out / "table1.json", json.dumps(t1, indent=2) + "\n")
        write_atomic(out / "table1.md", format_report(t1) + "\n")
        md += [
            f"`qta table1 --n {cfg.n} --synth {args.synth}`",
            "",
            "```",
            format_report(t1),
            "```",
            "",
        ]
    else:
        md += [
            f"Not written: no synthesis results at `{args.synth}`. Run `qta synth` (or "
            "`nox -s synth`) first, then `qta report` again (the sweep's areas need them too).",
            "",
        ]

    # -- qta perf ------------------------------------------------------------------------
    md += ["## One training step (`qta perf`)", ""]
    traces = {m: load_workload(args.workload, m)[1] for m in ("lora", "full")}
    summary = []
    for flow, transpose in (("ws", "off"), ("os", "off"), ("hybrid", "off"), ("hybrid", "auto")):
        doc = perf_doc(
            traces["lora"],
            cfg,
            args,
            workload=f"{args.workload} (lora)",
            dataflow=flow,
            transpose=transpose,
        )
        name = f"perf_{flow}{'_transposed' if transpose == 'auto' else ''}.json"
        write_atomic(out / name, json.dumps(doc, indent=2) + "\n")
        cmd = (
            f"qta perf --workload {args.workload} --mode lora --dataflow {flow} --transpose "
            f"{transpose} --array-n {cfg.n} {common} --out {out / name}"
        )
        t = doc["totals"]
        summary.append(
            f"| {flow} | {transpose} | {t['cycles']:,} | {t['latency_s'] * 1e3:.3f} | "
            f"{t['utilization']:.1%} | {t['energy_j'] * 1e3:.4g} | {t['edp_js']:.4g} | "
            f"{t['roofline']['cycles_over_roofline']} | {t['scalesim']['chosen_dataflow_cycles']:,}"
            f" | `{cmd}` |"
        )
        if flow == "hybrid" and transpose == "off":
            md += ["```", format_perf(doc, top=10), "```", ""]
    md += [
        "| dataflow | transpose | cycles | latency ms | utilization | energy mJ | EDP J*s | "
        "x roofline | SCALE-Sim cycles | command |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *summary,
        "",
    ]

    # -- Fig. 6 ------------------------------------------------------------------------------
    if args.workload.endswith(".jsonl"):
        md += [
            "## Fig. 6",
            "",
            "Not written: Fig. 6 needs a model name (it traces both modes).",
            "",
        ]
    else:
        f6 = fig6_mod.fig6(args.workload, args, traces=traces)
        cmd = f"qta fig6 --workload {args.workload} --array-n {cfg.n} {common} --out {out}"
        fig6_mod.write_fig6(f6, out, cmd)
        md += [
            "## Fig. 6",
            "",
            f"`{cmd}`",
            "",
            "![Fig. 6](fig6.png)",
            "",
            fig6_mod.ratio_table(f6),
            "",
            "```",
            fig6_mod.totals_table(f6),
            "```",
            "",
            "Bars: "
            + "; ".join(
                f"{fig6_mod.LABELS[b]} = mode {m}, dataflow {f}"
                for b, (m, f) in fig6_mod.BARS.items()
            )
            + " (all INT8 on the same accelerator; see `cdm_qta.sw.fig6`).",
            "",
        ]

    # -- sweep -----------------------------------------------------------------------------
    md += ["## Design space (`qta sweep`)", ""]
    if not synth_ok:
        md += ["Not written: the areas come from `qta synth`'s results (see Table I).", ""]
    else:
        ns = [int(v) for v in args.sweep_n.split(",")]
        sw = sweep_mod.sweep(
            args.sweep_workload,
            "lora",
            ns=ns,
            sram_scales=[1.0],
            dram_gbps=[None],
            args=args,
            jobs=args.jobs,
        )
        sweep_mod.write_sweep(sw, out)
        cmd = (
            f"qta sweep --workload {args.sweep_workload} --array-n {args.sweep_n} {common} "
            f"--jobs {args.jobs} --out {out}"
        )
        md += [
            f"`{cmd}`",
            "",
            "![sweep](sweep.png)",
            "",
            "```",
            sweep_mod.format_sweep(sw),
            "```",
            "",
        ]
    path = out / "report.md"
    write_atomic(path, "\n".join(md) + "\n")
    return path


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "report",
        help="Table I, qta perf, Fig. 6 and a sweep into one folder with report.md",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--out", type=Path, default=Path("build/report"), help="folder (build/report)")
    p.add_argument("--workload", default="sd15", help="the step of perf and Fig. 6 (sd15)")
    p.add_argument("--array-n", type=int, default=64)
    p.add_argument("--sweep-workload", default="tiny", help="the sweep's workload (tiny)")
    p.add_argument("--sweep-n", default="8,16,32,64", help="the sweep's sizes (8,16,32,64)")
    p.add_argument("--jobs", type=int, default=1, help="processes for the sweep's points")
    add_common(p)
    p.set_defaults(run=run, scheduler=None)
    return p


def run(args: argparse.Namespace) -> int:
    config_for(args.array_n)
    if args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, not {args.jobs}")
    print(f"wrote {write_report(args)}")
    return 0
