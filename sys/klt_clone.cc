// sys/klt_clone.cc — the raw-clone KLT backend (see klt.h, tls.h).
//
// Creation handshake (no lost exit, no early free):
//
//   creator                                  new KLT
//   allocate Klt, stack, sigaltstack
//   lock the registry (klt.h); allocate TLS
//   block all signals
//   clone3(SETTLS=tp, PARENT_SETTID=&tid,
//          CHILD_CLEARTID=&tid)  ----------> starts with all signals blocked
//   register (tid, tp); restore its mask;    tls_thread_start, name, sigaltstack,
//   unlock the registry                        its mask, fn(arg)
//   (kernel wrote tid before clone returned) destructors (with fn's mask),
//                                            leave the registry (waits for its
//                                            lock with fn's mask),
//                                            block all signals, cleanup,
//                                            disable sigaltstack
//                                            SYS_exit: kernel stores 0 in tid
//   klt_join: futex_wait_shared(&tid) <----  and FUTEX_WAKEs it (a shared wake)
//   until tid == 0; only then free stack,
//   TLS and Klt
//
// The child never touches its Klt after exit starts, and the kernel's write
// of 0 to tid is its last access to the TCB, so freeing after tid == 0 is safe.
#include <linux/sched.h>
#include <sys/prctl.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "sys/futex.h"
#include "sys/klt.h"
#include "sys/klt_registry.h"
#include "sys/stack.h"
#include "sys/raw_syscall.h"
#include "sys/spin.h"
#include "sys/thread_stack.h"
#include "sys/tls.h"

extern "C" {
long weft_clone3(struct clone_args* args, size_t size, void (*fn)(void*), void* arg);
long weft_clone(unsigned long flags, void* stack_top, int* ptid, int* ctid, void* tls,
                void (*fn)(void*), void* arg);
}

namespace weft::sys {

struct Klt {
  KltMain fn;
  void* arg;
  void* tp;                      // TCB; its tid word is the CLEARTID futex
  Stack stack;
  AltStack alt;                  // alt.stack.base == nullptr: none
  sigset_t mask;                 // the mask the KLT runs fn with
  char name[16];
  KltNode node;                  // in the registry while it may run user code
  alignas(16) unsigned char res[512 + 64];  // struct __res_state, private per KLT
};

namespace {

constexpr unsigned long kCloneFlags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
                                      CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS |
                                      CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;

// Set once clone3 answered ENOSYS (an old kernel, or a seccomp profile that
// forbids it, as container runtimes do) or EPERM (older container seccomp
// profiles refused clone3 that way) and clone then worked; every later
// create uses clone.
std::atomic<bool> no_clone3{false};

void fill_all(sigset_t* s) { memset(s, 0xff, sizeof *s); }

// Runs on the new KLT. Never returns.
[[noreturn]] void klt_entry(void* p) {
  Klt* k = static_cast<Klt*>(p);
  tls_thread_start(k->tp, k->res);
  if (k->name[0] != '\0') raw_syscall(SYS_prctl, PR_SET_NAME, reinterpret_cast<long>(k->name));
  if (k->alt.stack.base != nullptr) altstack_install(k->alt);
  sigprocmask(SIG_SETMASK, &k->mask, nullptr);

  k->fn(k->arg);

  // User code ends with the destructors, run (as glibc does) with fn's
  // mask; then the KLT leaves the registry, waiting with that mask while a
  // walker holds the lock (klt.h).
  tls_thread_run_destructors(k->tp);
  registry_remove_self(&k->node);

  sigset_t all;
  fill_all(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);  // no handler may run on a dying TCB
  tls_thread_finish(k->tp, k->res);
  if (k->alt.stack.base != nullptr) altstack_uninstall();
  exit_thread(0);
}

// Stacks of exited KLTs, kept for the next KLTs: a fresh stack costs two
// system calls and a page fault per page the thread touches (tens of µs
// on these machines); a reused one costs nothing. glibc keeps such a cache
// for its own threads. Bounded; exact size match only.
constexpr int kStackCacheCap = 16;
// Guarded by cache_lock (a few loads and stores; spins, then yields).
SpinFlag cache_lock;
Stack cached_stacks[kStackCacheCap];
int ncached = 0;

// A cached stack of exactly `size` usable bytes and `guard` bytes of guard.
bool take_cached(size_t size, size_t guard, Stack* out) {
  if (stack_test_mmap_failures_pending()) return false;  // fault injection reaches klt_create
  size = round_to_pages(size);
  guard = round_to_pages(guard);
  SysLockGuard<SpinFlag> g(cache_lock);
  for (int i = 0; i < ncached; ++i) {
    if (cached_stacks[i].size() == size && cached_stacks[i].guard_size == guard) {
      *out = cached_stacks[i];
      cached_stacks[i] = cached_stacks[--ncached];
      return true;
    }
  }
  return false;
}

void release_or_cache(Stack* s) {
  if (s->base == nullptr) return;
  {
    SysLockGuard<SpinFlag> g(cache_lock);
    if (ncached < kStackCacheCap) {
      cached_stacks[ncached++] = *s;
      *s = Stack{};
      return;
    }
  }
  // A failed munmap (vm.max_map_count) leaves address space, not memory:
  // stack_release has decommitted the pages.
  (void)stack_release(s);
}

void free_parts(Klt* k) {
  if (k->tp) tls_release(k->tp);
  release_or_cache(&k->alt.stack);
  release_or_cache(&k->stack);
  free(k);
}

}  // namespace

const char* klt_backend_name() { return "clone"; }

bool klt_glibc_knows_threads() { return false; }

SpinFlag& klt_stack_cache_lock_for_test() { return cache_lock; }

bool klt_uses_clone3() { return !no_clone3.load(std::memory_order_relaxed); }

int klt_backend_init(const char** what) {
  if (int r = tls_init(what); r != 0) return r;
  return thread_stack_init(what);
}

int klt_create(KltMain fn, void* arg, const KltOptions& opts, Klt** out, const char** what) {
  static_assert(sizeof(Klt::res) >= 568, "struct __res_state must fit");
  if (int r = klt_backend_init(what); r != 0) return r;
  if (tls_resolver_state_size() > sizeof(Klt::res)) {
    if (what) *what = "struct __res_state is larger than expected";
    return -ENOTSUP;
  }
  void* mem = calloc(1, sizeof(Klt));
  if (mem == nullptr) {
    if (what) *what = "out of memory for the KLT descriptor";
    return -ENOMEM;
  }
  Klt* k = new (mem) Klt{};
  k->fn = fn;
  k->arg = arg;
  if (opts.name) {
    strncpy(k->name, opts.name, sizeof k->name - 1);
  }
  if (!take_cached(opts.stack_size, opts.guard_size, &k->stack)) {
    if (int r = stack_allocate(opts.stack_size, opts.guard_size, &k->stack, what); r != 0) {
      free_parts(k);
      return r;
    }
  }
  if (opts.altstack_size > 0 && !take_cached(altstack_size(opts.altstack_size), page_size(), &k->alt.stack)) {
    if (int r = altstack_allocate(opts.altstack_size, &k->alt); r != 0) {
      if (what) *what = "mmap of the KLT's signal stack failed";
      free_parts(k);
      return r;
    }
  }
  // From the TLS allocation to the registration the registry lock is held:
  // a walker (dl_tls.cc) that runs after glibc registered a new module
  // either finds this KLT registered, or this KLT's TLS was allocated after
  // the module existed (glibc initialised it). Taken before all signals are
  // blocked: a holder may be waiting for this thread's signal handlers.
  SysLockGuard<SysMutex> reg(registry_mutex());
  k->tp = tls_allocate();
  if (k->tp == nullptr) {
    if (what) *what = "out of memory for the KLT's TLS block";
    free_parts(k);
    return -ENOMEM;
  }
  std::atomic<uint32_t>* tid = tls_tid_word(k->tp);
  // glibc's view of the KLT's stack (alloca cutoff, pthread_getattr_np).
  thread_stack_set_for(k->tp, k->stack.lo(), k->stack.size());

  sigset_t all, old;
  fill_all(&all);
  sigprocmask(SIG_SETMASK, &all, &old);
  if (opts.sigmask) {
    k->mask = *opts.sigmask;
  } else {
    k->mask = old;
  }
  sigdelset(&k->mask, kAllKltsSignal);  // klt_syscall_all must reach it

  long r = -ENOSYS;
  bool tried_clone3 = false;
  const char* failure = nullptr;
  if (!no_clone3.load(std::memory_order_relaxed)) {
    clone_args ca{};
    ca.flags = kCloneFlags;
    ca.child_tid = reinterpret_cast<uint64_t>(tid);
    ca.parent_tid = reinterpret_cast<uint64_t>(tid);
    ca.stack = reinterpret_cast<uint64_t>(k->stack.lo());
    ca.stack_size = k->stack.size();
    ca.tls = reinterpret_cast<uint64_t>(k->tp);
    r = weft_clone3(&ca, CLONE_ARGS_SIZE_VER0, klt_entry, k);
    tried_clone3 = true;
  }
  if (r == -ENOSYS || r == -EPERM) {
    long r3 = r;
    r = weft_clone(kCloneFlags, k->stack.hi(), reinterpret_cast<int*>(tid),
                   reinterpret_cast<int*>(tid), k->tp, klt_entry, k);
    // clone worked where clone3 did not: a kernel or a seccomp profile
    // without clone3. Remember it (an EPERM that clone shares is a real
    // refusal and is reported below).
    if (r >= 0 && tried_clone3) no_clone3.store(true, std::memory_order_relaxed);
    if (r == -EPERM && r3 == -EPERM) {
      failure = "clone3 and clone were refused with EPERM (a seccomp profile or security module "
              "forbids creating threads)";
    }
  }
  if (r >= 0) {
    k->node.klt = k;
    k->node.tp = k->tp;
    k->node.tid = static_cast<int>(tid->load(std::memory_order_relaxed));  // CLONE_PARENT_SETTID
    registry_add_locked(&k->node);
  }
  sigprocmask(SIG_SETMASK, &old, nullptr);

  if (r < 0) {
    if (failure == nullptr) {
      failure = r == -EAGAIN ? "clone failed: too many threads (RLIMIT_NPROC or kernel.threads-max)"
                : r == -EPERM ? "clone failed with EPERM (a seccomp profile or security module forbids it)"
                              : "clone failed";
    }
    if (what) *what = failure;
    free_parts(k);
    return static_cast<int>(r);
  }
  *out = k;
  return 0;
}

int klt_join(Klt* k) {
  std::atomic<uint32_t>* tid = tls_tid_word(k->tp);
  for (;;) {
    uint32_t t = tid->load(std::memory_order_acquire);
    if (t == 0) break;
    futex_wait_shared(tid, t, nullptr);  // CHILD_CLEARTID wakes with a shared wake
  }
  free_parts(k);
  return 0;
}

// Lock order: dl_tls's dlopen lock -> registry (klt_create) -> stack cache
// -> TLS heritage.
void klt_atfork_prepare() {
  dl_atfork_prepare();
  registry_atfork_prepare();
  cache_lock.lock();
  tls_atfork_prepare();
}

void klt_atfork_parent() {
  tls_atfork_parent();
  cache_lock.unlock();
  registry_atfork_parent();
  dl_atfork_parent();
}

void klt_atfork_child() {
  tls_atfork_child();
  new (&cache_lock) SpinFlag();
  registry_atfork_child();
  dl_atfork_child();
}

int klt_forget_after_fork(Klt* k) {
  // The kernel will never clear this word in the child; nobody waits on it.
  tls_tid_word(k->tp)->store(0, std::memory_order_relaxed);
  free_parts(k);
  return 0;
}

int klt_tid(Klt* k) { return static_cast<int>(tls_tid_word(k->tp)->load(std::memory_order_relaxed)); }

}  // namespace weft::sys
