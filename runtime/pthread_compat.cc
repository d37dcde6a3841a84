// runtime/pthread_compat.cc — pthread_exit and pthread_cancel on ULTs.
//
// glibc's pthread_exit and cancellation unwind the calling *kernel
// thread* to glibc's thread start frame and end it. Called in a ULT that
// would unwind the ULT's stack into nothing (a raw KLT has no glibc start
// frame: on 15df0bc the process died of a silent SIGSEGV), or, on the
// pthread backend, end a worker. libweft therefore exports both (issue 9
// #16):
//
//   pthread_exit(v)  in a ULT (also inside weft::blocking): ends the ULT as
//                    it would end a thread — forced unwinding of the ULT's
//                    stack runs C++ destructors and pthread_cleanup_push
//                    handlers (C++, or C built with -fexceptions), and a
//                    catch (...) block sees abi::__forced_unwind, which it
//                    must rethrow; then ULT-local values are destroyed and
//                    the ULT exits; Ult::join() returns OK and
//                    Ult::exit_value() returns v. thread_local destructors
//                    do not run: thread_locals belong to the kernel thread
//                    (a bound ULT's kernel thread ends with it, and runs
//                    them then). On a weft kernel thread outside a ULT
//                    (a scheduler loop): refused, abort with a message. On
//                    any other thread: glibc's pthread_exit.
//   pthread_cancel(t) where t is a weft kernel thread (the pthread_self()
//                    of any ULT, a worker, the monitor): refused, returns
//                    ENOTSUP after a message naming the calling ULT (if
//                    any) and the target's tid; ULTs cannot be cancelled
//                    (weft has no cancellation points): end them with a
//                    flag of your own or with pthread_exit. Any other
//                    thread: glibc's pthread_cancel, from a ULT too.
//
// Link modes. With the shared library, libweft.so comes before libc.so in
// the lookup order, so every call in the process reaches these. With the
// static library the executable's own calls reach them (the linker takes
// this object from libweft.a for them); calls made by shared libraries do
// only if the executable exports the symbols (-rdynamic, or
// -Wl,--export-dynamic-symbol=pthread_exit,--export-dynamic-symbol=pthread_cancel).
#include <dlfcn.h>
#include <locale.h>
#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>

#include "runtime/scheduler.h"
#include "runtime/thread_compat.h"
#include "sys/klt.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"

namespace weft::rt {
namespace {

using PthreadExitFn = void (*)(void*);
using PthreadCancelFn = int (*)(pthread_t);

template <class Fn>
Fn glibc(const char* name) {
  static std::atomic<void*> cached{nullptr};  // one per instantiation (Fn)
  void* f = cached.load(std::memory_order_acquire);
  if (f == nullptr) {
    f = dlsym(RTLD_NEXT, name);
    if (f == nullptr) {
      sys::raw_logf("weft: cannot find glibc's %s (dlsym RTLD_NEXT failed)", name);
      abort();
    }
    cached.store(f, std::memory_order_release);
  }
  return reinterpret_cast<Fn>(f);
}

// The ULT running on this KLT, also inside a weft::blocking() region (where
// the worker's `current` is null but the code is still the ULT's).
UltDesc* calling_ult(Worker* w) {
  if (w == nullptr) return nullptr;
  UltDesc* u = w->current.load(std::memory_order_relaxed);
  if (u == nullptr && w->in_blocking.load(std::memory_order_relaxed)) u = w->blocking_ult;
  return u;
}

struct Lookup {
  void* tp;
  int tid = 0;
};

// The tid of the weft KLT whose TCB (pthread_t) is `t`, or 0.
int weft_klt_tid(pthread_t t) {
  Lookup l{reinterpret_cast<void*>(t)};
  sys::KltRegistryLock lock;
  sys::klt_for_each_locked(
      [](const sys::KltInfo& k, void* arg) {
        auto* l = static_cast<Lookup*>(arg);
        if (k.tp == l->tp) l->tid = k.tid;
      },
      &l);
  return l.tid;
}

using UselocaleFn = locale_t (*)(locale_t);

}  // namespace

thread_local locale_t t_klt_locale __attribute__((tls_model("initial-exec"))) = nullptr;

void switch_klt_locale(locale_t l) {
  glibc<UselocaleFn>("uselocale")(l == nullptr ? LC_GLOBAL_LOCALE : l);
  t_klt_locale = l;
}

}  // namespace weft::rt

extern "C" {

// uselocale in a ULT: the ULT's locale (thread_compat.h); elsewhere glibc's.
__attribute__((visibility("default"))) locale_t uselocale(locale_t l) {
  using namespace weft;
  locale_t old = rt::glibc<rt::UselocaleFn>("uselocale")(l);
  if (l != nullptr) {
    if (rt::UltDesc* self = rt::calling_ult(rt::current_worker())) {
      locale_t mine = l == LC_GLOBAL_LOCALE ? nullptr : l;
      self->locale = mine;
      rt::t_klt_locale = mine;
    }
  }
  return old;
}

__attribute__((visibility("default"))) void pthread_exit(void* value) {
  using namespace weft;
  rt::Worker* w = rt::current_worker();
  if (rt::UltDesc* self = rt::calling_ult(w)) rt::unwind_and_exit(self, value);
  if (w != nullptr || rt::weft_klt_tid(pthread_self()) != 0) {
    if (!sys::klt_glibc_knows_threads() || w != nullptr) {
      sys::raw_logf("weft: pthread_exit() called on weft kernel thread %d outside a ULT (its scheduler "
                    "or a raw KLT): refused",
                    sys::gettid());
      abort();
    }
  }
  rt::glibc<rt::PthreadExitFn>("pthread_exit")(value);
  __builtin_unreachable();
}

__attribute__((visibility("default"))) int pthread_cancel(pthread_t t) {
  using namespace weft;
  rt::Worker* w = rt::current_worker();
  rt::UltDesc* self = rt::calling_ult(w);
  int tid = 0;
  if ((w != nullptr && t == pthread_self()) || (tid = rt::weft_klt_tid(t)) != 0) {
    if (tid == 0) tid = sys::gettid();
    if (self != nullptr) {
      sys::raw_logf("weft: pthread_cancel() called by ULT %u.%u \"%s\" on weft kernel thread %d refused: "
                    "ULTs cannot be cancelled (end the ULT with a flag of your own or pthread_exit)",
                    self->index, self->generation.load(std::memory_order_relaxed), self->name, tid);
    } else {
      sys::raw_logf("weft: pthread_cancel() of weft kernel thread %d refused: it runs ULTs, which "
                    "cannot be cancelled",
                    tid);
    }
    return ENOTSUP;
  }
  return rt::glibc<rt::PthreadCancelFn>("pthread_cancel")(t);
}

}  // extern "C"
