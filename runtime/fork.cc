// runtime/fork.cc — fork() from a ULT, or from a foreign thread while
// runtimes run.
//
// Meaning (POSIX, the seeds' fork1): the child has one thread of control,
// the one that called fork. Called in a ULT, that is the ULT: it goes on
// running in the child, on the same kernel thread (which is the child's only
// thread), and every other ULT and every other KLT of every runtime does not
// exist there. The runtimes stay usable in the child: each gets fresh
// workers and a fresh monitor, and the forking ULT can spawn, join, lock,
// sleep and do io. In a child forked by a ULT, the process exits with status
// 0 when its last ULT returns, as a process does when its last thread exits.
//
// Why locks, and which. At the instant of the fork other KLTs may be in the
// middle of changing shared state. The child sees memory page by page as it
// was when fork copied that page (other threads keep running in the parent
// while the page tables are copied), so a structure another thread was
// changing can be torn in any way in the child. The child therefore reads
// only state that (a) belongs to the forking KLT itself, or (b) is guarded
// by a lock that weft's prepare handler holds across the fork, or (c) is a
// single aligned word whose every possible value is safe to act on. And it
// resets every lock: a lock held at the fork by a thread that does not
// exist in the child would stay held forever.
//
//   prepare (parent, forking thread, after the application's prepares):
//     runtimes_lock                     the list of runtimes
//     per runtime: concurrency_lock     worker_storage, slots, monitor
//                  bound_lock           bound_all, bound_finished, the fork KLT
//     table.lock                        the descriptor table, its free list
//     death row lock                    cached descriptors and their stacks
//     hooks (io/)                       engine registry, resolver queue
//     sys (klt_atfork_prepare)          KLT stack cache, TLS heritage pool
//   parent: the same in reverse order, released.
//   child (before the application's child handlers): sys, hooks, then
//     every lock above reset, and the runtimes rebuilt (below).
//
// The order is the runtime's lock order (HACKING.md: concurrency_lock ->
// bound_lock -> everything else), with runtimes_lock first: shutdown
// unlists its runtime only after it has released concurrency_lock. Holding
// these briefly stops the parent's workers only where they need one of them
// (a worker KLT starting or joining, a spawn that maps a new stack, a
// release to the death row): nothing is lost, it waits. Other internal
// locks (global queue, idle set, inboxes) are not taken: the child does not
// read what they guard, it resets it.
//
// The child's rebuild (runs in the child handler, on the forking ULT's
// stack; malloc and the KLT backend are usable, glibc has reset its own
// locks):
//   1. Descriptors. Every descriptor but the forking ULT's becomes free:
//      its generation advances (every id of the parent's other ULTs is
//      stale, so join/detach report NotFound), and its stack is unmapped
//      unless it sits in the death row, whose lists were consistent (lock
//      held) and are kept for reuse. A descriptor's stack is one of two
//      kinds of value: empty, or the one mapping it owns (a stack is
//      released to empty before a descriptor gets another), so even a torn
//      Stack read here names the right mapping or none (munmap of a range
//      already gone, or of length 0, fails harmlessly). Per-worker caches
//      are owner-only lists that may be torn: never walked, their
//      descriptors are found by the table scan instead.
//   2. Runtimes. For each: the KLTs of every worker (but the forking one),
//      of bound ULTs and of the monitor are forgotten (sys frees their
//      stacks and TLS; no join), their pollers' descriptors are closed
//      without use (a ring's memory is not mapped in the child:
//      MADV_DONTFORK). Their Worker objects are leaked on purpose: their
//      owner-only queues may be torn and must not be destroyed. The
//      forking KLT's worker keeps its identity (the ULT runs on it), its
//      queues are emptied and it gets a fresh poller (a new ring or epoll
//      instance, set up lazily on first use). Queues, idle set, counters
//      and the live count start over (1: the forking ULT, or 0), and fresh
//      workers fill the other slots up to the concurrency level.
//
// What does not survive, as with threads: weft primitives other ULTs held
// or waited on at the fork keep those holds and waiters (a Mutex held by
// another ULT stays locked in the child); ULT-local values of the ULTs that
// are gone are not destroyed (leaked with them).
//
// Rules (HACKING.md "An atfork child"): no spdlog (the logger may be held
// by a thread that is gone; it is reset by its own hook... it is not used
// here), raw_logf for errors, no weft lock that the child did not reset.
#include "runtime/fork.h"
#include "sys/spin.h"

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "runtime/globals.h"
#include "runtime/log.h"
#include "runtime/scheduler.h"
#include "runtime/signal.h"
#include "sys/klt.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"
#include "sys/stack.h"

namespace weft::rt {
namespace {

std::atomic<uint64_t> n_prepare{0}, n_parent{0}, n_child{0};

constexpr int kMaxHooks = 4;
ForkHooks hooks[kMaxHooks];
std::atomic<int> nhooks{0};

// Per-descriptor step of the child's table scan (step 1 above).
void mark_cached(UltDesc* u, void*) { u->fork_cached = true; }

void reclaim_descriptors(UltDesc* self) {
  Globals::Table& t = globals().table;
  t.lock.reset_after_fork();
  uint32_t n = t.next_index;
  auto at = [&t](uint32_t i) { return &t.chunks[i >> Globals::Table::kChunkBits].load(std::memory_order_relaxed)[i & (Globals::Table::kChunkSize - 1)]; };
  for (uint32_t i = 0; i < n; ++i) at(i)->fork_cached = false;
  death_row().fork_child_for_each(mark_cached, nullptr);
  t.free_list = nullptr;
  for (uint32_t i = n; i-- > 0;) {
    UltDesc* u = at(i);
    if (u == self) continue;
    if (u->fork_cached) {  // stays in the death row, stack and all
      u->fork_cached = false;
      continue;
    }
    if (u->stack.base != nullptr && sys::stack_release(&u->stack) != 0) {
      // munmap refused (vm.max_map_count): the mapping exists; forget it
      // rather than hand out a stack whose state the fork may have torn.
      u->stack = sys::Stack{};
    }
    u->join_lock.reset_after_fork();
    advance_generation(u);
    // Whatever state it was in, its ULT does not exist here (fork.cc's
    // table scan): no transition of the diagram, a reset.
    u->state.store(ult_state::kExited, std::memory_order_relaxed);
    u->on_stack.store(false, std::memory_order_relaxed);
    u->clear_life();
    u->sched = nullptr;
    u->locals = nullptr;  // the values of a ULT that is gone leak with it
    u->locals_count = 0;
    u->locals_capacity = 0;
    u->next = t.free_list;
    t.free_list = u;
  }
}

void forget_worker(Worker* w) {
  if (w->poller) w->poller->close_after_fork();
  w->close_stat_file();  // the parent's thread's
  if (w->klt != nullptr) sys::klt_forget_after_fork(w->klt);
  w->klt = nullptr;
}

// The forking thread's count of weft locks held (sys::t_locks_held) before
// prepare took its own: the child resets those locks instead of unlocking
// them, so it puts the count back (else time-slice preemption would never
// switch a ULT out on that KLT again: preempt.cc).
uint32_t locks_before_fork = 0;

void prepare() {
  locks_before_fork = sys::locks_held();
  n_prepare.fetch_add(1, std::memory_order_relaxed);
  Globals& g = globals();
  g.runtimes_lock.lock();
  for (Scheduler* s : g.runtimes) {
    s->concurrency_lock.lock();
    s->bound_lock.lock();
  }
  g.table.lock.lock();
  death_row().fork_prepare();
  int n = nhooks.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i)
    if (hooks[i].prepare) hooks[i].prepare();
  sys::klt_atfork_prepare();
}

void parent() {
  n_parent.fetch_add(1, std::memory_order_relaxed);
  Globals& g = globals();
  sys::klt_atfork_parent();
  int n = nhooks.load(std::memory_order_acquire);
  for (int i = n; i-- > 0;)
    if (hooks[i].parent) hooks[i].parent();
  death_row().fork_parent();
  g.table.lock.unlock();
  for (auto it = g.runtimes.rbegin(); it != g.runtimes.rend(); ++it) {
    (*it)->bound_lock.unlock();
    (*it)->concurrency_lock.unlock();
  }
  g.runtimes_lock.unlock();
}

void child() {
  n_child.fetch_add(1, std::memory_order_relaxed);
  Globals& g = globals();
  sys::klt_atfork_child();
  int n = nhooks.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i)
    if (hooks[i].child) hooks[i].child();
  g.runtimes_lock.reset_after_fork();
  log_reset_after_fork();
  Worker* keep = current_worker();
  UltDesc* self = nullptr;
  if (keep != nullptr) {
    self = keep->current.load(std::memory_order_relaxed);
    if (self == nullptr) self = keep->blocking_ult;  // forked inside weft::blocking()
  }
  sig::after_fork_child(self);
  reclaim_descriptors(self);
  if (self != nullptr) {
    // Whoever was joining it, or would, is another thread: nobody in the
    // child. It is released when it returns.
    self->join_lock.reset_after_fork();
    self->joiner = nullptr;
    self->detached = true;
  }
  for (Scheduler* s : g.runtimes) s->rebuild_after_fork(keep, self);
  sys::set_locks_held(locks_before_fork);  // every lock prepare took was reset above, not unlocked
  // The child's descriptor table was sized to fit the descriptors open at
  // the fork: grow it again while this is the only thread (sig::start
  // below starts another). opts is constant after construction.
  for (Scheduler* s : g.runtimes) grow_fd_table(s->opts.fd_table_slots);
  if (!g.runtimes.empty()) {
    const char* what = nullptr;
    if (!sig::start(&what)) sys::raw_logf("weft: forked child: cannot start the signal kernel thread (%s)", what ? what : "?");
  }
}

__attribute__((constructor)) void install_at_load() { install_fork_handlers(); }

}  // namespace

void install_fork_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    int r = pthread_atfork(prepare, parent, child);
    if (r != 0) sys::raw_logf("weft: pthread_atfork failed (%d): fork() while runtimes run is unsafe", r);
  });
}

ForkCounts fork_counts() {
  return ForkCounts{n_prepare.load(std::memory_order_relaxed), n_parent.load(std::memory_order_relaxed),
                    n_child.load(std::memory_order_relaxed)};
}

bool internal_locks_free() {
  auto free_now = [](KltMutex& m) {
    if (!m.try_lock()) return false;
    m.unlock();
    return true;
  };
  Globals& g = globals();
  if (!free_now(g.runtimes_lock) || !free_now(g.table.lock) || !death_row().lock_free()) return false;
  LockGuard<KltMutex> rg(g.runtimes_lock);
  for (Scheduler* s : g.runtimes) {
    if (!free_now(s->concurrency_lock) || !free_now(s->bound_lock) || !free_now(s->idle_lock) ||
        !free_now(s->global_lock))
      return false;
  }
  return true;
}

void register_fork_hooks(const ForkHooks& h) {
  int i = nhooks.load(std::memory_order_relaxed);
  WEFT_CHECK(i < kMaxHooks, "too many fork hooks");
  hooks[i] = h;
  nhooks.store(i + 1, std::memory_order_release);
}

void Scheduler::rebuild_after_fork(Worker* keep, UltDesc* self) {
  shutdown_lock.reset_after_fork();  // a shutdown in progress: its thread is gone
  concurrency_lock.reset_after_fork();
  bound_lock.reset_after_fork();
  idle_lock.reset_after_fork();
  global_lock.reset_after_fork();
  if (keep != nullptr && keep->sched != this) keep = nullptr;
  bool mine = self != nullptr && self->sched == this;

  // Every KLT of this runtime but `keep` is gone.
  std::vector<std::unique_ptr<Worker>> pool;
  for (auto& w : worker_storage) {
    if (w.get() == keep) {
      pool.push_back(std::move(w));
    } else {
      forget_worker(w.release());  // leaked: its owner-only state may be torn
    }
  }
  worker_storage = std::move(pool);
  std::vector<std::unique_ptr<Worker>> bound;
  for (auto& w : bound_all) {
    if (w.get() == keep) {
      bound.push_back(std::move(w));
    } else {
      forget_worker(w.release());
    }
  }
  bound_all = std::move(bound);
  if (fork_worker != nullptr && fork_worker.get() != keep) forget_worker(fork_worker.release());
  bound_finished.clear();  // their KLTs are gone too (forgotten above)
  bool keep_bound = !bound_all.empty();
  bound_busy.store(keep_bound ? 1 : 0, std::memory_order_relaxed);
  if (monitor != nullptr) sys::klt_forget_after_fork(monitor);
  monitor = nullptr;
  monitor_word.store(0, std::memory_order_relaxed);
  monitor_idle.store(0, std::memory_order_relaxed);

  for (int i = 0; i < max_workers; ++i) slots[static_cast<size_t>(i)].store(nullptr, std::memory_order_relaxed);
  int n = 0;
  if (keep != nullptr && !keep->is_bound) {
    slots[0].store(keep, std::memory_order_relaxed);
    keep->index.store(0, std::memory_order_relaxed);
    n = 1;
  }
  nworkers.store(n, std::memory_order_relaxed);
  global_queue.reset();
  global_count.store(0, std::memory_order_relaxed);
  idle.clear();
  npidle.store(0, std::memory_order_relaxed);
  nmspinning.store(0, std::memory_order_relaxed);
  // The live count starts over: the forking ULT, if it is ours, counted as
  // made from outside (its worker may be the fork KLT, which live_ults does
  // not visit).
  foreign_created.store(mine ? 1 : 0, std::memory_order_relaxed);
  gate.store(gate.load(std::memory_order_relaxed) & kClosed, std::memory_order_relaxed);
  foreign_wakers.store(0, std::memory_order_relaxed);  // their threads do not exist here
  if (!stopped.load(std::memory_order_relaxed)) shutting_down.store(false, std::memory_order_relaxed);
  exit_when_idle = mine;

  if (keep != nullptr) {
    Worker* w = keep;
    w->deque.reset_after_fork();
    w->run_next.store(nullptr, std::memory_order_relaxed);
    w->core_in_fork_child().yield_queue.reset();
    w->inbox_lock.reset_after_fork();
    w->inbox.reset();
    w->inbox_count.store(0, std::memory_order_relaxed);
    w->timers.reset_after_fork();
    w->core_in_fork_child().cache.list.reset();  // its descriptors were reclaimed with the rest
    w->core_in_fork_child().spinning = false;
    w->core_in_fork_child().notify_deferred = false;
    w->woken_spinning = false;
    w->in_idle_set = false;
    w->stop.store(false, std::memory_order_relaxed);
    w->wakers.store(0, std::memory_order_relaxed);
    w->core_in_fork_child().until_loop = 1;
    w->monitor_seen = 0;
    w->monitor_stalled_since = 0;
    w->tid.store(sys::gettid(), std::memory_order_relaxed);
    // Its stat file was the parent's thread's: this KLT's instead (open
    // and close are async-signal-safe; no other thread exists yet).
    if (w->stat_fd.load(std::memory_order_relaxed) >= 0) {
      w->close_stat_file();
      w->open_stat_file(w->tid.load(std::memory_order_relaxed));
    }
    w->created.store(0, std::memory_order_relaxed);
    w->exited.store(0, std::memory_order_relaxed);
    w->poller->close_after_fork();
    w->poller = make_poller(w->is_bound ? -1 : 0);
  }

  if (stopped.load(std::memory_order_relaxed) || !start_status.ok()) return;
  // Fresh workers up to the concurrency level, and a monitor.
  // As in start(): a worker must never see an active slot that is still
  // empty, so the new ones start retired and are woken once all exist.
  int act = active.load(std::memory_order_relaxed);
  active.store(n, std::memory_order_relaxed);
  absl::Status st;
  for (int i = n; i < act && st.ok(); ++i) st = start_worker(i).status();
  if (st.ok()) st = start_monitor_locked();
  if (!st.ok()) {
    // The child cannot run ULTs on other workers: say so, and make every
    // spawn report it (the forking ULT still runs on its own worker).
    sys::raw_logf("weft: in the child of fork(): %s", std::string(st.message()).c_str());
    start_status = absl::ResourceExhaustedError(absl::StrCat("after fork(): ", st.message()));
    act = nworkers.load(std::memory_order_relaxed);
    if (act == 0) return;
  }
  active.store(act, std::memory_order_release);
  for (int i = n; i < act; ++i) wake_worker(worker_at(i));
}

namespace {

using ForkFn = pid_t (*)();

ForkFn libc_fork() {
  static const ForkFn f = [] {
    void* p = dlsym(RTLD_NEXT, "fork");
    WEFT_CHECK(p != nullptr, "weft: fork not found in the C library");
    return reinterpret_cast<ForkFn>(p);
  }();
  return f;
}

Worker* get_fork_worker(Scheduler* s) {
  LockGuard<KltMutex> g(s->bound_lock);
  if (s->fork_worker != nullptr) return s->fork_worker->klt != nullptr ? s->fork_worker.get() : nullptr;
  absl::StatusOr<Worker*> w = s->start_fork_worker_locked();
  return w.ok() ? *w : nullptr;
}

}  // namespace

// fork() in a ULT: the ULT moves to its runtime's fork KLT, forks there and
// moves back to the pool (in the parent and in the child alike). A pool
// worker never spends the fork's page-table copy (milliseconds for a large
// process) with ULTs queued behind it. A bound or pinned ULT forks where
// it is; so does any ULT when the fork KLT cannot be made.
pid_t fork_from_ult(UltDesc* self) {
  Scheduler* s = self->sched;
  Worker* fw = nullptr;
  if (!self->bound && self->pin_count == 0) fw = get_fork_worker(s);
  if (fw == nullptr) return libc_fork()();
  self->home = fw;  // requeued to fw's inbox
  requeue_current(self);
  self = current_ult();
  WEFT_DCHECK(current_worker() == fw, "fork: ULT %u not on the fork KLT", self->index);
  pid_t pid = libc_fork()();
  self = current_ult();  // the same ULT, in the parent or the child
  self->home = nullptr;
  requeue_current(self);  // from a bound worker: to the pool's global queue
  return pid;
}

void exit_process_if_idle(Scheduler* s) {
  if (s->live_ults() != 0) return;
  // The last ULT of the child has returned: the process exits as it would
  // when its last thread exits. exit() runs on this ULT's stack; a Runtime
  // destroyed by it (a static one) must not wait for its own workers.
  s->exiting_process.store(true, std::memory_order_relaxed);
  exit(0);
}

}  // namespace weft::rt

// The C library's fork(), interposed (weft/runtime.h, "Fork"). Outside a
// ULT (or inside weft::blocking(), which counts as outside) it is glibc's.
extern "C" pid_t fork() noexcept {
  weft::rt::UltDesc* self = weft::rt::current_ult();
  if (self == nullptr) return weft::rt::libc_fork()();
  return weft::rt::fork_from_ult(self);
}
