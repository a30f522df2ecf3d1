"""Run one stage of a target's fast suite on one design, in a process of its own.

The parent (:mod:`mutants.flow`) starts ``python -m mutants stage ...`` per stage with a
wall-clock bound and kills its process group when the bound passes, so a mutant that hangs
the simulator is *killed by timeout* instead of stalling the run. This process builds the
design that lies in ``<root>/gen`` (never regenerating it: :class:`PinnedTarget`), runs the
stage and writes a JSON verdict: tests run, the names of the failed ones, the simulator's
exit status.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from cdm_qta.tb.targets import SimTarget
from cdm_qta.tb.toolchain import AXI_WARNINGS, DEFAULT_SEED, prepare_verilator, runner_exit_code

from .targets import MutationTarget, Stage

__all__ = ["PinnedTarget", "StageResult", "run_stage", "sha256"]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class PinnedTarget(SimTarget):
    """A :class:`SimTarget` that simulates the Verilog already in ``<root>/gen`` as it is.

    :meth:`SimTarget.generate` regenerates when the gateware sources change, and other
    engineers edit ``hw/`` while a mutation run goes on: a regenerated file would silently turn
    a mutant back into the genuine design. This one refuses instead (``sha`` is the mutant's).
    """

    sha: str = ""

    def generate(self) -> Path:
        path = self.root / "gen" / f"{self.module}.v"
        if not path.exists():
            raise RuntimeError(f"{path} is missing: did the configuration change during the run?")
        if self.sha and sha256(path) != self.sha:
            raise RuntimeError(f"{path} is not the mutant the run wrote (changed on disk)")
        return path


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What one stage run found. ``error`` is a failure of the flow, not of the design.

    ``cases``: every cocotb test of the run, in run order, as ``{"name", "failed", "seconds",
    "sim_ns"}`` (the control's cases become the mutants' per-test stages).
    """

    tests: int
    failed: tuple[str, ...]  #: ``module.test`` of every failed test, in run order
    exit_code: int
    seconds: float
    error: str = ""
    cases: tuple[dict[str, Any], ...] = ()

    @property
    def passed(self) -> bool:
        return not self.error and self.tests > 0 and not self.failed and self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageResult:
        return cls(
            **{**data, "failed": tuple(data["failed"]), "cases": tuple(data.get("cases", ()))}
        )


def _cases(path: Path, module: str) -> tuple[dict[str, Any], ...]:
    cases = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        failed = case.find("failure") is not None or case.find("error") is not None
        cases.append(
            {
                "name": f"{case.get('classname') or module}.{case.get('name')}",
                "failed": failed,
                "seconds": float(case.get("time") or 0),
                "sim_ns": float(props.get("sim_time_duration") or 0),
            }
        )
    return tuple(cases)


def _run_cocotb(target: SimTarget, stage: Stage, seed: int) -> StageResult:
    """Like :func:`cdm_qta.tb.toolchain.run_tests`, but keeps each test's name and outcome."""
    from cocotb_tools.runner import get_runner

    if target.sim == "verilator":
        prepare_verilator()
    runner = get_runner(target.sim)
    suite = stage.suite
    results = target.build_dir / f"mutant-results-{os.getpid()}.xml"
    results.unlink(missing_ok=True)
    if stage.test:  # exactly this test (the runner's `testcase` also matches name suffixes)
        test_filter = rf"^{re.escape(suite.module)}\.{re.escape(stage.test)}$"
    elif suite.exclude:
        names = "|".join(re.escape(n) for n in suite.exclude)
        test_filter = rf"^(?!.*\.(?:{names})$)"
    else:
        test_filter = None
    start = time.perf_counter()
    exit_code = runner_exit_code(
        runner.test,
        test_module=suite.module,
        hdl_toplevel=target.module,
        hdl_toplevel_lang="verilog",
        build_dir=str(target.build_dir),
        test_dir=str(target.build_dir),
        results_xml=str(results),
        extra_env={**target.env(), "PYTHONWARNINGS": AXI_WARNINGS},
        test_filter=test_filter,
        seed=seed,
        log_file=target.log_file(_log_name(suite.module, stage.test)),
    )
    seconds = time.perf_counter() - start
    try:
        cases = _cases(results, suite.module)
    except (OSError, ElementTree.ParseError):
        # The simulator died before writing results: a failure of the design's simulation.
        return StageResult(0, (f"{stage.name} (simulator crashed)",), exit_code or 1, seconds)
    results.unlink(missing_ok=True)
    failed = tuple(c["name"] for c in cases if c["failed"])
    if exit_code and not failed:
        failed = (f"{stage.name} (simulator exit status {exit_code})",)
    return StageResult(len(cases), failed, exit_code, seconds, cases=cases)


def run_stage(mt: MutationTarget, root: Path, stage: Stage, sha: str) -> StageResult:
    """Build the design in ``root`` (pinned to ``sha``) and run ``stage`` on it."""
    from cdm_qta.tb.session import JobFailed, SimulationFailed

    start = time.perf_counter()
    target = PinnedTarget(mt.sim, mt.top, mt.config, root=root, sha=sha)
    try:
        target.build(label="build")
    except Exception as exc:  # a design yosys wrote that the simulator cannot build
        return StageResult(0, (), 0, time.perf_counter() - start, f"build failed: {exc}")
    if stage.suite.module == "fuzz":
        from .fuzz import run_fuzz

        try:
            streams, problems = run_fuzz(target, stage.suite.fuzz_streams, DEFAULT_SEED)
        except (JobFailed, SimulationFailed) as exc:  # the mutant's simulator died
            streams, problems = 0, [f"{stage.name}: {str(exc).splitlines()[0][:160]}"]
        return StageResult(max(streams, 1), tuple(problems), 0, time.perf_counter() - start)
    result = _run_cocotb(target, stage, DEFAULT_SEED)
    return dataclasses.replace(result, seconds=time.perf_counter() - start)


def main_stage(target: str, root: Path, stage: str, sha: str, out: Path) -> int:
    """Entry point of ``python -m mutants stage``: write the verdict to ``out``."""
    from .targets import TARGETS

    try:
        result = run_stage(TARGETS[target], root, Stage.from_dict(json.loads(stage)), sha)
    except Exception as exc:  # reported as a flow error, never as a kill
        result = StageResult(0, (), 0, 0.0, f"{type(exc).__name__}: {exc}")
    Path(out).write_text(json.dumps(result.to_dict()))
    return 0


def _log_name(module: str, test: str | None) -> str:
    """A file-name-safe log name for one stage (test names may hold brackets and slashes)."""
    return re.sub(r"[^\w.=-]", "_", f"{module}.{test or 'all'}")
