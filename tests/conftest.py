"""Suite-wide rules: in CI (``CI=true``) a skip is a failure unless it is on the allow-list.

A missing simulator, an import that failed or a cocotb test that bowed out must not turn a
broken install into a green run. Each allowed skip is matched by its reason and says why it
is fine to skip in CI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

#: Reason pattern -> why CI may skip it.
ALLOWED_SKIPS: dict[str, str] = {
    r"^Icarus runs the 131k-cycle wrap test only for N <= \d+": (
        "80 s of Icarus per size above N=8; Verilator runs the same test at every size"
    ),
}


def _reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _allowed(reason: str) -> bool:
    return any(re.search(pattern, reason) for pattern in ALLOWED_SKIPS)


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = _reason(report.longrepr)
        if not _allowed(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI, which only allows {list(ALLOWED_SKIPS)}: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if _in_ci() and report.skipped:
        reason = _reason(report.longrepr)
        if not _allowed(reason):
            report.outcome = "failed"
            report.longrepr = f"module skipped in CI: {reason}"
