"""The worker pool: native threads that run the parallel regions of compiled code.

Input: a `Target` (Linux on x86_64 or aarch64: `supported`). Output: an LLVM module defining

    void diffc_pool_parallel(void (*task)(void *ctx, int64_t part), void *ctx, int64_t parts,
                             int64_t work)

which runs task(ctx, p) once for every p < parts and returns when all have run, and the
globals `diffc_pool_threads` (the thread count, the caller included) and `diffc_pool_min_work`
(regions of less `work` run inline), which the runtime writes. Compiled programs call it through
their hook (codegen.py); it calls libc (pthread_create, pthread_setname_np, pthread_detach,
pthread_sigmask, clock_gettime, sched_yield, syscall).

The protocol. Workers are created on the first region that wants them (pthread_create, all
signals blocked, named WORKER_NAME) and live as long as the process. A region is published in
one 64-bit `state` word: generation (bits 32-63), thread count T (16-31), open (15), workers
joined (0-14). Part p belongs to the block of thread t = the t-th of T equal runs of parts;
each thread takes the parts of its own block from that block's atomic counter, then takes what
is left of the others' blocks, so a late worker costs nothing and a hot one works on the same
rows every region (its cache keeps them). A worker joins by incrementing `joined` while the
region is open; the caller runs its block, closes the region (clearing `open`: no one joins any
more) and waits until every worker that joined has left, so the region's context is never read
after the caller returns. Between regions a worker spins (pause) on `state` for SPIN_NS after
its last region, then parks on its own futex word; the caller wakes only the sleepers it needs
(a `sleeping` flag, checked with sequentially consistent accesses on both sides, so a wake is
never missed). A caller that finds the pool busy (another thread's region) or a region too
small runs it inline: the parts are the same whichever thread runs them, so are the results. A
forked child has no workers and runs its regions on its calling thread alone.
"""
from __future__ import annotations

from llvmlite import ir

from .loops import I64, for_range
from .target import Target

I32 = ir.IntType(32)
PTR = ir.PointerType()
VOID = ir.VoidType()
TASK = ir.FunctionType(VOID, [PTR, I64])
TASK_PTR = TASK.as_pointer()  # a pointer that can be called (printed `ptr` all the same)
PARALLEL = ir.FunctionType(VOID, [TASK_PTR, PTR, I64, I64])

PARALLEL_SYMBOL = "diffc_pool_parallel"
THREADS_SYMBOL = "diffc_pool_threads"
MIN_WORK_SYMBOL = "diffc_pool_min_work"
SYMBOLS = (PARALLEL_SYMBOL, THREADS_SYMBOL, MIN_WORK_SYMBOL)

MAX_THREADS = 256  # threads beyond these are not used
WORKER_NAME = "diffc-worker"
SPIN_NS = 500_000  # how long a worker stays hot after a region before it parks
OPEN, JOINED = 1 << 15, (1 << 15) - 1
SLOT_WORDS = 16  # one 128-byte slot per thread: next (0), end (1), wake (8), sleeping (9)
FUTEX = {"x86_64": 202, "aarch64": 98}  # SYS_futex
FUTEX_WAIT, FUTEX_WAKE = 128, 129  # the _PRIVATE operations
CLOCK_MONOTONIC = 1


def supported(target: Target) -> bool:
    """Whether this module can be built for target: Linux on x86_64 or aarch64."""
    return target.triple.split("-")[0] in FUTEX and "linux" in target.triple


def _c(value, ty=I64):
    return ir.Constant(ty, value)


class _Pool:
    """The module being built: its globals, the libc functions it calls, the target."""

    def __init__(self, target: Target):
        self.module = ir.Module(name="diffc_pool")
        self.arch = target.triple.split("-")[0]
        self.threads = self._global(THREADS_SYMBOL, I64, 1, external=True)
        self.min_work = self._global(MIN_WORK_SYMBOL, I64, 0, external=True)
        self.state = self._global("pool.state", I64, 0)
        self.left = self._global("pool.left", I64, 0)  # workers of the region that are done
        self.busy = self._global("pool.busy", I32, 0)
        self.started = self._global("pool.started", I64, 0)  # workers created
        self.job = self._global("pool.job", ir.ArrayType(I64, SLOT_WORDS), None)
        self.slots = self._global("pool.slots", ir.ArrayType(ir.ArrayType(
            I64, SLOT_WORDS), MAX_THREADS), None)
        m = self.module
        self.pthread_create = ir.Function(m, ir.FunctionType(I32, [PTR, PTR, PTR, PTR]),
                                          "pthread_create")
        self.pthread_detach = ir.Function(m, ir.FunctionType(I32, [I64]), "pthread_detach")
        self.pthread_setname = ir.Function(m, ir.FunctionType(I32, [I64, PTR]),
                                           "pthread_setname_np")
        self.pthread_sigmask = ir.Function(m, ir.FunctionType(I32, [I32, PTR, PTR]),
                                           "pthread_sigmask")
        self.clock_gettime = ir.Function(m, ir.FunctionType(I32, [I32, PTR]), "clock_gettime")
        self.sched_yield = ir.Function(m, ir.FunctionType(I32, []), "sched_yield")
        self.syscall = ir.Function(m, ir.FunctionType(I64, [I64], var_arg=True), "syscall")

    def _global(self, name, ty, value, external=False):
        g = ir.GlobalVariable(self.module, ty, name)
        g.initializer = ir.Constant(ty, value)
        g.align = 128  # its own cache line (two, against adjacent-line prefetch)
        if not external:
            g.linkage = "internal"
        return g

    def function(self, name, fnty, external=False):
        fn = ir.Function(self.module, fnty, name)
        if not external:
            fn.linkage = "internal"
        fn.attributes.add("nounwind")
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    def slot(self, b, thread, word):
        """The address of word `word` of thread's slot."""
        return b.gep(self.slots, [_c(0), thread, _c(word)], inbounds=True)

    def pause(self, b) -> None:
        """A spin-wait hint: x86's pause, arm's yield."""
        if self.arch == "x86_64":
            fn = self.module.declare_intrinsic("llvm.x86.sse2.pause", (), ir.FunctionType(VOID, []))
            b.call(fn, [])
        else:
            fn = self.module.declare_intrinsic("llvm.aarch64.hint", (), ir.FunctionType(
                VOID, [I32]))
            b.call(fn, [_c(1, I32)])

    def futex(self, b, word, op, value) -> None:
        b.call(self.syscall, [_c(FUTEX[self.arch]), word, _c(op, I32), value, ir.Constant(
            PTR, None), ir.Constant(PTR, None), _c(0, I32)])


def build(target: Target) -> ir.Module:
    """The pool's module for target (which must be `supported`)."""
    pool = _Pool(target)
    now = _now(pool)
    run = _run(pool)
    worker = _worker(pool, run, now)
    _parallel(pool, run, _start(pool, worker))
    return pool.module


def _now(pool: _Pool) -> ir.Function:
    """Monotonic nanoseconds."""
    fn, b = pool.function("pool.now", ir.FunctionType(I64, []))
    ts = b.alloca(ir.ArrayType(I64, 2))
    b.call(pool.clock_gettime, [_c(CLOCK_MONOTONIC, I32), ts])
    sec = b.load(b.gep(ts, [_c(0), _c(0)]), typ=I64)
    nsec = b.load(b.gep(ts, [_c(0), _c(1)]), typ=I64)
    b.ret(b.add(b.mul(sec, _c(1_000_000_000)), nsec))
    return fn


def _run(pool: _Pool) -> ir.Function:
    """run(t, T): the parts of thread t's block, then what is left of the others' blocks."""
    fn, b = pool.function("pool.run", ir.FunctionType(VOID, [I64, I64]))
    me, count = fn.args
    task = b.load(b.gep(pool.job, [_c(0), _c(0)]), typ=TASK_PTR)
    ctx = b.load(b.gep(pool.job, [_c(0), _c(1)]), typ=PTR)
    with for_range(b, count, name="k") as k:
        t = b.urem(b.add(me, k.index), count)
        end = b.load(pool.slot(b, t, 1), typ=I64)
        claim = fn.append_basic_block("claim")
        work = fn.append_basic_block("work")
        done = fn.append_basic_block("done")
        b.branch(claim)
        b.position_at_end(claim)
        part = b.atomic_rmw("add", pool.slot(b, t, 0), _c(1), "monotonic")
        b.cbranch(b.icmp_signed("<", part, end), work, done)
        b.position_at_end(work)
        b.call(task, [ctx, part])
        b.branch(claim)
        b.position_at_end(done)
    b.ret_void()
    return fn


def _fields(b, state):
    """(generation, thread count, open) of a state word."""
    gen = b.lshr(state, _c(32))
    count = b.and_(b.lshr(state, _c(16)), _c(0xFFFF))
    is_open = b.icmp_unsigned("!=", b.and_(state, _c(OPEN)), _c(0))
    return gen, count, is_open


def _worker(pool: _Pool, run, now) -> ir.Function:
    """A worker's life: join each open region meant for it, spin SPIN_NS after the last, then
    park until a caller wakes it."""
    fn, b = pool.function("pool.worker", ir.FunctionType(PTR, [PTR]))
    me = b.ptrtoint(fn.args[0], I64)
    blocked = b.alloca(ir.ArrayType(I64, 16))  # a sigset_t with every signal
    b.store(ir.Constant(ir.ArrayType(I64, 16), [-1] * 16), blocked)
    b.call(pool.pthread_sigmask, [_c(0, I32), blocked, ir.Constant(PTR, None)])  # SIG_BLOCK
    seen, idle, spins = b.alloca(I64), b.alloca(I64), b.alloca(I64)
    b.store(_c(0), seen)
    b.store(b.call(now, []), idle)
    b.store(_c(0), spins)
    blocks = {n: fn.append_basic_block(n) for n in (
        "loop", "new", "join", "joined", "skip", "spin", "clock", "park", "sleep", "awake")}
    b.branch(blocks["loop"])

    b.position_at_end(blocks["loop"])
    state = b.load_atomic(pool.state, "acquire", 8, typ=I64)
    gen, count, is_open = _fields(b, state)
    b.cbranch(b.icmp_unsigned("==", gen, b.load(seen, typ=I64)), blocks["spin"], blocks["new"])

    b.position_at_end(blocks["new"])  # a region not seen yet: join it if open and ours
    b.cbranch(b.and_(is_open, b.icmp_unsigned("<", me, count)), blocks["join"], blocks["skip"])
    b.position_at_end(blocks["join"])
    result = b.cmpxchg(pool.state, state, b.add(state, _c(1)), "acq_rel", "acquire")
    b.cbranch(b.extract_value(result, 1), blocks["joined"], blocks["loop"])
    b.position_at_end(blocks["joined"])
    b.store(gen, seen)
    b.call(run, [me, count])
    b.atomic_rmw("add", pool.left, _c(1), "release")
    b.store(b.call(now, []), idle)
    b.branch(blocks["loop"])
    b.position_at_end(blocks["skip"])
    b.store(gen, seen)
    b.branch(blocks["loop"])

    b.position_at_end(blocks["spin"])  # the clock is read every 64 pauses
    pool.pause(b)
    n = b.add(b.load(spins, typ=I64), _c(1))
    b.store(n, spins)
    b.cbranch(b.icmp_unsigned("==", b.and_(n, _c(63)), _c(0)), blocks["clock"], blocks["loop"])
    b.position_at_end(blocks["clock"])
    hot = b.icmp_signed("<", b.sub(b.call(now, []), b.load(idle, typ=I64)), _c(SPIN_NS))
    b.cbranch(hot, blocks["loop"], blocks["park"])

    b.position_at_end(blocks["park"])  # flag, then check for a region, then sleep
    wake, sleeping = pool.slot(b, me, 8), pool.slot(b, me, 9)
    b.store_atomic(_c(1), sleeping, "seq_cst", 8)
    value = b.load_atomic(wake, "seq_cst", 4, typ=I32)
    state = b.load_atomic(pool.state, "seq_cst", 8, typ=I64)
    gen, count, is_open = _fields(b, state)
    pending = b.and_(b.and_(is_open, b.icmp_unsigned("<", me, count)),
                     b.icmp_unsigned("!=", gen, b.load(seen, typ=I64)))
    b.cbranch(pending, blocks["awake"], blocks["sleep"])
    b.position_at_end(blocks["sleep"])
    pool.futex(b, wake, FUTEX_WAIT, b.zext(value, I64))
    b.branch(blocks["awake"])
    b.position_at_end(blocks["awake"])
    b.store_atomic(_c(0), sleeping, "seq_cst", 8)
    b.store(b.call(now, []), idle)
    b.branch(blocks["loop"])
    return fn


def _start(pool: _Pool, worker) -> ir.Function:
    """start(T): create workers until T - 1 exist (or creation fails); the threads usable."""
    fn, b = pool.function("pool.start", ir.FunctionType(I64, [I64]))
    (want,) = fn.args
    tid = b.alloca(I64)
    test, create, made, done = (fn.append_basic_block(n) for n in ("test", "create", "made",
                                                                    "done"))
    b.branch(test)
    b.position_at_end(test)
    started = b.load(pool.started, typ=I64)
    b.cbranch(b.icmp_signed("<", b.add(started, _c(1)), want), create, done)
    b.position_at_end(create)
    index = b.inttoptr(b.add(started, _c(1)), PTR)
    rc = b.call(pool.pthread_create, [tid, ir.Constant(PTR, None), worker, index])
    b.cbranch(b.icmp_signed("==", rc, _c(0, I32)), made, done)
    b.position_at_end(made)
    b.call(pool.pthread_setname, [b.load(tid, typ=I64), _name(pool.module)])
    b.call(pool.pthread_detach, [b.load(tid, typ=I64)])
    b.store(b.add(started, _c(1)), pool.started)
    b.branch(test)
    b.position_at_end(done)
    usable = b.add(b.load(pool.started, typ=I64), _c(1))
    b.ret(b.select(b.icmp_signed("<", usable, want), usable, want))
    return fn


def _name(module):
    """The workers' thread name (as ps and /proc show it)."""
    text = bytearray(WORKER_NAME.encode() + b"\0")
    name = ir.GlobalVariable(module, ir.ArrayType(ir.IntType(8), len(text)), "pool.name")
    name.initializer = ir.Constant(name.value_type, text)
    name.global_constant = True
    name.linkage = "internal"
    return name


def _parallel(pool: _Pool, run, start) -> None:
    """diffc_pool_parallel(task, ctx, parts, work): see the module docstring."""
    fn, b = pool.function(PARALLEL_SYMBOL, PARALLEL, external=True)
    task, ctx, parts, work = fn.args
    spins = b.alloca(I64)
    inline, lock, go, share = (fn.append_basic_block(n) for n in ("inline", "lock", "go",
                                                                   "share"))
    threads = b.load_atomic(pool.threads, "monotonic", 8, typ=I64)
    count = _min(b, _min(b, threads, parts), _c(MAX_THREADS))
    small = b.icmp_signed("<", work, b.load_atomic(pool.min_work, "monotonic", 8, typ=I64))
    b.cbranch(b.or_(small, b.icmp_signed("<=", count, _c(1))), inline, lock)

    b.position_at_end(lock)  # one region at a time; another caller's runs inline
    got = b.cmpxchg(pool.busy, _c(0, I32), _c(1, I32), "acquire", "monotonic")
    b.cbranch(b.extract_value(got, 1), go, inline)
    b.position_at_end(go)
    count = b.call(start, [count])
    unlock = fn.append_basic_block("unlock")
    b.cbranch(b.icmp_signed("<=", count, _c(1)), unlock, share)
    b.position_at_end(unlock)
    b.store_atomic(_c(0, I32), pool.busy, "release", 4)
    b.branch(inline)

    b.position_at_end(share)
    _publish(pool, b, task, ctx, parts, count)
    b.call(run, [_c(0), count])
    closed = b.atomic_rmw("and", pool.state, _c(~OPEN), "acq_rel")
    joined = b.and_(closed, _c(JOINED))
    _wait_for(pool, b, joined, spins)
    b.store_atomic(_c(0, I32), pool.busy, "release", 4)
    b.ret_void()

    b.position_at_end(inline)
    with for_range(b, parts, name="p") as p:
        b.call(task, [ctx, p.index])
    b.ret_void()


def _min(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _publish(pool: _Pool, b, task, ctx, parts, count) -> None:
    """Write the job and the blocks, open the region, wake the sleeping workers it needs."""
    b.store(b.ptrtoint(task, I64), b.gep(pool.job, [_c(0), _c(0)]))
    b.store(b.ptrtoint(ctx, I64), b.gep(pool.job, [_c(0), _c(1)]))
    with for_range(b, count, name="t") as t:
        b.store(b.sdiv(b.mul(t.index, parts), count), pool.slot(b, t.index, 0))
        end = b.sdiv(b.mul(b.add(t.index, _c(1)), parts), count)
        b.store(end, pool.slot(b, t.index, 1))
    b.store_atomic(_c(0), pool.left, "monotonic", 8)
    gen = b.add(b.lshr(b.load(pool.state, typ=I64), _c(32)), _c(1))
    state = b.or_(b.or_(b.shl(gen, _c(32)), b.shl(count, _c(16))), _c(OPEN))
    b.store_atomic(state, pool.state, "seq_cst", 8)
    with for_range(b, b.sub(count, _c(1)), name="w") as w:
        me = b.add(w.index, _c(1))
        asleep = b.load_atomic(pool.slot(b, me, 9), "seq_cst", 8, typ=I64)
        with b.if_then(b.icmp_unsigned("!=", asleep, _c(0)), likely=False):
            wake = pool.slot(b, me, 8)
            b.atomic_rmw("add", wake, _c(1, I32), "seq_cst")
            pool.futex(b, wake, FUTEX_WAKE, _c(1))


def _wait_for(pool: _Pool, b, joined, spins) -> None:
    """Spin until `joined` workers have left the region (yielding the core after a while: a
    worker that was descheduled mid-part may need it)."""
    fn = b.block.function
    test, spin, done = (fn.append_basic_block(n) for n in ("wait", "spin", "left"))
    b.store(_c(0), spins)
    b.branch(test)
    b.position_at_end(test)
    left = b.load_atomic(pool.left, "acquire", 8, typ=I64)
    b.cbranch(b.icmp_unsigned("==", left, joined), done, spin)
    b.position_at_end(spin)
    n = b.add(b.load(spins, typ=I64), _c(1))
    b.store(n, spins)
    with b.if_else(b.icmp_unsigned("<", n, _c(1 << 12))) as (short, long):
        with short:
            pool.pause(b)
        with long:
            b.call(pool.sched_yield, [])
    b.branch(test)
    b.position_at_end(done)
