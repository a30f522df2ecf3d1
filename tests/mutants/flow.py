"""Make mutants of a target's generated Verilog and run its fast suite on each.

Files, under ``<build>/mutants`` (``$CDM_QTA_BUILD``, default ``build/``; never the folders
other runs use)::

    <target>/genuine/gen/<module>.v, .json   the genuine design and its description
    <target>/work/mutable.v                  the modules mutations may touch (what yosys reads)
    <target>/<mutant>/gen/<module>.v         the mutant, beside a copy of the genuine .json
    <target>/<mutant>/sim/icarus/...         its simulator build and one log per stage

Because :func:`cdm_qta.hw.generate.emit` keeps a ``.v`` whose ``.json`` matches, pointing
``CDM_QTA_BUILD`` at a mutant's folder makes every RTL test simulate that mutant, e.g.
``CDM_QTA_BUILD=build/mutants/pe/hand-narrow_psum pytest tests/rtl/test_array.py -k "icarus
and n4"`` (while hw/ is unchanged). The flow itself never regenerates a mutant
(:class:`~mutants.stage.PinnedTarget`): hw/ may change under a long run.

Every mutant starts with the *control* of its target: the same files made with no mutation,
every mutable module rewritten by yosys; it must pass every stage, or the round trip itself
would be what fails, and each stage's wall-clock bound is derived from its time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cdm_qta.tb.targets import SimTarget

from .catalog import HAND_MUTANTS, HandMutant
from .stage import StageResult, sha256
from .targets import MutationTarget, Stage, Suite
from .verilog import (
    MutantError,
    TextEdit,
    UnchangedMutant,
    interfaces,
    module_spans,
    replace_modules,
    resolve,
)
from .yosys import LIBRARY, Mutation, apply_mutations, list_mutations

__all__ = [
    "Mutant",
    "Outcome",
    "Prepared",
    "Runner",
    "hand_mutants",
    "prepare",
    "yosys_mutants",
]

TESTS_DIR = Path(__file__).resolve().parents[1]
RTL_DIR = TESTS_DIR / "rtl"
#: Default seed of the yosys sample (``mutate -list -seed``): the same sample on every run.
DEFAULT_SEED = 1
#: A mutant's stage may take the floor (simulator start, build) plus this many times what the
#: same test took in the control; beyond that it hangs, and the mutant is killed by timeout.
TIMEOUT_FACTOR = 5.0
TIMEOUT_FLOOR_S = 30.0
#: The bound before a control has been timed (the control itself runs under it).
CONTROL_TIMEOUT_S = 1200.0


@dataclasses.dataclass(frozen=True)
class Mutant:
    """A design to judge: no change (``control``), one yosys mutation or a hand-written bug."""

    id: str
    target: str
    kind: str  #: ``control``, ``hand`` or ``yosys``
    where: str
    description: str = ""
    mutations: tuple[Mutation, ...] = ()
    edit: TextEdit | None = None
    expect: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "kind": self.kind,
            "where": self.where,
            "description": self.description,
            "mutations": [m.to_dict() for m in self.mutations],
            "yosys": [m.command() for m in self.mutations],
            "edit": dataclasses.asdict(self.edit) if self.edit else None,
            "expect": self.expect,
        }


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the fast suite made of one mutant.

    ``status``: ``killed`` (a stage failed or ran out of time), ``survived`` (every stage
    passed), ``passed`` (a control that passed, as it must), ``unchanged`` (the mutation did
    not change the Verilog: equivalent by construction, outside the kill rate) or ``error``
    (the flow could not make or build the mutant: never counted as a kill).
    """

    mutant: Mutant
    status: str
    killed_by: str = ""
    stage: str = ""
    detail: str = ""
    seconds: float = 0.0
    stages: tuple[dict[str, Any], ...] = ()

    @property
    def killed(self) -> bool:
        return self.status == "killed"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.mutant.to_dict(),
            "status": self.status,
            "killed_by": self.killed_by,
            "stage": self.stage,
            "detail": self.detail,
            "seconds": round(self.seconds, 1),
            "stages": list(self.stages),
        }


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A target's genuine design, its mutable modules and their yosys round trip."""

    mt: MutationTarget
    folder: Path
    genuine: Path  #: the genuine ``.v``
    text: str
    mutable: tuple[str, ...]
    source: Path  #: ``work/mutable.v``: the file every yosys run of this target reads
    roundtrip: dict[str, str]  #: module -> the module as yosys writes it with no mutation


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise preparation of one target folder across threads and pytest workers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def prepare(mt: MutationTarget, base: Path) -> Prepared:
    """Generate ``mt``'s genuine Verilog into ``base/<target>/genuine`` and extract its mutable
    modules; the yosys round trip of those is what mutants and the control are made of."""
    folder = Path(base).resolve() / mt.name
    with _locked(folder / ".prepare.lock"):
        genuine = SimTarget(mt.sim, mt.top, mt.config, root=folder / "genuine").generate()
        text = genuine.read_text()
        spans = module_spans(text)
        mutable = tuple(n for n in spans if mt.mutable(n, mt.module))
        if not mutable:
            raise MutantError(f"{mt.name}: no mutable module in {genuine.name}")
        work = folder / "work"
        work.mkdir(exist_ok=True)
        source = work / "mutable.v"
        body = "".join(text[slice(*spans[n])] for n in mutable)
        stubs = interfaces(text, [n for n in spans if n not in mutable])
        for path, content in ((source, body), (work / LIBRARY, stubs)):
            if not path.exists() or path.read_text() != content:
                path.write_text(content)
        roundtrip = apply_mutations(source, [], work / f"roundtrip-{os.getpid()}")
    return Prepared(mt, folder, genuine, text, mutable, source, roundtrip)


def control(mt: MutationTarget) -> Mutant:
    return Mutant(
        "control",
        mt.name,
        "control",
        "every mutable module rewritten by yosys, no mutation",
        "the round trip must pass every stage",
    )


def hand_mutants(targets: Sequence[str]) -> list[Mutant]:
    """The hand-written mutants of ``targets`` (unresolved: see :func:`resolve_hand`)."""
    out = []
    for hm in HAND_MUTANTS:
        if hm.target in targets:
            where = (
                f"{hm.wire.module}/{hm.wire.wire}[{hm.wire.bit}] {hm.wire.mode}"
                if hm.wire
                else f"{hm.edit.module}: /{hm.edit.pattern}/"  # type: ignore[union-attr]
            )
            out.append(
                Mutant(
                    f"hand-{hm.name}",
                    hm.target,
                    "hand",
                    where,
                    f"{hm.risk}: {hm.how}",
                    edit=hm.edit,
                    expect=hm.expect,
                )
            )
    return out


def _hand(name: str) -> HandMutant:
    return next(h for h in HAND_MUTANTS if f"hand-{h.name}" == name)


def resolve_hand(prep: Prepared, mutant: Mutant) -> Mutant:
    """Turn a hand mutant's wire mutation into the one ``mutate`` command it stands for."""
    hm = _hand(mutant.id)
    if hm.wire is None:
        return mutant
    module = resolve(prep.mutable, hm.wire.module)
    found = list_mutations(prep.source, 1000, seed=1, filters=hm.wire.filters(module))
    if len(found) != 1:
        raise MutantError(
            f"{mutant.id}: {hm.wire} matches {len(found)} mutate candidates, not exactly one"
        )
    return dataclasses.replace(mutant, mutations=tuple(found))


def yosys_mutants(prep: Prepared, count: int, seed: int) -> list[Mutant]:
    """``count`` mutations sampled by ``mutate -list`` over the target's mutable modules."""
    found = list_mutations(prep.source, count, seed=seed)
    return [
        Mutant(
            f"y{seed}-{i:03d}",
            prep.mt.name,
            "yosys",
            m.where(prep.mt.module),
            f"mutate -mode {m.mode}",
            mutations=(m,),
        )
        for i, m in enumerate(found)
    ]


def make_mutant(prep: Prepared, mutant: Mutant) -> tuple[Path, str]:
    """Write the mutant's Verilog and the genuine description into its own build root;
    return the root and the Verilog's SHA-256."""
    text = prep.text
    if mutant.kind == "control":
        text = replace_modules(text, {n: prep.roundtrip[n] for n in prep.mutable})
    if mutant.mutations:
        root = prep.folder / mutant.id
        root.mkdir(parents=True, exist_ok=True)
        written = apply_mutations(prep.source, mutant.mutations, root / "yosys")
        for name, source in written.items():
            theirs = module_spans(source)[name]
            mine = module_spans(prep.roundtrip[name])[name]
            if source[slice(*theirs)] == prep.roundtrip[name][slice(*mine)]:
                raise UnchangedMutant(f"{mutant.id}: the mutation did not change module {name}")
        text = replace_modules(text, written)
    if mutant.edit is not None:
        text = mutant.edit.apply(text)
    if mutant.kind != "control" and text == prep.text:
        raise MutantError(f"{mutant.id}: the mutant is the genuine design")
    root = prep.folder / mutant.id
    gen = root / "gen"
    if gen.exists():
        shutil.rmtree(gen)
    shutil.rmtree(root / "sim", ignore_errors=True)
    gen.mkdir(parents=True)
    v_path = gen / prep.genuine.name
    v_path.write_text(text)
    shutil.copyfile(prep.genuine.with_suffix(".json"), v_path.with_suffix(".json"))
    return root, sha256(v_path)


def _stage_command(target: str, root: Path, stage: Stage, sha: str, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "mutants", "stage", "--target", target, "--root", str(root)]
    return [*cmd, "--stage", json.dumps(stage.to_dict()), "--sha", sha, "--out", str(out)]


class Runner:
    """Runs the stages of controls and mutants in bounded child processes.

    The control of a target runs each suite in one process and yields the *plan* of its
    mutants: one stage per test, cheapest first by the control's simulated time (then the fuzz
    suite), each bounded by ``TIMEOUT_FLOOR_S + TIMEOUT_FACTOR`` times its control time.

    Parameters
    ----------
    jobs : int
        Mutants judged at once (each runs one simulator at a time): at most 2 on this machine.
    nice : int
        Niceness of every child (the machine's cores are shared).
    keep : bool
        Keep the simulator builds of judged mutants (else only their Verilog and logs stay).
    exclude : mapping
        Per target, tests (or ``"fuzz"``) left out of its suites (CI's shorter subset).
    """

    def __init__(
        self,
        *,
        jobs: int = 2,
        nice: int = 10,
        keep: bool = False,
        exclude: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.jobs = max(1, jobs)
        self.nice = nice
        self.keep = keep
        self.exclude = {k: tuple(v) for k, v in (exclude or {}).items()}
        #: target -> [(stage, wall-clock bound in seconds)], set by the target's control.
        self.plans: dict[str, list[tuple[Stage, float]]] = {}
        self._live: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def suites(self, mt: MutationTarget) -> list[Suite]:
        """``mt``'s suites without the excluded tests."""
        extra = self.exclude.get(mt.name, ())
        return [
            dataclasses.replace(s, exclude=(*s.exclude, *extra))
            for s in mt.suites
            if not (s.module == "fuzz" and "fuzz" in extra)
        ]

    def close(self) -> None:
        """End every child still running (the run was interrupted)."""
        with self._lock:
            live = list(self._live)
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _env(self) -> dict[str, str]:
        extra = [p for p in [os.environ.get("PYTHONPATH")] if p]
        path = os.pathsep.join([str(TESTS_DIR), str(RTL_DIR), *extra])
        return {**os.environ, "PYTHONPATH": path}

    def run_stage(
        self, mt: MutationTarget, root: Path, stage: Stage, sha: str, timeout_s: float
    ) -> StageResult | None:
        """One stage in a child process; ``None`` if it ran out of time (it is then killed)."""
        tag = f"{len(list(root.glob('stage-*.json')))}"
        out = root / f"stage-{tag}.json"
        cmd = _stage_command(mt.name, root, stage, sha, out)
        if self.nice and shutil.which("nice"):
            cmd = ["nice", "-n", str(self.nice), *cmd]
        console = root / f"stage-{tag}.out"
        with console.open("w") as sink:
            proc = subprocess.Popen(
                cmd,
                cwd=root,
                env=self._env(),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self._lock:
                self._live.add(proc)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                # The child leads its own process group (it and its simulator): end all of it.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return None
            finally:
                with self._lock:
                    self._live.discard(proc)
        if not out.exists():
            tail = console.read_text(errors="replace")[-300:].strip().replace("\n", " | ")
            return StageResult(0, (), proc.returncode, 0.0, f"no verdict from the stage: {tail}")
        return StageResult.from_dict(json.loads(out.read_text()))

    def judge(self, prep: Prepared, mutant: Mutant) -> Outcome:
        """Make ``mutant`` and run its stages until one fails (a control: all must pass)."""
        start = time.perf_counter()
        try:
            if mutant.kind == "hand":
                mutant = resolve_hand(prep, mutant)
            root, sha = make_mutant(prep, mutant)
        except UnchangedMutant as exc:
            return Outcome(
                mutant, "unchanged", detail=str(exc), seconds=time.perf_counter() - start
            )
        except (MutantError, RuntimeError) as exc:
            return Outcome(mutant, "error", detail=str(exc), seconds=time.perf_counter() - start)
        if mutant.kind == "control":
            outcome = self._control(prep.mt, mutant, root, sha)
        elif prep.mt.name not in self.plans:
            detail = f"no plan: the control of {prep.mt.name} failed"
            outcome = Outcome(mutant, "error", detail=detail)
        else:
            outcome = self._stages(prep.mt, mutant, root, sha)
        if not self.keep:
            shutil.rmtree(root / "sim" / prep.mt.sim / prep.mt.module, ignore_errors=True)
        return dataclasses.replace(outcome, seconds=time.perf_counter() - start)

    def _control(self, mt: MutationTarget, mutant: Mutant, root: Path, sha: str) -> Outcome:
        stages: list[dict[str, Any]] = []
        timed: list[tuple[float, int, Stage, float]] = []
        fuzz: list[tuple[Stage, float]] = []
        for suite in self.suites(mt):
            stage = Stage(suite)
            result = self.run_stage(mt, root, stage, sha, CONTROL_TIMEOUT_S)
            if result is None:
                detail = f"{stage.name} took more than {CONTROL_TIMEOUT_S:.0f} s"
                return Outcome(mutant, "error", detail=detail, stages=tuple(stages))
            stages.append({"stage": stage.name, **result.to_dict()})
            if not result.passed:
                detail = result.error or f"the genuine round trip fails {', '.join(result.failed)}"
                return Outcome(mutant, "error", detail=detail, stages=tuple(stages))
            if suite.module == "fuzz":
                fuzz.append((stage, TIMEOUT_FLOOR_S + TIMEOUT_FACTOR * result.seconds))
                continue
            for _i, case in enumerate(result.cases):
                test = case["name"].removeprefix(f"{suite.module}.")
                bound = TIMEOUT_FLOOR_S + TIMEOUT_FACTOR * case["seconds"]
                timed.append((case["sim_ns"], len(timed), Stage(suite, test), bound))
        plan = [(stage, bound) for _, _, stage, bound in sorted(timed)] + fuzz
        self.plans[mt.name] = plan
        return Outcome(mutant, "passed", stages=tuple(stages))

    def _stages(self, mt: MutationTarget, mutant: Mutant, root: Path, sha: str) -> Outcome:
        stages: list[dict[str, Any]] = []
        for stage, bound in self.plans[mt.name]:
            began = time.perf_counter()
            result = self.run_stage(mt, root, stage, sha, bound)
            seconds = time.perf_counter() - began
            if result is None:
                stages.append({"stage": stage.name, "seconds": round(seconds, 1), "timeout": True})
                killer = f"{stage.name} (timeout, {seconds:.0f} s)"
                return Outcome(mutant, "killed", killer, stage.name, stages=tuple(stages))
            stages.append({"stage": stage.name, **result.to_dict()})
            if result.error:
                return Outcome(mutant, "error", detail=result.error, stages=tuple(stages))
            if not result.passed:
                killer = result.failed[0] if result.failed else f"{stage.name} (ran no test)"
                return Outcome(mutant, "killed", killer, stage.name, stages=tuple(stages))
        return Outcome(mutant, "survived", stages=tuple(stages))
