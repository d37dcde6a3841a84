// sys/klt_pthread.cc — the pthread KLT backend, for sanitizer builds.
//
// Same contract as the clone backend (klt.h). The stack is weft's own
// (sys/stack.h, so a stack that cannot be mapped is -ENOMEM as promised,
// not glibc's EAGAIN); glibc allocates the TLS. The tid is published by the
// new thread; klt_tid waits for it, and reads 0 once the thread has exited.
#include <pthread.h>
#include <sys/prctl.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>

#include "sys/futex.h"
#include "sys/klt.h"
#include "sys/klt_registry.h"
#include "sys/thread_stack.h"
#include "sys/stack.h"
#include "sys/raw_syscall.h"

namespace weft::sys {

struct Klt {
  KltMain fn;
  void* arg;
  pthread_t thread;
  std::atomic<uint32_t> tid{0};     // 0 until the thread has published gettid()
  std::atomic<uint32_t> exited{0};  // 1 once fn has returned and the thread is leaving
  Stack stack;
  AltStack alt;
  sigset_t mask;
  char name[16];
  KltNode node;  // registered by the thread itself, before fn (klt.h)
};

namespace {

void* klt_entry(void* p) {
  Klt* k = static_cast<Klt*>(p);
  k->tid.store(static_cast<uint32_t>(gettid()), std::memory_order_release);
  futex_wake(&k->tid, 1 << 30);
  if (k->name[0] != '\0') raw_syscall(SYS_prctl, PR_SET_NAME, reinterpret_cast<long>(k->name));
  if (k->alt.stack.base != nullptr) altstack_install(k->alt);
  {
    SysLockGuard<SysMutex> g(registry_mutex());
    k->node.klt = k;
    k->node.tp = reinterpret_cast<void*>(pthread_self());
    k->node.tid = static_cast<int>(k->tid.load(std::memory_order_relaxed));
    registry_add_locked(&k->node);
  }
  // Masks through glibc, never the raw system call: glibc's wrapper leaves
  // its own signals (SIGCANCEL, SIGSETXID) unblocked, and its set*id
  // broadcast waits for every thread it made, this one too, also while it
  // exits (tests/sys_klt_test.cc, GlibcSetxidBroadcast...).
  ::pthread_sigmask(SIG_SETMASK, &k->mask, nullptr);
#if defined(__SANITIZE_THREAD__)
  futex_unbounded_waits_on_this_thread();
#endif
  k->fn(k->arg);
  registry_remove_self(&k->node);  // glibc runs the destructors after this
  sigset_t all;
  memset(&all, 0xff, sizeof all);
  ::pthread_sigmask(SIG_SETMASK, &all, nullptr);
  if (k->alt.stack.base != nullptr) altstack_uninstall();
  k->exited.store(1, std::memory_order_release);
  return nullptr;
}

}  // namespace

const char* klt_backend_name() { return "pthread"; }

bool klt_glibc_knows_threads() { return true; }

bool klt_uses_clone3() { return false; }

int klt_backend_init(const char** what) { return thread_stack_init(what); }

int klt_create(KltMain fn, void* arg, const KltOptions& opts, Klt** out, const char** what) {
  Klt* k = new (std::nothrow) Klt{};
  if (k == nullptr) {
    if (what) *what = "out of memory for the KLT descriptor";
    return -ENOMEM;
  }
  k->fn = fn;
  k->arg = arg;
  if (opts.name) strncpy(k->name, opts.name, sizeof k->name - 1);
  if (opts.altstack_size > 0) {
    if (int r = altstack_allocate(opts.altstack_size, &k->alt); r != 0) {
      if (what) *what = "mmap of the KLT's signal stack failed";
      delete k;
      return r;
    }
  }
  // glibc puts its TCB and static TLS at the top of a user stack: add room.
  // Sanitizer runtimes want much more (TSan asks for about 900 KiB).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr size_t kExtra = 4 << 20;
#else
  constexpr size_t kExtra = 64 * 1024;
#endif
  size_t size = round_to_pages(opts.stack_size < 65536 ? 65536 : opts.stack_size) + kExtra;
  if (int r = stack_allocate(size, opts.guard_size, &k->stack, what); r != 0) {
    (void)altstack_release(&k->alt);
    delete k;
    return r;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstack(&attr, k->stack.lo(), k->stack.size());

  sigset_t all, old;
  memset(&all, 0xff, sizeof all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  k->mask = opts.sigmask ? *opts.sigmask : old;
  sigdelset(&k->mask, kAllKltsSignal);  // klt_syscall_all must reach it
  int r = pthread_create(&k->thread, &attr, klt_entry, k);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
  if (r != 0) {
    if (what) *what = r == EAGAIN ? "pthread_create failed: too many threads (RLIMIT_NPROC or kernel.threads-max)" : "pthread_create failed";
    (void)altstack_release(&k->alt);
    (void)stack_release(&k->stack);
    delete k;
    return -r;
  }
  *out = k;
  return 0;
}

int klt_join(Klt* k) {
  pthread_join(k->thread, nullptr);
  (void)altstack_release(&k->alt);
  (void)stack_release(&k->stack);
  delete k;
  return 0;
}

// glibc itself resets its locks around fork and forgets the parent's
// threads in the child; this backend's own lock is the registry's.
void klt_atfork_prepare() { registry_atfork_prepare(); }
void klt_atfork_parent() { registry_atfork_parent(); }
void klt_atfork_child() { registry_atfork_child(); }

int klt_forget_after_fork(Klt* k) {
  // glibc's child has already dropped the thread from its lists (its stack
  // is ours: a user stack); no pthread_join or detach on a thread that does
  // not exist.
  (void)altstack_release(&k->alt);
  (void)stack_release(&k->stack);
  delete k;
  return 0;
}

int klt_tid(Klt* k) {
  for (;;) {
    if (k->exited.load(std::memory_order_acquire)) return 0;
    uint32_t t = k->tid.load(std::memory_order_acquire);
    if (t != 0) return static_cast<int>(t);
    futex_wait(&k->tid, 0);
  }
}

}  // namespace weft::sys
