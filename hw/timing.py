"""Cycle counts of the array core, in closed form and as an exact per-tile model.

Imports nothing from Amaranth: the compiler and the cycle model use these formulas to plan, and
the testbenches assert that the RTL takes exactly this many cycles.

Conventions
-----------
A program is a sequence of tiles presented on the core's two streams with no gaps (every
stream's next beat is valid as soon as the previous one was taken). Cycle 0 is the cycle the
first beat is accepted; ``cycles`` is the number of cycles from cycle 0 up to and including the
cycle of the last output row. With ``L = 2N + 1`` the core's latency:

**WS tile** ``(K, M)``: K weight rows, then M input rows. Alone::

    cycles = K + M + L

``J`` back-to-back WS tiles of the same shape (tile j+1's weights load while tile j streams)::

    cycles = K + (J - 1) * max(M, K) + M + L

so a long GEMM sustains one input row per cycle (``K * C`` MACs per cycle) whenever ``M >= K``.

**OS tile** ``K`` (K reduction steps of an up-to-N x N output tile). Alone::

    cycles = K + L

``J`` back-to-back OS tiles (tile j+1 accumulates while tile j drains)::

    cycles = K + (J - 1) * max(K, N) + L

so OS sustains ``N * N`` MACs per cycle whenever ``K >= N``.

**Switching** OS -> WS costs nothing beyond the WS tile's own weight load; WS -> OS: the first
OS step waits until N cycles after the last WS input row (WS rows enter the array skewed by up
to N-1 cycles, OS steps enter unskewed), i.e. N - 1 cycles more than a WS -> WS handover.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .checks import check_positive
from .config import Dataflow

__all__ = [
    "OsTile",
    "TileTiming",
    "WsTile",
    "latency",
    "os_cycles",
    "program_cycles",
    "schedule",
    "schedule_by_cycle",
    "ws_cycles",
]


@dataclasses.dataclass(frozen=True)
class WsTile:
    """Weight-stationary tile: ``k`` weight rows (``k <= N``) and ``m`` streamed input rows."""

    k: int
    m: int
    mode: Dataflow = dataclasses.field(default=Dataflow.WS, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", check_positive("k", self.k))
        object.__setattr__(self, "m", check_positive("m", self.m))


@dataclasses.dataclass(frozen=True)
class OsTile:
    """Output-stationary tile: ``k`` reduction steps into one up-to-N x N output tile."""

    k: int
    mode: Dataflow = dataclasses.field(default=Dataflow.OS, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", check_positive("k", self.k))


Tile = WsTile | OsTile


@dataclasses.dataclass(frozen=True)
class TileTiming:
    """When a tile's beats are accepted and its outputs leave (cycle numbers, inclusive)."""

    tile: Tile
    b_accepts: tuple[int, ...]  #: weight rows (WS) or B rows (OS)
    a_accepts: tuple[int, ...]  #: input rows (WS) or A columns (OS)
    outputs: tuple[int, ...]  #: output rows in the order they leave

    @property
    def last_output(self) -> int:
        return self.outputs[-1]


def latency(n: int) -> int:
    """Cycles from accepting a WS input row (or an OS tile's last step) to its output row."""
    return 2 * check_positive("n", n) + 1


def ws_cycles(n: int, k: int, m: int, tiles: int = 1) -> int:
    """Closed form: ``tiles`` back-to-back WS tiles of K weight rows and M input rows."""
    _check_k(n, k)
    return k + (tiles - 1) * max(m, k) + m + latency(n)


def os_cycles(n: int, k: int, tiles: int = 1) -> int:
    """Closed form: ``tiles`` back-to-back OS tiles of K reduction steps."""
    check_positive("k", k)
    return k + (tiles - 1) * max(k, n) + latency(n)


def _check_k(n: int, k: int) -> None:
    if k > n:
        raise ValueError(f"a WS tile holds at most N = {n} weight rows, not k = {k}")


def schedule(tiles: Sequence[Tile], n: int) -> list[TileTiming]:
    """Exact accept and output cycles of every beat, tile by tile (O(beats), no per-cycle loop).

    This mirrors the core's acceptance rules (see :mod:`cdm_qta.hw.core`): the ``a`` and ``b``
    streams each take their beats in program order, weight banks alternate between WS tiles,
    and the two hazard counters delay OS steps.
    """
    lat = latency(n)
    never = -(10**18)
    a_free = b_free = 0  # first cycle each stream can take its next beat
    bank_free = [0, 0]  # first cycle a bank may be written
    ws_count = 0
    last_ws_a = never
    last_os_last = never
    out: list[TileTiming] = []
    for tile in tiles:
        if isinstance(tile, WsTile):
            _check_k(n, tile.k)
            bank = ws_count % 2
            ws_count += 1
            load = max(b_free, bank_free[bank])
            b_acc = tuple(range(load, load + tile.k))
            start = max(a_free, load + tile.k)
            a_acc = tuple(range(start, start + tile.m))
            b_free = load + tile.k
            a_free = start + tile.m
            bank_free[bank] = a_free
            last_ws_a = a_acc[-1]
            outs = tuple(t + lat for t in a_acc)
        elif isinstance(tile, OsTile):
            start = max(a_free, b_free, last_ws_a + n)
            steps = list(range(start, start + tile.k - 1))
            steps.append(max(start + tile.k - 1, last_os_last + n))
            a_acc = b_acc = tuple(steps)
            last_os_last = steps[-1]
            a_free = b_free = last_os_last + 1
            outs = tuple(range(last_os_last + n + 2, last_os_last + lat + 1))
        else:
            raise TypeError(f"not a tile: {tile!r}")
        out.append(TileTiming(tile, b_acc, a_acc, outs))
    return out


def program_cycles(tiles: Sequence[Tile], n: int) -> int:
    """Cycles from the first accepted beat to the last output row, inclusive."""
    timings = schedule(tiles, n)
    if not timings:
        return 0
    first = min(min(t.a_accepts + t.b_accepts) for t in timings)
    return max(t.last_output for t in timings) - first + 1


def schedule_by_cycle(tiles: Sequence[Tile], n: int) -> list[TileTiming]:
    """Same result as :func:`schedule`, by stepping the core's handshake logic cycle by cycle.

    A second, independent statement of the rules: the unit tests check that both agree, so the
    fast per-tile model cannot drift from what the hardware's counters do.
    """
    a_q: list[tuple[int, Dataflow, bool]] = []  # (tile index, mode, last)
    b_q: list[tuple[int, Dataflow, bool]] = []
    for i, tile in enumerate(tiles):
        if isinstance(tile, WsTile):
            _check_k(n, tile.k)
            b_q += [(i, Dataflow.WS, j == tile.k - 1) for j in range(tile.k)]
            a_q += [(i, Dataflow.WS, j == tile.m - 1) for j in range(tile.m)]
        else:
            b_q += [(i, Dataflow.OS, j == tile.k - 1) for j in range(tile.k)]
            a_q += [(i, Dataflow.OS, j == tile.k - 1) for j in range(tile.k)]
    a_acc: list[list[int]] = [[] for _ in tiles]
    b_acc: list[list[int]] = [[] for _ in tiles]
    full = [False, False]
    wr = rd = 0
    since_ws = since_os_last = n
    ai = bi = 0
    cycle = 0
    while ai < len(a_q) or bi < len(b_q):
        a_head = a_q[ai] if ai < len(a_q) else None
        b_head = b_q[bi] if bi < len(b_q) else None
        take_a = a_head is not None and a_head[1] == Dataflow.WS and full[rd]
        take_b = b_head is not None and b_head[1] == Dataflow.WS and not full[wr]
        take_os = (
            a_head is not None
            and b_head is not None
            and a_head[1] == Dataflow.OS
            and b_head[1] == Dataflow.OS
            and since_ws == n
            and (not a_head[2] or since_os_last == n)
        )
        next_full = list(full)
        if take_a:
            a_acc[a_head[0]].append(cycle)
            if a_head[2]:
                next_full[rd] = False
                rd ^= 1
        if take_b:
            b_acc[b_head[0]].append(cycle)
            if b_head[2]:
                next_full[wr] = True
                wr ^= 1
        if take_os:
            a_acc[a_head[0]].append(cycle)
            b_acc[b_head[0]].append(cycle)
        since_ws = 1 if take_a else min(since_ws + 1, n)
        since_os_last = 1 if (take_os and a_head[2]) else min(since_os_last + 1, n)
        full = next_full
        ai += take_a or take_os
        bi += take_b or take_os
        cycle += 1
        if cycle > 10 * (len(a_q) + len(b_q) + n) + 100:
            raise RuntimeError("the handshake model deadlocked")
    lat = latency(n)
    result = []
    for i, tile in enumerate(tiles):
        if isinstance(tile, WsTile):
            outs = tuple(t + lat for t in a_acc[i])
        else:
            last = a_acc[i][-1]
            outs = tuple(range(last + n + 2, last + lat + 1))
        result.append(TileTiming(tile, tuple(b_acc[i]), tuple(a_acc[i]), outs))
    return result
