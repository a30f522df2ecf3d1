"""``python -m mutants``: mutation testing of the generated RTL (what ``nox -s mutants`` runs).

::

    python -m mutants                      # hand mutants + the seeded yosys sample, all targets
    python -m mutants --targets pe,core    # only these targets
    python -m mutants --hand-only          # the eight hand-written mutants (and controls)
    python -m mutants --sample 5           # 5 yosys mutants per target instead of the defaults
    python -m mutants list                 # what would run, without simulating
    python -m mutants --targets dma --only y1-000,y1-011   # re-judge just these mutants

(with ``tests`` on ``PYTHONPATH``). Prints the table (mutant, where, killed, by which test)
and a summary, writes JSON (``--json``, default ``<build>/mutants/results.json``), and exits
non-zero unless every hand mutant is killed, at least 95 % of the yosys sample is (not
counting the survivors explained as equivalent), every survivor is explained
(:mod:`mutants.survivors`) and nothing failed to run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .report import main_list, main_run
from .stage import main_stage
from .targets import TARGETS


def _ids(spec: str) -> tuple[str, ...]:
    return tuple(i.strip() for i in spec.split(",") if i.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mutants", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    for name in ("run", "list"):
        p = sub.add_parser(name, help=f"{name} the mutants")
        p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
        own = ", ".join(f"{t.name} {t.sample}" for t in TARGETS.values())
        p.add_argument("--sample", type=int, help=f"yosys mutants per target (default: {own})")
        p.add_argument("--seed", type=int, default=1, help="mutate -list seed (default 1)")
        p.add_argument("--hand-only", action="store_true", help="no yosys sample")
        p.add_argument("--no-hand", action="store_true", help="no hand-written mutants")
        p.add_argument(
            "--only",
            type=_ids,
            default=(),
            help="comma-separated mutant ids, each id of every target or TARGET:ID of one "
            "(e.g. y1-001,dma:y1-011); the controls still run",
        )
        p.add_argument("--build", type=Path, help="build folder (default $CDM_QTA_BUILD/mutants)")
        p.add_argument("--jobs", type=int, default=2, help="mutants judged at once (default 2)")
        p.add_argument("--nice", type=int, default=10, help="niceness of simulations")
        p.add_argument("--json", type=Path, help="results file (default <build>/results.json)")
        p.add_argument("--keep", action="store_true", help="keep simulator builds")
    st = sub.add_parser("stage", help="(internal) run one stage on one design")
    st.add_argument("--target", required=True, choices=sorted(TARGETS))
    st.add_argument("--root", type=Path, required=True)
    st.add_argument("--stage", required=True, help="the stage, as JSON")
    st.add_argument("--sha", required=True)
    st.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    args = _parser().parse_args(argv)
    if args.command == "stage":
        return main_stage(args.target, args.root, args.stage, args.sha, args.out)
    if args.command == "list":
        return main_list(args)
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
