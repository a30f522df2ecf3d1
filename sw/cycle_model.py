"""Cycle model of the generated accelerator: when every instruction is taken and retires.

Why it exists: ``--dataflow auto`` ranks WS against OS before anything runs, the compiler
orders its instruction list by predicted start time, the golden back end reports cycle counts
where the RTL reports counters, and the RTL back end derives its hang budget from it. All of
them want the hardware's numbers, so this is a model of *this* RTL (:mod:`cdm_qta.hw`), held
to the accelerator's ``retire`` trace port cycle by cycle (``tests/rtl/test_cycle_model.py``).

Cycle 0 is the first cycle the ``cycles`` counter counts (the one after the host's START).
The model follows every instruction through the same pipeline stages as the RTL; each stage's
time is a ``max`` of the constraints that gate it, every one a register or FIFO of the RTL:

* **Fetch** (:mod:`cdm_qta.hw.fetch`): row ``r`` of ``R = max(16, W)`` bytes is requested (AR)
  at ``max(2 + r, AR(r-1) + 1, leave(r - depth) + 1)`` (``depth`` =
  :func:`~cdm_qta.hw.config.fetch_buffer_rows`: a request needs a free buffer row); its beats
  come ``read_latency + 2`` cycles after the AR at the earliest, one per cycle, and its words
  are valid two cycles after its last beat, then one word per cycle.
* **Instruction queue** (``SyncFIFOBuffered``: a FIFO of ``depth - 1`` words plus an output
  register): a word enters only while the inner FIFO has room, reaches the head two cycles
  later, and the dispatcher hands one word per cycle to an engine queue with room (``take of
  that engine's instruction j - Q, + 1``). A FENCE leaves only once every engine is idle (one
  cycle after the last retire).
* **Engines** see a dispatched word one cycle later and take it once its tokens are there (a
  push in cycle ``P`` is visible in ``P + 1``) and they have room (LOAD/STORE: at most
  ``transfers_in_flight`` transfers, one command register; COMPUTE: the job FIFOs of its
  streamers and writer).
* **LOAD**: command accepted by the DMA's check register at ``take + 1``, loaded into the burst
  generator one cycle later (or when the previous command's last burst issues), one burst per
  cycle (a row is one burst unless it crosses 4 KB or is longer than 256 beats), at most
  ``dma_outstanding`` bursts waiting for data; R beats ``read_latency + 2`` cycles after the
  AR at the earliest, in order; retire two cycles after the last beat.
* **COMPUTE**: each streamer issues one SRAM read per cycle while its 4-row output FIFO has
  room (row available two cycles after its read); the array core accepts beats by exactly the
  rules of :func:`cdm_qta.hw.timing.schedule` (weight banks, the WS/OS hazards) at the cycle
  the beat is available; retire one cycle after the last output row (``last accept + 2N + 2``).
* **STORE**: command and row jobs at ``take + 1``; a W beat per cycle from a row's
  availability and its burst's AW; the B response ``write_latency + 1`` cycles after a burst's
  last W beat; retire one cycle after the last B.
* The ``cycles`` counter stops two cycles after the last dispatch or retire.

What is exact and what is not: the fetch, the dispatcher, the engine queues, the tokens and
the compute engine follow the RTL's registers one for one, as do LOAD and STORE on an
otherwise idle bus. Where the instruction fetch and the LOAD engine's DMA compete for the
shared AR/R channel, each burst takes the earliest free bus cycles in the order the model
meets them rather than by the hardware's round-robin grant, and the DRAM's own AR queue limit
across both readers is not modelled; a throttled DRAM (``beat_num < beat_den``) is modelled
as each burst occupying proportionally more cycles. Those are the only approximations
(measured within a fraction of a percent on whole GEMMs). Error paths (DMA-rejected commands)
are timed approximately; the counters ``*_wait_bus`` and ``compute_wait_array`` are not
predicted (``None``).

Speed: the steady state of a stream (consecutive bursts on a free bus, consecutive rows in
the array) is jumped over in closed form, and results are cached per (configuration, program
words, DRAM timing), so a whole training step of repeated GEMM shapes costs one simulation per
distinct program.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections import deque
from collections.abc import Iterable, Sequence

from cdm_qta.hw import isa
from cdm_qta.hw.config import (
    INSN_BYTES,
    AcceleratorConfig,
    Dataflow,
    DramTiming,
    fetch_buffer_rows,
    fetch_row_bytes,
)
from cdm_qta.hw.isa import Buffer, Compute, Engine, Fence, Instruction, Load, Opcode, Store
from cdm_qta.hw.regs import COUNTERS

__all__ = [
    "DeadlockError",
    "Prediction",
    "counts_of",
    "dma_cycles",
    "period_counters",
    "predict",
    "predict_encoded",
]

#: "Never" for a lower bound that does not apply.
_NEVER = -(10**18)
#: Cycle the fetch unit's first AR is valid (START, then the reader's check register: CMD_TO_ADDR).
_FETCH_FIRST_AR = 2
#: Rows of each compute/store row streamer's output FIFO (hw/streamer.py's default depth).
_STREAMER_DEPTH = 4
#: Job FIFO depths of the compute engine (hw/compute.py): a, b streamers and the writer.
_A_JOBS, _B_JOBS, _W_JOBS = 4, 4, 8
#: AXI4 limits the DMA splits bursts at.
_PAGE_BYTES, _MAX_BEATS = 4096, 256


class DeadlockError(RuntimeError):
    """No engine can make progress: some pop waits for a push that can never happen."""


def dma_cycles(cfg: AcceleratorConfig, rows: int, row_bytes: int) -> int:
    """Bus-limited cycles of one LOAD/STORE alone: one W-byte beat per cycle per row.

    A lower bound the planners can use without simulating; :func:`predict` gives the real time.
    """
    return rows * -(-max(row_bytes, 0) // cfg.dram_bus_bytes)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Result of :func:`predict`. Cycle numbers count from 0; ``cycles`` is the total.

    ``counters`` has every name of :data:`cdm_qta.hw.regs.COUNTERS`, predicted as the hardware
    would count it; ``None`` where this model does not predict it (time an engine waits for the
    bus or the array).
    """

    counters: dict[str, int | None]
    array_n: int
    start: tuple[int, ...]  #: per instruction: cycle its engine takes it (FENCE: dispatch)
    done: tuple[int, ...]  #: per instruction: cycle it retires (its tokens are pushed)
    #: per instruction: cycle it enters its engine's queue (its engine is busy from then on)
    queued: tuple[int, ...] = ()
    #: per instruction: cycles it waited for a token (its share of ``<engine>_wait_token``)
    waited: tuple[int, ...] = ()

    @property
    def cycles(self) -> int:
        return int(self.counters["cycles"] or 0)

    @property
    def macs(self) -> int:
        return int(self.counters["macs"] or 0)

    @property
    def busy(self) -> dict[str, int]:
        """Cycles each engine is busy, by engine label."""
        return {e.label: int(self.counters[f"{e.label}_busy"] or 0) for e in Engine}

    @property
    def wait_token(self) -> dict[str, int]:
        """Cycles each engine's next instruction waits for a dependency token."""
        return {e.label: int(self.counters[f"{e.label}_wait_token"] or 0) for e in Engine}

    @property
    def utilization(self) -> float:
        """MACs / (cycles * N^2): the fraction of the array's peak this program reaches."""
        return self.macs / (self.cycles * self.array_n**2) if self.cycles else 0.0

    @property
    def compute_busy(self) -> float:
        """Fraction of all cycles in which the compute engine is busy."""
        return self.busy["compute"] / self.cycles if self.cycles else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "cycles": self.cycles,
            "macs": self.macs,
            "utilization": round(self.utilization, 4),
            "compute_busy": round(self.compute_busy, 4),
            "busy": self.busy,
            "wait_token": self.wait_token,
        }


# -- a bus channel: which cycles are taken -------------------------------------------------------


def _bursts(addr: int, nbytes: int, w: int) -> list[int]:
    """Beats of each AXI burst of one DMA row (split at 4 KB and at 256 beats)."""
    out: list[int] = []
    left = nbytes
    while left > 0:
        beats_row = -(-left // w)
        to_page = (_PAGE_BYTES - addr % _PAGE_BYTES) // w
        cap = min(to_page, _MAX_BEATS)
        beats = min(beats_row, cap)
        out.append(beats)
        if beats == beats_row:
            break
        addr += beats * w
        left -= beats * w
    return out


_QUEUE_INDEX = {q: k for k, q in enumerate(isa.TOKEN_QUEUES)}


def _one_burst_per_row(x: Store, w: int) -> bool:
    """Whether every row of ``x`` (as the STORE loop addresses them) is one burst: at most
    256 beats, and the rows sit in 4 KB pages alike (stride a multiple of 4 KB) or tile
    them (stride dividing 4 KB, rows aligned to it and no longer)."""
    if -(-x.row_bytes // w) > _MAX_BEATS or x.row_bytes > _PAGE_BYTES:
        return False
    first = x.dram_addr  # row 0's address (row r at dram_addr + r*stride)
    if x.stride % _PAGE_BYTES == 0:
        return first % _PAGE_BYTES + x.row_bytes <= _PAGE_BYTES
    return (
        0 < x.stride <= _PAGE_BYTES
        and _PAGE_BYTES % x.stride == 0
        and x.row_bytes <= x.stride
        and first % x.stride == 0
    )


#: The closed-form jump over multi-beat STORE rows (tests switch it off to compare).
_STEADY_JUMP = True


@functools.lru_cache(maxsize=1 << 16)
def _info(
    word: int,
) -> tuple[Instruction | None, Engine | None, tuple[int, ...], tuple[int, ...], bool]:
    """(instruction, engine, popped and pushed token queues as indices into
    :data:`~cdm_qta.hw.isa.TOKEN_QUEUES`, skip) of one word, decoded once per word."""
    x = _decode(word)
    if x is None:
        return None, None, (), (), False
    pops = tuple(_QUEUE_INDEX[q] for q in isa.pops(x))
    pushes = tuple(_QUEUE_INDEX[q] for q in isa.pushes(x))
    return x, isa.engine_of(x), pops, pushes, bool(x.illegal_flags)


def _info_of(
    x: Instruction,
) -> tuple[Instruction | None, Engine | None, tuple[int, ...], tuple[int, ...], bool]:
    """:func:`_info` of an instruction object (what its word decodes to)."""
    return (x, *_tokens_of(type(x), x.pop_prev, x.pop_next, x.push_prev, x.push_next))


@functools.lru_cache(maxsize=256)
def _tokens_of(
    cls: type[Instruction], *flags: bool
) -> tuple[Engine | None, tuple[int, ...], tuple[int, ...], bool]:
    """(engine, popped and pushed queue indices, skip) of an instruction class and its token
    flags (``pop_prev``, ``pop_next``, ``push_prev``, ``push_next``): all they depend on."""
    x = cls(**dict(zip(("pop_prev", "pop_next", "push_prev", "push_next"), flags, strict=True)))
    return _info(x.encode())[1:]


def _decode(word: int) -> Instruction | None:
    """The instruction the dispatcher sees in ``word``; ``None`` if it drops it (bad opcode).

    The hardware reads only the opcode and the fields; non-zero unused bits do not stop it.
    """
    try:
        return isa.decode(word)
    except isa.IllegalInstruction:
        pass
    try:
        opcode = Opcode(word & 0b111)
    except ValueError:
        return None
    used = sum(bits for _, bits in isa.field_offsets(opcode).values())
    try:
        return isa.decode(word & ((1 << used) - 1))
    except isa.IllegalInstruction:
        return None


class _Stream:
    """A row streamer (hw/streamer.py): last read issued, last four accepts by its consumer."""

    __slots__ = ("acc", "job", "last_issue")

    def __init__(self) -> None:
        self.last_issue = _NEVER  # cycle of the latest read issued
        self.job = _NEVER  # cycle the current job was accepted
        self.acc: deque[int] = deque([_NEVER] * _STREAMER_DEPTH, maxlen=_STREAMER_DEPTH)

    def accept_job(self, ready: int) -> int:
        """Cycle a job whose FIFO entry is valid from ``ready`` is accepted."""
        self.job = max(ready, self.last_issue)
        return self.job

    def issue(self, first: bool) -> int:
        """Issue the next row read; return the cycle the row is available to its consumer."""
        t = max(self.last_issue + 1, self.acc[0] + 1)
        if first:
            t = max(t, self.job + 1)
        self.last_issue = t
        return t + 2


class _Transfer:
    """A LOAD taken by the engine whose bursts the read channel has not all issued."""

    __slots__ = ("bursts", "first", "g", "i", "left", "reject", "row", "single", "w", "x")

    def __init__(self, i: int, x: Load, g: int, reject: bool, w: int) -> None:
        self.i, self.x, self.g, self.reject, self.w = i, x, g, reject, w
        self.first = _NEVER  # cycle its first burst is valid (set when it reaches the generator)
        self.single = -(-x.row_bytes // w) == 1  # one single-beat burst per row
        self.row = 0
        self.left = x.rows  # single: bursts (rows) left
        self.bursts: list[int] = []  # otherwise: beats of the current row's remaining bursts

    @property
    def finished(self) -> bool:
        return self.left == 0

    def burst_beats(self) -> int:
        if not self.bursts:
            addr = self.x.dram_addr + self.row * self.x.stride
            self.bursts = _bursts(addr, self.x.row_bytes, self.w)
        return self.bursts[0]

    def advance(self, k: int) -> None:
        if self.single:
            self.left -= k
            return
        del self.bursts[0]
        if not self.bursts:
            self.row += 1
            self.left -= 1


# -- the simulation --------------------------------------------------------------------------------


class _Model:
    """One program on one configuration; see the module docstring for the rules."""

    def __init__(
        self,
        cfg: AcceleratorConfig,
        info: Sequence[
            tuple[Instruction | None, Engine | None, tuple[int, ...], tuple[int, ...], bool]
        ],
        timing: DramTiming,
    ) -> None:
        self.cfg = cfg
        self.timing = timing
        self.n = cfg.n
        self.w = cfg.dram_bus_bytes
        # derived sizes of cfg (properties: computed on every access), read per instruction
        self.input_rows, self.weight_rows = cfg.input_rows, cfg.weight_rows
        self.output_rows = cfg.output_rows
        self.input_row_bytes, self.output_row_bytes = cfg.input_row_bytes, cfg.output_row_bytes
        self.insns = [t[0] for t in info]
        self.engine_of = [t[1] for t in info]
        self.pops = [t[2] for t in info]
        self.pushes = [t[3] for t in info]
        self.skips = [t[4] for t in info]
        count = len(self.insns)
        self.count = count
        # the shared read channel (fetch and LOAD DMA), served strictly in AR order
        self.ar_last = _NEVER  # last AR handshake
        self.r_last = _NEVER  # last R beat
        self.g_rend: deque[int] = deque(maxlen=timing.max_outstanding)  # DRAM's AR queue
        self.served_fetch = False  # round-robin: the last AR went to the fetch
        # per instruction
        self.disp = [0] * count  # dispatch cycle (None until known)
        self.start = [0] * count
        self.done = [0] * count
        self.waited = [0] * count
        self.known_d = 0  # words dispatched so far
        # fetch
        self.per_row = fetch_row_bytes(self.w) // INSN_BYTES
        self.rows = -(-count // self.per_row)
        self.depth = fetch_buffer_rows(self.w)
        self.f_beats = self._occupancy(fetch_row_bytes(self.w) // self.w)
        self.f_ar: list[int] = []
        self.f_valid: list[int] = []
        self.emit: list[int] = []  # word emission cycle (into the instruction queue)
        self.iq_inner = cfg.insn_queue_depth - 1
        # engines
        self.queues: dict[Engine, list[int]] = {e: [] for e in Engine}
        self.slot: list[int] = [0] * count  # index within its engine's list
        for i, eng in enumerate(self.engine_of):
            if eng is not None:
                self.slot[i] = len(self.queues[eng])
                self.queues[eng].append(i)
        self.head = dict.fromkeys(Engine, 0)
        self.takes: dict[Engine, list[int]] = {e: [] for e in Engine}
        self.retires: dict[Engine, list[int]] = {e: [] for e in Engine}
        self.pushed: list[list[int]] = [[] for _ in isa.TOKEN_QUEUES]  # push cycles per queue
        self.popped = [0] * len(isa.TOKEN_QUEUES)
        self.last_retire = _NEVER
        self.wait_token = dict.fromkeys(Engine, 0)
        self.macs = self.rd_bytes = self.wr_bytes = 0
        self.retired = 0
        # LOAD engine and DMA reader
        qd = cfg.dma_outstanding
        self.l_rowlast: list[int | None] = []  # per good command: its last row landed
        self.l_load: list[int | None] = []  # per good command: loaded into the generator
        self.l_take: list[int] = []  # per good command: taken by the engine
        self.l_acc: list[int | None] = []  # per good command: accepted by the check register
        self.l_g_end = _NEVER  # generator's previous command: last burst issued
        self.l_rend: deque[int] = deque(maxlen=qd)  # last-beat cycles of recent bursts
        self.l_last_ar = _NEVER
        self.l_pending: deque[_Transfer] = deque()  # commands whose bursts are not all out
        # STORE engine and DMA writer
        self.s_started: deque[int] = deque(maxlen=cfg.transfers_in_flight)  # retire cycles
        self.s_cmd_acc = _NEVER
        self.s_job_acc = _NEVER
        self.s_c_free = _NEVER
        self.s_g_end = _NEVER
        self.s_stream = _Stream()
        self.s_last_aw = _NEVER
        self.s_last_load = _NEVER  # last W beat loaded into the W register
        self.s_last_b = _NEVER
        self.s_bq: deque[int] = deque(maxlen=qd)  # B cycles of recent bursts (writer's bq)
        self.s_wq: deque[int] = deque(maxlen=qd)  # last-beat load cycles (writer's wq)
        self.s_awq: deque[int] = deque(maxlen=timing.max_outstanding)  # last W (DRAM aw_q)
        # COMPUTE engine
        self.a = _Stream()
        self.b = _Stream()
        self.c_ajobs: deque[int] = deque(maxlen=_A_JOBS)  # job accept cycles
        self.c_bjobs: deque[int] = deque(maxlen=_B_JOBS)
        self.c_wjobs: deque[int] = deque(maxlen=_W_JOBS)  # last-output cycles
        self.a_free = self.b_free = 0
        self.bank_free = [_NEVER, _NEVER]
        self.ws_count = 0
        self.last_ws_a = _NEVER
        self.last_os_last = _NEVER
        self.c_last_retire = _NEVER

    def _occupancy(self, beats: int) -> int:
        """Bus cycles a burst of ``beats`` beats occupies at the DRAM's sustained rate."""
        t = self.timing
        return beats if t.beat_num == t.beat_den else -(-beats * t.beat_den // t.beat_num)

    # -- fetch, instruction queue, dispatch ------------------------------------------------------

    def _fetch_time(self) -> tuple[int, bool]:
        """(cycle the next fetch AR can go, whether that is known or only a lower bound)."""
        r = len(self.f_ar)
        if r >= self.rows:
            return -_NEVER, True
        t = max(_FETCH_FIRST_AR + r, self.f_ar[-1] + 1 if self.f_ar else _NEVER)
        if r >= self.depth:
            last_word = (r - self.depth + 1) * self.per_row - 1  # its row must have left
            if last_word >= len(self.emit):
                return max(t, self._emit_bound(last_word) + 1), False
            t = max(t, self.emit[last_word] + 1)
        return t, True

    def _emit_bound(self, w: int) -> int:
        """A lower bound of word ``w``'s emission (one word per cycle at most)."""
        if w < len(self.emit):
            return self.emit[w]
        if self.emit:
            return self.emit[-1] + w - len(self.emit) + 1
        return w

    def _fetch_row(self, t: int) -> None:
        """Row ``len(f_ar)``'s AR goes out in cycle ``t``."""
        rs = max(t + self.timing.read_latency + 2, self.r_last + 1)
        self._ar(t, rs + self.f_beats - 1)
        self.f_ar.append(t)
        self.f_valid.append(self.r_last + 2)
        self.served_fetch = True

    def _ar(self, t: int, r_end: int) -> None:
        self.ar_last = t
        self.r_last = r_end
        self.g_rend.append(r_end)

    def _emit_next(self) -> bool:
        """Move the next fetched word into the instruction queue, if its inputs are known."""
        w = len(self.emit)
        if w >= self.count:
            return False
        room = w - self.iq_inner
        if room >= 1 and room - 1 >= self.known_d:
            return False  # needs the inner read of word w - (depth-1): after the dispatch before
        row = w // self.per_row
        if row >= len(self.f_ar):
            return False  # its AR has not been arbitrated yet
        t = self.f_valid[row]
        if w:
            t = max(t, self.emit[-1] + 1)
        if room >= 0:
            # the word `room` moved to the output register, freeing an inner slot
            inner = self.emit[room] + 1
            if room:
                inner = max(inner, self.disp[room - 1])
            t = max(t, inner + 1)
        self.emit.append(t)
        return True

    def _dispatch_next(self) -> bool:
        i = self.known_d
        if i >= self.count or i >= len(self.emit):
            return False
        x = self.insns[i]
        ir = self.emit[i] + 1
        if i:
            ir = max(ir, self.disp[i - 1])
        t = ir + 1  # the head of the queue
        if isinstance(x, Fence):
            # every engine idle: everything dispatched before has retired
            for e in Engine:
                if self.head[e] < len(self.queues[e]) and self.queues[e][self.head[e]] < i:
                    return False
                if len(self.retires[e]) < self.head[e]:
                    return False  # a LOAD still has bursts to issue
            t = max(t, self.last_retire + 1)
        elif x is not None:
            eng = self.engine_of[i]
            assert eng is not None
            j = self.slot[i] - self.cfg.engine_queue_depth
            if j >= 0:
                if j >= len(self.takes[eng]):
                    return False
                t = max(t, self.takes[eng][j] + 1)
        self.disp[i] = t
        self.known_d += 1
        if x is None or isinstance(x, Fence):
            self.start[i] = self.done[i] = t
            self.retired += 1
            self.last_retire = max(self.last_retire, t)
        return True

    # -- engines -----------------------------------------------------------------------------

    def _intake(self, eng: Engine) -> tuple[int, Instruction, int, int] | None:
        """(index, instruction, head cycle, token cycle) of the engine's next instruction, or
        ``None`` while its dispatch or a token it pops is unknown. Nothing is taken yet."""
        h = self.head[eng]
        q = self.queues[eng]
        if h >= len(q):
            return None
        i = q[h]
        if i >= self.known_d:
            return None
        tok = _NEVER
        for tq in self.pops[i]:
            k = self.popped[tq]
            pushed = self.pushed[tq]
            if k >= len(pushed):
                return None
            if pushed[k] >= tok:
                tok = pushed[k] + 1
        head = self.disp[i] + 1
        takes = self.takes[eng]
        if takes and takes[-1] >= head:
            head = takes[-1] + 1
        x = self.insns[i]
        assert x is not None
        return i, x, head, tok

    def _take(self, eng: Engine, i: int, x: Instruction, head: int, tok: int, take: int) -> None:
        for tq in self.pops[i]:
            self.popped[tq] += 1
        waited = max(0, min(take, tok) - head)
        self.wait_token[eng] += waited
        self.waited[i] = waited
        self.takes[eng].append(take)
        self.start[i] = take
        self.head[eng] += 1

    def _retire(self, eng: Engine, i: int, x: Instruction, retire: int) -> None:
        self.retires[eng].append(retire)
        self.done[i] = retire
        self.last_retire = max(self.last_retire, retire)
        self.retired += 1
        for tq in self.pushes[i]:
            self.pushed[tq].append(retire)

    def _finish(self, eng: Engine, i: int, x: Instruction, head: int, tok: int, take: int,
                retire: int) -> None:  # fmt: skip
        self._take(eng, i, x, head, tok, take)
        self._retire(eng, i, x, retire)

    def _older_retired(self, eng: Engine) -> int | None:
        """A transfer that moves nothing waits until the older ones have retired (``None``:
        some have not been timed yet)."""
        r = self.retires[eng]
        if len(r) < self.head[eng]:
            return None
        return r[-1] + 1 if r else _NEVER

    def _load_step(self) -> bool:
        got = self._intake(Engine.LOAD)
        if got is None:
            return False
        i, x, head, tok = got
        assert isinstance(x, Load)
        cfg = self.cfg
        limit = self.weight_rows if x.buffer == Buffer.WEIGHT else self.input_rows
        good = x.rows >= 1 and x.sram_row + x.rows <= limit and not self.skips[i]
        if not good:
            older = self._older_retired(Engine.LOAD)
            if older is None:
                return False
            take = max(head, tok, older)
            self._finish(Engine.LOAD, i, x, head, tok, take, take)
            return True
        g = len(self.l_load)
        take = max(head, tok)
        if g:
            # the command register frees when the DMA accepts the previous command
            prev_acc = self.l_acc[g - 1]
            if prev_acc is None:
                return False
            take = max(take, prev_acc)
        slots = cfg.transfers_in_flight
        if g >= slots:
            landed = self.l_rowlast[g - slots]
            if landed is None:
                return False
            take = max(take, landed + 1)
        self._take(Engine.LOAD, i, x, head, tok, take)
        self.l_take.append(take)
        self.l_rowlast.append(None)
        self.l_load.append(None)
        # accepted once the check register is free: its command has gone to the generator
        prev_load = self.l_load[g - 1] if g else _NEVER
        self.l_acc.append(None if prev_load is None else max(take + 1, prev_load))
        tr = _Transfer(i, x, g, self._rejected(x, self.input_row_bytes), self.w)
        self.l_pending.append(tr)
        if len(self.l_pending) == 1:
            self._start_transfer(tr)
        return True

    def _start_transfer(self, tr: _Transfer) -> None:
        """The command reaches the burst generator (the previous one's last burst is out)."""
        g = tr.g
        acc = self.l_acc[g]
        assert acc is not None  # the previous command is loaded: it set this one's
        load = max(acc + 1, self.l_g_end)
        self.l_load[g] = load
        tr.first = load + 1
        if g + 1 < len(self.l_acc) and self.l_acc[g + 1] is None:
            self.l_acc[g + 1] = max(self.l_take[g + 1] + 1, load)

    def _load_time(self) -> tuple[int, bool]:
        """(cycle the next LOAD burst's AR can go, known or only a lower bound)."""
        if self.l_pending:
            tr = self.l_pending[0]
            t = max(tr.first, self.l_last_ar + 1)
            if len(self.l_rend) == self.l_rend.maxlen:
                t = max(t, self.l_rend[0] + 1)
            return t, True
        h = self.head[Engine.LOAD]
        q = self.queues[Engine.LOAD]
        if h >= len(q):
            return -_NEVER, True
        i = q[h]
        d = self.disp[i] if i < self.known_d else self._emit_bound(i) + 2
        last_acc = self.l_acc[-1] if self.l_acc else _NEVER
        return max(d + 4, (last_acc or _NEVER) + 2), False

    def _arbitrate(self, force: bool) -> bool:
        """Hand out the next AR handshake(s) on the shared read channel, in time order.

        The arbiter (hw/axi.py) grants the master whose request is valid first, round-robin on
        a tie, and keeps a grant while the DRAM's full AR queue holds it off, so the order is
        decided by the valid times and the DRAM only delays the handshake. A side whose next
        request is not known yet has a lower bound; the other side goes only if it is surely
        earlier (or ``force``: nothing else can move, so take the known one).
        """
        tf, f_known = self._fetch_time()
        tl, l_known = self._load_time()
        base = self.ar_last + 1
        tf, tl = max(tf, base), max(tl, base)
        if tf >= -_NEVER and tl >= -_NEVER:
            return False
        if f_known and l_known:
            fetch = tf < tl or (tf == tl and not self.served_fetch)
        elif f_known:
            fetch = True
            if not (tf < tl or force):
                return False
        elif l_known:
            fetch = False
            if not (tl < tf or force):
                return False
        else:
            return False
        floor = self.g_rend[0] - 1 if len(self.g_rend) == self.g_rend.maxlen else _NEVER
        if fetch:
            self._fetch_row(max(tf, floor))
        else:
            # Forced (nothing else can move): the rest of the transfer. Only its completion
            # can unblock the engines, so no fetch request can come before its last burst.
            self._load_bursts(tl, floor, tf if f_known or not force else -_NEVER)
        return True

    def _load_bursts(self, t: int, floor: int, limit: int) -> None:
        """Issue the head transfer's bursts, valid from ``t``, handshakes not before
        ``floor``, while their requests stay before ``limit`` (the next fetch request; a tie
        goes to the fetch once a burst of ours went)."""
        tr = self.l_pending[0]
        lat = self.timing.read_latency + 2
        qd, gq = self.l_rend.maxlen, self.g_rend.maxlen
        assert qd is not None and gq is not None
        if tr.reject:
            self._complete(tr, max(tr.first + 2, self.r_last + 1))
            return
        while True:
            a = max(t, floor)
            r0 = max(a + lat, self.r_last + 1)
            if tr.single and self.timing.beat_num == self.timing.beat_den:
                # single-beat bursts: AR a + j, beat r0 + j; the outstanding limits hold for
                # all of them iff they hold for the first (beats are >= 1 cycle apart)
                k = min(tr.left, limit - a)
                if a == t and k > 1 and r0 - a <= qd - 1 and r0 - a <= gq + 1:
                    keep = min(k, max(qd, gq))
                    self.ar_last = a + k - 1
                    self.r_last = r0 + k - 1
                    ends = range(self.r_last - keep + 1, self.r_last + 1)
                    self.l_rend.extend(ends)
                    self.g_rend.extend(ends)
                    self.l_last_ar = self.ar_last
                    tr.advance(k)
                else:
                    self._one_burst(tr, a, 1, r0)
            else:
                self._one_burst(tr, a, self._occupancy(tr.burst_beats()), r0)
            self.served_fetch = False
            if tr.finished:
                self._complete(tr, self.r_last)
                return
            t, _ = self._load_time()
            t = max(t, self.ar_last + 1)
            if t >= limit:
                return
            floor = self.g_rend[0] - 1 if len(self.g_rend) == gq else _NEVER

    def _one_burst(self, tr: _Transfer, t: int, occ: int, rs: int) -> None:
        self._ar(t, rs + occ - 1)
        self.l_rend.append(self.r_last)
        self.l_last_ar = t
        tr.advance(1)

    def _complete(self, tr: _Transfer, last_beat: int) -> None:
        """The head transfer's last burst is out: time its retire, start the next one."""
        self.l_pending.popleft()
        x = tr.x
        if tr.reject:
            self.l_g_end = tr.first - 1
            older = self.retires[Engine.LOAD]
            retire = max(last_beat + 2, older[-1] + 1 if older else _NEVER)
        else:
            self.l_g_end = self.l_last_ar
            retire = last_beat + 2
            self.rd_bytes += counts_of(x)[1]
        self.l_rowlast[tr.g] = retire - 1
        self._retire(Engine.LOAD, tr.i, x, retire)
        if self.l_pending:
            self._start_transfer(self.l_pending[0])

    def _rejected(self, x: Load | Store, row_width: int) -> bool:
        """The DMA's own checks (alignment, window), made before any bus access."""
        cfg, w = self.cfg, self.w
        if x.dram_addr % w or x.stride % w or x.row_bytes == 0 or x.row_bytes > row_width:
            return True
        end = x.dram_addr + (x.rows - 1) * x.stride + x.row_bytes
        return x.dram_addr < cfg.dram_base or end > cfg.dram_base + cfg.dram_size

    def _store_step(self) -> bool:
        got = self._intake(Engine.STORE)
        if got is None:
            return False
        i, x, head, tok = got
        assert isinstance(x, Store)
        cfg = self.cfg
        good = x.rows >= 1 and x.sram_row + x.rows <= self.output_rows and not self.skips[i]
        older = self._older_retired(Engine.STORE) or _NEVER  # STOREs retire in order here
        if not good:
            take = max(head, tok, older)
            self._finish(Engine.STORE, i, x, head, tok, take, take)
            return True
        take = max(head, tok, self.s_cmd_acc, self.s_job_acc)
        if len(self.s_started) == self.s_started.maxlen:
            take = max(take, self.s_started[0] + 1)
        acc = max(take + 1, self.s_c_free)
        load = max(acc + 1, self.s_g_end)
        self.s_cmd_acc = acc
        self.s_c_free = load
        st = self.s_stream
        self.s_job_acc = st.accept_job(take + 1)
        rejected = self._rejected(x, self.output_row_bytes)
        w = self.w
        qd = cfg.dma_outstanding
        wl = self.timing.write_latency
        aw_first = load + 1
        full_rate = self.timing.beat_num == self.timing.beat_den
        single = -(-x.row_bytes // w) == 1 and full_rate
        # rows of several beats, each one burst however far the rows go (no 4 KB split)
        multi = (
            not single and full_rate and not rejected and _one_burst_per_row(x, w)
            and _STEADY_JUMP
        )  # fmt: skip
        row = 0
        while row < x.rows:
            avail = st.issue(row == 0)
            addr = x.dram_addr + row * x.stride  # row `row`, 0-based, as the DMA addresses it
            row += 1
            if rejected:
                # the writer drops the rows, one per cycle
                t = max(avail, self.s_last_load + 1)
                self.s_last_load = t
                st.acc.append(t)
                continue
            first_beat = avail
            for beats in _bursts(addr, x.row_bytes, w):
                t = max(aw_first, self.s_last_aw + 1)
                if len(self.s_bq) == qd:
                    t = max(t, self.s_bq[0] + 1, self.s_wq[0] + 1)
                if len(self.s_awq) == self.s_awq.maxlen:
                    t = max(t, self.s_awq[0] + 1)
                self.s_last_aw = t
                occ = self._occupancy(beats)
                l0 = max(first_beat, self.s_last_load + 1, t + 1)
                last_load = l0 + occ - 1
                self.s_last_load = last_load
                self.s_wq.append(last_load)
                self.s_awq.append(last_load + 1)
                b = max(last_load + 1 + wl + 1, self.s_last_b + 1)
                self.s_last_b = b
                self.s_bq.append(b)
            st.acc.append(self.s_last_load)
            if single and row >= _STREAMER_DEPTH and row < x.rows:
                if self._store_steady(x.rows - row):
                    row = x.rows
            elif multi and row >= _STREAMER_DEPTH and row < x.rows:
                if self._store_steady_rows(x.rows - row, -(-x.row_bytes // w)):
                    row = x.rows
        self.s_g_end = self.s_last_aw if not rejected else load
        if rejected:
            retire = max(load + 3, self.s_last_load + 2, older)
        else:
            retire = self.s_last_b + 1
            self.wr_bytes += counts_of(x)[2]
        self.s_started.append(retire)
        self._finish(Engine.STORE, i, x, head, tok, take, retire)
        return True

    def _store_steady(self, left: int) -> bool:
        """Jump over ``left`` more single-beat rows once the STORE streams one row per cycle
        (its last four rows were taken in consecutive cycles) and neither the AW channel nor
        the outstanding-burst limits can hold a row back; otherwise do nothing.

        In that state row ``y`` is taken at ``l + y``, its B response at ``b + y``; the AW of
        row ``y`` is the maximum of the chain ``AW + y`` and each outstanding-limit floor
        carried forward, which is a closed form except for the ``qd`` rows whose floors lie in
        the bursts before the jump (looped over). Returns whether it jumped.
        """
        st = self.s_stream
        acc = st.acc
        qd = self.cfg.dma_outstanding
        mq = self.timing.max_outstanding
        ll, bb, aw = self.s_last_load, self.s_last_b, self.s_last_aw
        if acc[3] - acc[0] != 3 or aw + 1 > ll or bb - ll > qd - 2 or mq < 3:
            return False
        bq, wq, awq = self.s_bq, self.s_wq, self.s_awq
        aw_last = aw + left
        for j in range(1, min(left, max(qd, mq)) + 1):
            f = _NEVER
            k = j - 1 - (qd - len(bq))
            if j <= qd and 0 <= k < len(bq):
                f = max(bq[k], wq[k]) + 1
            k = j - 1 - (mq - len(awq))
            if j <= mq and 0 <= k < len(awq):
                f = max(f, awq[k] + 1)
            aw_last = max(aw_last, f + left - j)
        if left > qd:
            aw_last = max(aw_last, bb + left - qd + 1)
        if left > mq:
            aw_last = max(aw_last, ll + left - mq + 2)
        ll += left
        bb += left
        lag = min(acc[3] - st.last_issue, 3)
        acc.extend(range(ll - 3, ll + 1))
        st.last_issue = ll - lag
        keep = min(left, max(qd, mq))
        bq.extend(range(bb - keep + 1, bb + 1))
        wq.extend(range(ll - keep + 1, ll + 1))
        awq.extend(range(ll - keep + 2, ll + 2))
        self.s_last_load, self.s_last_b, self.s_last_aw = ll, bb, aw_last
        return True

    def _store_steady_rows(self, left: int, d: int) -> bool:
        """:meth:`_store_steady` for rows of ``d`` > 1 beats, one burst each: once the W
        channel is the only limit (the last four rows ``d`` cycles apart, the B responses at
        the write latency, AW ahead of W, no outstanding-burst floor can reach W), row ``y``
        later loads its last beat at ``ll + d*y`` and gets its B at ``bb + d*y``; AW is the
        chain ``aw + y`` against each floor carried forward (the floors inside the current
        queues looped over, the later ones in closed form: they only grow, by ``d - 1 >= 0``
        per row). Returns whether it jumped; exactly the row-by-row loop's result."""
        st = self.s_stream
        acc = st.acc
        qd = self.cfg.dma_outstanding
        mq = self.timing.max_outstanding
        wl = self.timing.write_latency
        ll, bb, aw = self.s_last_load, self.s_last_b, self.s_last_aw
        bq, wq, awq = self.s_bq, self.s_wq, self.s_awq
        if (
            acc[3] != ll
            or any(acc[j + 1] - acc[j] != d for j in range(3))
            or st.last_issue != ll - 4 * d + 1
            or bb != ll + wl + 2
            or aw > ll - d
            or wl + 3 > d * (qd - 1)
            or 2 > d * (mq - 1)
            or len(bq) != qd
            or len(awq) != mq
        ):
            return False
        # floors from the bursts still queued: row y's AW goes at most at its W start - 1
        aw_last = aw + left
        for j in range(1, min(left, max(qd, mq)) + 1):
            f = _NEVER
            if j <= qd:
                f = max(bq[j - 1], wq[j - 1]) + 1
            if j <= mq:
                f = max(f, awq[j - 1] + 1)
            if f > ll + d * (j - 1):
                return False  # an outstanding limit would hold this row's AW past its W
            aw_last = max(aw_last, f + left - j)
        if left > qd:
            aw_last = max(aw_last, ll + d * (left - qd) + wl + 3)
        if left > mq:
            aw_last = max(aw_last, ll + d * (left - mq) + 2)
        ll += d * left
        bb += d * left
        keep = min(left, max(qd, mq))
        acc.extend(range(ll - 3 * d, ll + 1, d))
        st.last_issue = ll - 4 * d + 1
        bq.extend(range(bb - d * (keep - 1), bb + 1, d))
        wq.extend(range(ll - d * (keep - 1), ll + 1, d))
        awq.extend(range(ll - d * (keep - 1) + 1, ll + 2, d))
        self.s_last_load, self.s_last_b, self.s_last_aw = ll, bb, aw_last
        return True

    def _compute_step(self) -> bool:
        got = self._intake(Engine.COMPUTE)
        if got is None:
            return False
        i, x, head, tok = got
        assert isinstance(x, Compute)
        n = self.n
        ws = x.dataflow == Dataflow.WS
        fits = (
            1 <= x.c <= n
            and x.b_row + x.k <= self.weight_rows
            and x.out_row + x.m <= self.output_rows
            and x.k >= 1
            and x.m >= 1
        )
        if ws:
            ok = fits and x.k <= n and x.a_row + x.m <= self.input_rows
        else:
            ok = fits and x.m <= n and x.a_row + x.k <= self.input_rows
        run = ok and not self.skips[i]
        take = head
        take = max(take, tok)
        if len(self.c_wjobs) == _W_JOBS:
            take = max(take, self.c_wjobs[0] + 1)
        if run:
            if len(self.c_ajobs) == _A_JOBS:
                take = max(take, self.c_ajobs[0] + 1)
            if len(self.c_bjobs) == _B_JOBS:
                take = max(take, self.c_bjobs[0] + 1)
        if not run:
            retire = max(take + 1, self.c_last_retire + 1)
            self.c_wjobs.append(retire)
            self.c_last_retire = retire
            self._finish(Engine.COMPUTE, i, x, head, tok, take, retire)
            return True
        self.c_ajobs.append(self.a.accept_job(take + 1))
        self.c_bjobs.append(self.b.accept_job(take + 1))
        last = self._ws_tile(x.k, x.m) if ws else self._os_tile(x.k)
        out = last + 2 * n + 1
        retire = max(out + 1, self.c_last_retire + 1)
        self.c_last_retire = retire
        self.c_wjobs.append(out)
        self.macs += counts_of(x)[0]
        self._finish(Engine.COMPUTE, i, x, head, tok, take, retire)
        return True

    def _ws_tile(self, k: int, m: int) -> int:
        """Accept the K weight rows and M input rows of a WS tile; return the last accept."""
        bank = self.ws_count % 2
        self.ws_count += 1
        lastb = self._run_rows(self.b, k, self.bank_free[bank])
        last = self._run_rows(self.a, m, lastb + 1)
        self.bank_free[bank] = last + 1
        self.last_ws_a = last
        return last

    def _run_rows(self, st: _Stream, count: int, floor: int) -> int:
        """The rows of one WS job on ``st`` (weights on ``b``, inputs on ``a``), the first not
        before ``floor``: accepts in order, the steady state (one per cycle) jumped over.
        Returns the last accept."""
        is_a = st is self.a
        free = self.a_free if is_a else self.b_free  # the stream's next free cycle
        t = _NEVER
        row = 0
        acc = st.acc
        while row < count:
            avail = st.issue(row == 0)
            t = max(avail, free)
            if row == 0:
                t = max(t, floor)
            acc.append(t)
            free = t + 1
            row += 1
            if row < count and acc[3] - acc[0] == 3 and row >= _STREAMER_DEPTH:
                # steady: one row per cycle to the end of the job
                left = count - row
                lag = min(acc[3] - st.last_issue, 3)
                t = acc[3] + left
                acc.extend(range(t - 3, t + 1))
                st.last_issue = t - lag
                free = t + 1
                break
        if is_a:
            self.a_free = free
        else:
            self.b_free = free
        return t

    def _os_tile(self, k: int) -> int:
        """Accept the K steps of an OS tile (both streams together); return the last accept."""
        a, b = self.a, self.b
        hazard = self.last_ws_a + self.n
        t = _NEVER
        step = 0
        while step < k:
            first = step == 0
            avail = max(a.issue(first), b.issue(first))
            t = max(avail, self.a_free, self.b_free, hazard)
            if step == k - 1:
                t = max(t, self.last_os_last + self.n)
            a.acc.append(t)
            b.acc.append(t)
            self.a_free = self.b_free = t + 1
            step += 1
            if step < k - 1 and step >= _STREAMER_DEPTH and a.acc[3] - a.acc[0] == 3:
                # steady up to the tile's last step, which has its own hazard
                left = k - 1 - step
                t = a.acc[3] + left
                for st in (a, b):
                    lag = min(st.acc[3] - st.last_issue, 3)
                    st.acc.extend(range(t - 3, t + 1))
                    st.last_issue = t - lag
                self.a_free = self.b_free = t + 1
                step = k - 1
        self.last_os_last = t
        return t

    # -- the whole run ---------------------------------------------------------------------------

    def run(self) -> Prediction:
        arbitrate, emit, dispatch = self._arbitrate, self._emit_next, self._dispatch_next
        load, compute, store = self._load_step, self._compute_step, self._store_step
        count = self.count
        while True:
            progressed = False
            while arbitrate(False):
                progressed = True
            while emit() or dispatch():
                progressed = True
            while load():
                progressed = True
            while compute():
                progressed = True
            while store():
                progressed = True
            # FENCEs and dropped words retire at dispatch, the rest in their engines
            if self.retired >= count and self.known_d >= count:
                break
            if not progressed and not self._arbitrate(True):
                waiting = {
                    e.label: self.queues[e][self.head[e]]
                    for e in Engine
                    if self.head[e] < len(self.queues[e])
                }
                raise DeadlockError(
                    f"no engine can proceed; engine -> blocked instruction index: {waiting}, "
                    f"dispatcher at {self.known_d}"
                )
        return self._prediction()

    def _prediction(self) -> Prediction:
        end = max(self.last_retire, self.disp[-1] if self.count else 0)
        if self.count:
            finished = max(self.f_valid[-1], self.emit[-1] + 1)
            cycles = max(end + 2, finished + 2)
        else:
            cycles = 1
        counters: dict[str, int | None] = dict.fromkeys(COUNTERS)
        counters.update(
            cycles=cycles,
            macs=self.macs,
            insns_retired=self.retired,
            dma_read_bytes=self.rd_bytes,
            dma_write_bytes=self.wr_bytes,
        )
        for e in Engine:
            counters[f"{e.label}_busy"] = self._busy(e)
            counters[f"{e.label}_wait_token"] = self.wait_token[e]
        return Prediction(
            counters=counters,
            array_n=self.n,
            start=tuple(self.start),
            done=tuple(self.done),
            queued=tuple(d + 1 for d in self.disp),
            waited=tuple(self.waited),
        )

    def _busy(self, eng: Engine) -> int:
        """Cycles from each instruction's arrival in its engine queue to its retire, merged."""
        q = self.queues[eng]
        return _busy_cycles(zip((self.disp[i] + 1 for i in q), self.retires[eng], strict=True))


def _busy_cycles(spans: Iterable[tuple[int, int]], window: tuple[int, int] | None = None) -> int:
    """Cycles covered by the inclusive spans ``(queued, retire)`` of one engine, taken in
    engine order (``queued`` never decreases), optionally only those in ``window`` = ``(a, b]``:
    the ``<engine>_busy`` counter's rule."""
    a, b = window if window is not None else (_NEVER, -_NEVER)
    total = 0
    lo, hi = 0, -1  # the current merged interval [lo, hi] (empty)
    for s, r in spans:
        if s > hi + 1:
            total += max(0, min(hi, b) - max(lo, a + 1) + 1)
            lo, hi = s, r
        else:
            hi = max(hi, r)
    return total + max(0, min(hi, b) - max(lo, a + 1) + 1)


def counts_of(x: Instruction) -> tuple[int, int, int]:
    """(MACs, DMA read bytes, DMA write bytes) one instruction adds to the counters when it
    runs (a legal one: the DMA moves nothing for a rejected transfer)."""
    if isinstance(x, Compute):
        return x.m * x.k * x.c, 0, 0
    if isinstance(x, Load):
        return 0, x.rows * x.row_bytes, 0
    if isinstance(x, Store):
        return 0, 0, x.rows * x.row_bytes
    return 0, 0, 0


def period_counters(
    pred: Prediction,
    program: Sequence[Instruction],
    members: Iterable[int],
    window: tuple[int, int],
) -> dict[str, int | None]:
    """What one period of a steady program adds to every counter: the sums over the
    instructions ``members`` (MACs, bytes, retires, token waits) and each engine's busy cycles
    inside ``window`` = ``(a, b]`` (``cycles`` = ``b - a``). Extending a program by periods
    like this needs one prediction of it, not two of different lengths
    (:mod:`cdm_qta.sw.estimate`). ``None`` where the model predicts nothing."""
    a, b = window
    out: dict[str, int | None] = dict.fromkeys(COUNTERS)
    macs = rd = wr = retired = 0
    waited = dict.fromkeys(Engine, 0)
    for i in members:
        x = program[i]
        m, r, w = counts_of(x)
        macs, rd, wr, retired = macs + m, rd + r, wr + w, retired + 1
        eng = isa.engine_of(x)
        if eng is not None:
            waited[eng] += pred.waited[i]
    out.update(cycles=b - a, macs=macs, insns_retired=retired, dma_read_bytes=rd)
    out["dma_write_bytes"] = wr
    spans: dict[Engine, list[tuple[int, int]]] = {e: [] for e in Engine}
    for i, x in enumerate(program):
        eng = isa.engine_of(x)
        if eng is not None:
            spans[eng].append((pred.queued[i], pred.done[i]))
    for e in Engine:
        out[f"{e.label}_busy"] = _busy_cycles(spans[e], window)
        out[f"{e.label}_wait_token"] = waited[e]
    return out


#: Predictions by (configuration, program words, DRAM timing), least recently used first.
_CACHE: collections.OrderedDict[tuple[AcceleratorConfig, tuple[int, ...], DramTiming], Prediction]
_CACHE = collections.OrderedDict()
_CACHE_SIZE = 1024


def _clear_cache() -> None:
    _CACHE.clear()


def _predict_words(
    cfg: AcceleratorConfig,
    words: tuple[int, ...],
    timing: DramTiming,
    insns: Sequence[Instruction] | None = None,
) -> Prediction:
    """The cached prediction of ``words``; ``insns`` (what ``words`` decode to, when the
    caller has them) saves decoding every word of a program seen for the first time."""
    key = (cfg, words, timing)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    if insns is None:
        info = [_info(w) for w in words]
    else:
        info = [_info_of(x) for x in insns]
    pred = _Model(cfg, info, timing).run()
    _CACHE[key] = pred
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return pred


def predict(
    cfg: AcceleratorConfig,
    program: Sequence[Instruction | int],
    timing: DramTiming | None = None,
) -> Prediction:
    """Cycles of ``program`` fetched from DRAM and run on ``cfg``'s accelerator.

    ``timing`` is the DRAM's (default: the simulated DRAM's default, :class:`DramTiming`).
    Raises :class:`DeadlockError` if some instruction waits for a token nobody will push.
    Token flags that are illegal for an engine are ignored (the hardware flags them as errors
    and skips the instruction), words without an opcode are dropped by the dispatcher.
    Results are cached per (configuration, words, timing).
    """
    words = tuple(w.encode() if isinstance(w, Instruction) else int(w) for w in program)
    pred = _predict_words(cfg, words, timing or DramTiming())
    return dataclasses.replace(pred, counters=dict(pred.counters))


def predict_encoded(
    cfg: AcceleratorConfig,
    words: Sequence[int],
    program: Sequence[Instruction],
    timing: DramTiming | None = None,
) -> Prediction:
    """:func:`predict` for a caller that holds both a program and its words (a compiler
    predicting the same instructions twice, in two orders): nothing encoded or decoded.
    ``words[i]`` must be ``program[i].encode()``."""
    if len(words) != len(program):
        raise ValueError(f"{len(words)} words for {len(program)} instructions")
    pred = _predict_words(cfg, tuple(words), timing or DramTiming(), program)
    return dataclasses.replace(pred, counters=dict(pred.counters))
