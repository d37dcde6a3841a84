# runtime/weft-gdb.py — gdb commands for weft's user-level threads (ULTs).
#
# Loading
#   Installed next to libweft.so as gdb's auto-load script
#   <datadir>/gdb/auto-load<libdir>/libweft.so-gdb.py: with prefix /usr that
#   is where gdb looks, and gdb loads it when it loads libweft.so. For
#   another prefix, tell gdb (e.g. in ~/.gdbinit):
#     add-auto-load-scripts-directory <prefix>/share/gdb/auto-load
#     add-auto-load-safe-path <prefix>/share/gdb/auto-load
#   A program linked with the static library has no libweft.so: load the
#   script by hand, `source /path/to/weft-gdb.py`.
#
# Commands
#   info ults                  every ULT in use: index.generation, the full
#                              id (generation << 32 | index), name, state
#                              (running on worker N (tid T) / runnable /
#                              parking / parked[: what obj fd N] / exited),
#                              priority, bound or not.
#   ult bt ID [bt options]     backtrace of one ULT. ID: the index (12), the
#                              index.generation (12.3) or the full id.
#   ult apply all CMD          CMD (bt, info frame, info locals...) in every
#   ult apply ID... CMD        ULT / in the ULTs named.
#
# How
#   Everything is read from the exported record `weft_debug_info`
#   (runtime/debug_info.h): a plain C struct of offsets, so no DWARF types
#   are needed (a release build without -g works; backtraces then show the
#   symbols there are). The symbol is in .dynsym of libweft.so and in .symtab
#   of a static program: `strip --strip-debug` keeps it, a full strip of a
#   static program removes it and the commands say so.
#   A running ULT's backtrace is its kernel thread's (the gdb thread whose
#   LWP is the worker's tid, or whose stack pointer lies in the ULT's stack).
#   A switched-out ULT is unwound from its saved switch frame
#   (sys/context_layout.h) by a Python unwinder: while a command runs for the
#   ULT, the innermost real frame of the selected thread unwinds to the ULT's
#   saved registers, and a frame filter hides the thread's own frames from
#   `bt` (so the ULT's frames are numbered from #1 or #2 on). No
#   register is written, so it works on core files as on live processes.
#   Commands other than bt run with the ULT's innermost frame selected.
#   Core files: a kernel core dump (ulimit -c unlimited; a crash, or
#   kill -ABRT) holds every ULT stack. gdb 13's `gcore` cannot read a
#   mapping that contains MADV_GUARD_INSTALL guard pages (Linux 6.13+,
#   weft's stack guards) and leaves the rest of it out of the core: the ULT
#   stacks are then missing (a backtrace says its saved context "reads as
#   zeros"). Where MADV_GUARD_INSTALL is refused (older kernels) weft's
#   guards are mprotect'ed pages, separate mappings gcore skips, and gcore
#   cores are complete (tests/gdb_test.cc checks both kinds of core).
#   Do not `continue`/`step` from inside `ult apply`: the frames shown are
#   not the thread's.

import itertools
import re
import struct

import gdb
import gdb.unwinder

_MAGIC = 0x74666577
_HEADER = struct.Struct("<IIQQIII")
_FIELDS = (
    "ult_sp ult_state ult_index ult_generation ult_name ult_name_len ult_worker "
    "ult_live_in ult_eff_prio ult_wait_what ult_wait_obj ult_wait_arg ult_bound "
    "worker_index worker_tid worker_current ctx_frame_size ctx_rip ctx_rbp ctx_rbx "
    "ctx_r12 ctx_r13 ctx_r14 ctx_r15").split()
# Added after version 1's first fields (at the end, as debug_info.h asks):
# the bounds of a ULT's stack, which tell a running ULT whose worker does
# not list it (inside weft::blocking(), or parking).
_EXTRA_FIELDS = ["ult_stack_base", "ult_stack_size"]
_PRIO = {0: "background", 1: "normal", 2: "high"}


def _inferior():
    inf = gdb.selected_inferior()
    if inf is None or inf.pid == 0 and not inf.threads():
        raise gdb.GdbError("weft: no process or core file")
    return inf


def _u(mem, off, size):
    return int.from_bytes(bytes(mem[off:off + size]), "little", signed=False)


def _s(mem, off, size):
    return int.from_bytes(bytes(mem[off:off + size]), "little", signed=True)


class _Info:
    """weft_debug_info, read from the inferior."""

    def __init__(self):
        self.inf = _inferior()
        try:
            addr = int(gdb.parse_and_eval("(unsigned long)&weft_debug_info"))
        except gdb.error:
            raise gdb.GdbError(
                "weft: no symbol weft_debug_info (not a weft program, libweft.so not loaded yet, "
                "or a fully stripped static program)")
        n = _HEADER.size + 4 * (len(_FIELDS) + len(_EXTRA_FIELDS))
        try:
            raw = bytes(self.inf.read_memory(addr, n))
        except gdb.MemoryError:
            raise gdb.GdbError("weft: cannot read weft_debug_info at 0x%x" % addr)
        (magic, version, self.chunks, self.created, self.chunk_bits, self.max_chunks,
         self.desc_size) = _HEADER.unpack_from(raw, 0)
        if magic != _MAGIC:
            raise gdb.GdbError("weft: weft_debug_info at 0x%x has magic 0x%x, not 0x%x" % (addr, magic, _MAGIC))
        if version != 1:
            raise gdb.GdbError("weft: weft_debug_info version %d; this script reads version 1" % version)
        # ult_stack_base and ult_stack_size came after the first release of
        # version 1: a record without them has other data there, which the
        # range check below rejects in all likelihood.
        names = _FIELDS + _EXTRA_FIELDS
        vals = struct.unpack_from("<%dI" % len(names), raw, _HEADER.size)
        for k, v in zip(names, vals):
            setattr(self, k, v)
        # The extra fields are there if they name places inside a descriptor.
        self.has_stack = all(0 < getattr(self, k) < self.desc_size for k in _EXTRA_FIELDS)
        if self.chunks == 0 or self.created == 0:
            raise gdb.GdbError("weft: the ULT table does not exist yet (no runtime was started)")

    def read(self, addr, n):
        return self.inf.read_memory(addr, n)

    def ptr(self, addr):
        return _u(self.read(addr, 8), 0, 8)

    def cstring(self, addr, limit=64):
        if addr == 0:
            return None
        try:
            b = bytes(self.read(addr, limit))
        except gdb.MemoryError:
            return "<0x%x>" % addr
        return b.split(b"\0", 1)[0].decode("utf-8", "replace")

    def ults(self):
        """Every descriptor in use, as _Ult objects, by index."""
        count = _u(self.read(self.created, 4), 0, 4)
        per = 1 << self.chunk_bits
        out = []
        chunk_ptrs = {}
        for i in range(count):
            c = i >> self.chunk_bits
            if c >= self.max_chunks:
                break
            if c not in chunk_ptrs:
                chunk_ptrs[c] = self.ptr(self.chunks + 8 * c)
            base = chunk_ptrs[c]
            if base == 0:
                continue
            addr = base + (i & (per - 1)) * self.desc_size
            try:
                mem = self.read(addr, self.desc_size)
            except gdb.MemoryError:
                continue
            if _u(mem, self.ult_live_in, 8) == 0:
                continue
            out.append(_Ult(self, addr, mem))
        return out


class _Ult:
    def __init__(self, info, addr, mem):
        self.addr = addr
        self.index = _u(mem, info.ult_index, 4)
        self.generation = _u(mem, info.ult_generation, 4)
        self.id = self.generation << 32 | self.index
        self.name = bytes(mem[info.ult_name:info.ult_name + info.ult_name_len]).split(b"\0", 1)[0].decode(
            "utf-8", "replace")
        self.state = _u(mem, info.ult_state, 4) & 3
        self.sp = _u(mem, info.ult_sp, 8)
        self.prio = _u(mem, info.ult_eff_prio, 1)
        self.bound = _u(mem, info.ult_bound, 1) != 0
        self.wait_what = info.cstring(_u(mem, info.ult_wait_what, 8))
        self.wait_obj = _u(mem, info.ult_wait_obj, 8)
        self.wait_arg = _s(mem, info.ult_wait_arg, 8)
        self.worker = _u(mem, info.ult_worker, 8)
        self.worker_index = None
        self.worker_tid = None
        self.worker_current = None
        if self.worker:
            try:
                self.worker_index = _s(info.read(self.worker + info.worker_index, 4), 0, 4)
                self.worker_tid = _s(info.read(self.worker + info.worker_tid, 4), 0, 4)
                self.worker_current = info.ptr(self.worker + info.worker_current)
            except gdb.MemoryError:
                pass
        if info.has_stack:
            self.stack_lo = _u(mem, info.ult_stack_base, 8)
            self.stack_hi = self.stack_lo + _u(mem, info.ult_stack_size, 8)
        else:
            self.stack_lo = self.stack_hi = 0
        self.run_lwp = None  # set by _locate: the LWP running it

    def label(self):
        return "%d.%d" % (self.index, self.generation)

    def state_text(self):
        if self.run_lwp is not None:
            if self.worker_tid != self.run_lwp:
                where = "a kernel thread"  # its worker's fields are changing
            elif self.worker_index is not None and self.worker_index >= 0:
                where = "worker %d" % self.worker_index
            else:
                where = "a bound worker" if self.bound else "a worker"
            text = "running on %s (tid %d)" % (where, self.run_lwp)
            if self.state == 1:
                text = "parking, " + text
            return text
        if self.state == 0:
            return "runnable"
        if self.state == 1:
            return "parking"
        if self.state == 3:
            return "exited"
        if not self.wait_what:
            return "parked"
        text = "parked: %s" % self.wait_what
        if self.wait_obj:
            text += " 0x%x" % self.wait_obj
        if self.wait_arg >= 0:
            text += " fd %d" % self.wait_arg
        return text


def _threads_by_lwp(inf):
    """{lwp: (thread, rsp)} for every thread of the inferior."""
    out = {}
    orig = gdb.selected_thread()
    try:
        frame = gdb.selected_frame() if orig is not None else None
    except gdb.error:
        frame = None
    try:
        for t in inf.threads():
            rsp = None
            try:
                t.switch()
                rsp = int(gdb.newest_frame().read_register("rsp"))
            except gdb.error:
                pass
            out[t.ptid[1] or t.ptid[0]] = (t, rsp)
    finally:
        if orig is not None and orig.is_valid():
            orig.switch()
            if frame is not None and frame.is_valid():
                frame.select()
    return out


def _locate(ults, threads):
    """Marks the ULTs running now.

    A thread whose stack pointer lies in the ULT's stack runs it (also
    inside weft::blocking(), where its worker's `current` is null); else
    the ULT its worker names as current runs on that worker's thread (a
    signal handler on an alternate stack). The stack test comes first: a
    worker's fields can be in the middle of a change (a blocking-region
    handoff) when a core is taken."""
    for u in ults:
        if u.state in (2, 3):
            continue
        if u.stack_hi:
            for lwp, (_, rsp) in threads.items():
                if rsp is not None and u.stack_lo <= rsp < u.stack_hi:
                    u.run_lwp = lwp
                    break
        if u.run_lwp is None and u.worker_current == u.addr and u.worker_tid in threads:
            u.run_lwp = u.worker_tid


def _snapshot():
    info = _Info()
    ults = info.ults()
    threads = _threads_by_lwp(info.inf)
    _locate(ults, threads)
    return info, ults, threads


class _FrameId:
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


class _UltUnwinder(gdb.unwinder.Unwinder):
    """While `target` is set, the innermost frame of thread `ptid` unwinds to a switched-out ULT's registers."""

    def __init__(self):
        super().__init__("weft-ult")
        self.target = None  # (ptid, level, {register: value})
        self.frame_size = 64

    def __call__(self, pf):
        if self.target is None:
            return None
        ptid, level, regs = self.target
        if pf.level() != level:
            return None
        t = gdb.selected_thread()
        if t is None or t.ptid != ptid:
            return None
        # The frame's id takes the ULT's saved sp as its stack address, not
        # the thread's own: gdb stops a backtrace whose next frame is
        # "inner" (at a lower address) than this one ("previous frame inner
        # to this frame"), which the ULT's frames would be whenever its
        # stack lies below the thread's. The switch frame at that sp lies
        # below every frame of the ULT.
        rsp = pf.read_register("rsp")
        sp = gdb.Value(regs["rsp"] - self.frame_size).cast(rsp.type)
        pc = pf.read_register("rip")
        ui = pf.create_unwind_info(_FrameId(sp, pc))
        for name, val in regs.items():
            ui.add_saved_register(name, gdb.Value(val).cast(pf.read_register(name).type))
        return ui


class _UltFrameFilter:
    """Hides the selected thread's own innermost frames while the unwinder shows a ULT."""

    def __init__(self):
        self.name = "weft-ult"
        self.priority = 100
        self.enabled = True
        self.hide_to = None  # hide frames of levels <= this
        gdb.frame_filters[self.name] = self

    def filter(self, frames):
        if self.hide_to is None:
            return frames
        hide_to = self.hide_to
        return itertools.dropwhile(lambda d: d.inferior_frame().level() <= hide_to, frames)


_unwinder = _UltUnwinder()
gdb.unwinder.register_unwinder(None, _unwinder, replace=True)
_filter = _UltFrameFilter()


def _saved_regs(info, sp):
    mem = info.read(sp, info.ctx_frame_size)
    regs = {"rsp": sp + info.ctx_frame_size, "rip": _u(mem, info.ctx_rip, 8)}
    for r in ("rbp", "rbx", "r12", "r13", "r14", "r15"):
        regs[r] = _u(mem, getattr(info, "ctx_" + r), 8)
    return regs


def _run_in_ult(info, u, threads, cmd):
    """Runs gdb command `cmd` with the ULT u's frames shown."""
    orig = gdb.selected_thread()
    try:
        orig_frame = gdb.selected_frame()
    except gdb.error:
        orig_frame = None
    try:
        if u.run_lwp is not None:
            gdb.write("(running: the frames of its kernel thread, LWP %d)\n" % u.run_lwp)
            threads[u.run_lwp][0].switch()
            gdb.execute(cmd, from_tty=False)
            return
        if u.state == 3:
            gdb.write("(exited: no frames)\n")
            return
        if u.sp == 0:
            gdb.write("(no saved context)\n")
            return
        try:
            regs = _saved_regs(info, u.sp)
        except gdb.MemoryError:
            gdb.write("(its saved context at 0x%x cannot be read)\n" % u.sp)
            return
        if regs["rip"] == 0:
            # A core file that lacks the stack reads as zeros there.
            gdb.write("(its saved context at 0x%x reads as zeros: its stack is not in the core file? "
                      "gcore leaves out mappings with MADV_GUARD_INSTALL guards)\n" % u.sp)
            return
        host = orig if orig is not None and orig.is_valid() else info.inf.threads()[0]
        host.switch()
        # The host thread's innermost real frame (inline frames come
        # first at the same pc, unwound by gdb's inline unwinder): the
        # unwinder makes it unwind to the ULT's registers.
        gdb.invalidate_cached_frames()
        f = gdb.newest_frame()
        while f.type() == gdb.INLINE_FRAME and f.older() is not None:
            f = f.older()
        level = f.level()
        _unwinder.frame_size = info.ctx_frame_size
        _unwinder.target = (host.ptid, level, regs)
        _filter.hide_to = level
        gdb.invalidate_cached_frames()
        try:
            f = gdb.newest_frame()
            while f is not None and f.level() <= level:
                f = f.older()
            if f is not None:
                f.select()
            gdb.execute(cmd, from_tty=False)
        finally:
            _unwinder.target = None
            _filter.hide_to = None
            gdb.invalidate_cached_frames()
    finally:
        if orig is not None and orig.is_valid():
            orig.switch()
            if orig_frame is not None and orig_frame.is_valid():
                orig_frame.select()


def _header(u):
    return 'ULT %s (id %d = 0x%x) "%s": %s' % (u.label(), u.id, u.id, u.name, u.state_text())


def _find(ults, text):
    m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", text)
    try:
        if m:
            idx, gen = int(m.group(1)), int(m.group(2))
        else:
            v = int(text, 0)
            idx, gen = (v, None) if v < (1 << 32) else (v & 0xffffffff, v >> 32)
    except ValueError:
        raise gdb.GdbError("weft: bad ULT id %r (index, index.generation or full id)" % text)
    for u in ults:
        if u.index == idx:
            if gen is not None and u.generation != gen:
                raise gdb.GdbError("weft: ULT index %d has generation %d now, not %d (the id is stale)" %
                                   (idx, u.generation, gen))
            return u
    raise gdb.GdbError("weft: no ULT in use with index %d" % idx)


class _InfoUlts(gdb.Command):
    """List weft's ULTs: index.generation, id, name, state, priority, bound.

Usage: info ults"""

    def __init__(self):
        super().__init__("info ults", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        info, ults, _ = _snapshot()
        gdb.write("%-10s %-20s %-24s %-9s %-7s %s\n" % ("Index.Gen", "Id", "Name", "Priority", "Bound", "State"))
        for u in ults:
            gdb.write("%-10s %-20s %-24s %-9s %-7s %s\n" % (
                u.label(), "0x%x" % u.id, '"%s"' % u.name, "%d %s" % (u.prio, _PRIO.get(u.prio, "?")),
                "bound" if u.bound else "no", u.state_text()))
        gdb.write("%d ULT(s) in use\n" % len(ults))


class _UltPrefix(gdb.Command):
    """weft ULT commands: ult bt ID, ult apply all|ID... CMD."""

    def __init__(self):
        super().__init__("ult", gdb.COMMAND_STACK, prefix=True)

    def invoke(self, arg, from_tty):
        raise gdb.GdbError("usage: ult bt ID | ult apply all CMD | ult apply ID... CMD")


class _UltBt(gdb.Command):
    """Backtrace of one ULT.

Usage: ult bt ID [bt arguments]
ID is the ULT's index (12), index.generation (12.3) or full id (0x30000000c)."""

    def __init__(self):
        super().__init__("ult bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        words = arg.split(None, 1)
        if not words:
            raise gdb.GdbError("usage: ult bt ID [bt arguments]")
        info, ults, threads = _snapshot()
        u = _find(ults, words[0])
        gdb.write(_header(u) + "\n")
        _run_in_ult(info, u, threads, "bt " + (words[1] if len(words) > 1 else ""))


class _UltApply(gdb.Command):
    """Run a gdb command in every ULT, or in the ULTs named.

Usage: ult apply all CMD
       ult apply ID [ID...] CMD
The ULT's frames are shown to CMD (bt lists them; other commands see its innermost frame selected)."""

    def __init__(self):
        super().__init__("ult apply", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        words = arg.split()
        if len(words) < 2:
            raise gdb.GdbError("usage: ult apply all CMD | ult apply ID [ID...] CMD")
        info, ults, threads = _snapshot()
        if words[0] == "all":
            chosen = ults
            cmd = arg.split(None, 1)[1]
        else:
            chosen = []
            rest = arg
            while True:
                parts = rest.split(None, 1)
                if len(parts) < 2 or not re.fullmatch(r"\d+(\.\d+)?|0x[0-9a-fA-F]+", parts[0]):
                    break
                chosen.append(_find(ults, parts[0]))
                rest = parts[1]
            cmd = rest
            if not chosen:
                raise gdb.GdbError("usage: ult apply all CMD | ult apply ID [ID...] CMD")
        for u in chosen:
            gdb.write("\n" + _header(u) + "\n")
            try:
                _run_in_ult(info, u, threads, cmd)
            except gdb.error as e:
                gdb.write("weft: %s\n" % e)


_InfoUlts()
_UltPrefix()
_UltBt()
_UltApply()
