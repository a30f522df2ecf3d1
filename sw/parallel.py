"""Where ``qta perf`` and ``qta sweep`` run their independent jobs: a standard executor.

Nothing here schedules anything itself. Local runs use :class:`concurrent.futures.
ProcessPoolExecutor` (``--jobs N``; one job runs in this process, no pool). With ``--scheduler
ADDRESS`` the same ``map`` goes to a cluster through its own ``concurrent.futures`` adapter:

* Dask: ``tcp://host:8786`` (or ``dask://host:8786``) -> ``distributed.Client(addr)
  .get_executor()``;
* Ray: ``ray://host:10001`` or ``ray:auto`` -> ``ray.util.multiprocessing.Pool`` (Ray's
  drop-in ``multiprocessing`` pool; its ``imap`` is the ``map`` here).

The package must be importable (``pip install distributed`` / ``pip install ray``); otherwise
the command stops with one line saying so. Jobs must be picklable top-level functions.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from .errors import CliError

__all__ = ["check_scheduler", "executor_for", "scheduler_kind"]


def scheduler_kind(address: str) -> tuple[str, str]:
    """(``"dask"`` or ``"ray"``, the address the client takes) for a ``--scheduler`` value.

    Raises
    ------
    CliError
        For an address of neither form.
    """
    if address.startswith("dask://"):
        return "dask", "tcp://" + address.removeprefix("dask://")
    if address.startswith(("tcp://", "tls://")):
        return "dask", address
    if address.startswith("ray://"):
        return "ray", address
    if address.startswith("ray:"):
        return "ray", address.removeprefix("ray:")
    raise CliError(
        f"--scheduler must be tcp://HOST:PORT or dask://HOST:PORT (Dask) or ray://HOST:PORT or "
        f"ray:auto (Ray), not {address!r}"
    )


def _import(name: str, kind: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        pip = "distributed" if kind == "dask" else "ray"
        raise CliError(
            f"--scheduler {kind} needs the {name!r} package (pip install {pip})"
        ) from None


def check_scheduler(address: str | None) -> None:
    """Fail now (one line, :class:`CliError`) if ``address`` is malformed or its package is
    missing, before any work is done."""
    if address:
        kind, _ = scheduler_kind(address)
        _import("distributed" if kind == "dask" else "ray.util.multiprocessing", kind)


class _RayMap:
    """A Ray pool seen through ``map(fn, iterable)`` (results in order)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        return iter(self._pool.imap(fn, list(items)))


@contextlib.contextmanager
def executor_for(jobs: int = 1, scheduler: str | None = None) -> Iterator[Any]:
    """An object with ``map(fn, iterable)``: ``None`` (run here) for one local job, a process
    pool for several, a Dask or Ray executor for ``scheduler`` (see the module docstring)."""
    if scheduler:
        kind, address = scheduler_kind(scheduler)
        if kind == "dask":
            distributed = _import("distributed", kind)
            client = distributed.Client(address)
            try:
                yield client.get_executor()
            finally:
                client.close()
        else:
            pool_mod = _import("ray.util.multiprocessing", kind)
            pool = pool_mod.Pool(ray_address=address)
            try:
                yield _RayMap(pool)
            finally:
                pool.close()
        return
    if jobs < 1:
        raise CliError(f"--jobs must be at least 1, not {jobs}")
    if jobs == 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield pool
