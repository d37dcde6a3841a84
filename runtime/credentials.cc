// runtime/credentials.cc — setuid and the rest reach every kernel thread.
//
// Linux keeps credentials per thread. glibc's set*id and setgroups change
// them on every thread glibc made (its SIGSETXID broadcast), but weft's
// raw-clone KLTs are not among those: a process that dropped privileges in
// a ULT would keep its other workers, its monitor and its spare KLTs
// running as root. weft exports the nine functions glibc broadcasts; each
//
//   1. holds the KLT registry lock (sys/klt.h): no KLT starts or ends until
//      the change is everywhere, so none is missed, and none is cloned from
//      a thread that still has the old credentials;
//   2. calls glibc's function, which changes the calling thread and every
//      thread glibc knows (the main thread, pthreads, weft's helper
//      threads); if it fails (EPERM, EINVAL), nothing changed anywhere and
//      its result and errno are returned as they are;
//   3. makes every other registered KLT make the same raw system call
//      (klt_syscall_all_locked: a directed signal; each call is absolute,
//      so repeating it on the caller would be harmless too).
//
// If step 3 fails on some KLT (the same call that just succeeded for the
// caller — which with equal credentials cannot happen — or a KLT that
// blocks weft's signal and never answers), the process's threads disagree
// about who they are: weft reports which KLT and aborts, as glibc does
// when its own broadcast fails (nptl/nptl_setxid.c). A half-dropped
// privilege must never go on running.
//
// On the pthread backend glibc made every KLT and reaches it itself; step 3
// is a no-op there.
#include <dlfcn.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "runtime/libc_next.h"
#include "sys/klt.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"

namespace weft::rt {
namespace {

constexpr int kTimeoutMs = 5000;  // a KLT that blocks kAllKltsSignal

template <class F>
F next(const char* name) {
  return libc_next<F>(name);
}

// The glibc call `call` (its result and errno are returned), then the raw
// system call nr(a0, a1, a2) on every other KLT.
template <class Call>
int change(const char* what, Call call, long nr, long a0, long a1 = 0, long a2 = 0) {
  sys::KltRegistryLock lock;
  int r = call();
  if (r != 0) return r;
  int saved = errno;
  const long args[6] = {a0, a1, a2, 0, 0, 0};
  sys::KltSyscallFailure f;
  if (sys::klt_syscall_all_locked(nr, args, kTimeoutMs, &f) != 0) {
    if (f.result == -ETIMEDOUT) {
      sys::raw_logf("weft: %s succeeded on the calling thread but kernel thread %d did not make the change "
                    "within %d ms (it blocks signal %d, which weft reserves); its credentials would differ "
                    "from the others': aborting",
                    what, f.tid, kTimeoutMs, sys::kAllKltsSignal);
    } else {
      sys::raw_logf("weft: %s succeeded on the calling thread but failed on kernel thread %d (errno %ld; %d "
                    "threads failed); the process's threads would have different credentials: aborting",
                    what, f.tid, -f.result, f.failed);
    }
    abort();
  }
  errno = saved;
  return 0;
}

long id(unsigned v) { return static_cast<long>(static_cast<int>(v)); }  // -1 stays -1

}  // namespace

void credentials_linked() {}

}  // namespace weft::rt

extern "C" {

using weft::rt::change;
using weft::rt::id;
using weft::rt::next;

int setuid(uid_t u) noexcept {
  static auto f = next<int (*)(uid_t)>("setuid");
  return change("setuid", [&] { return f(u); }, SYS_setuid, id(u));
}

int setgid(gid_t g) noexcept {
  static auto f = next<int (*)(gid_t)>("setgid");
  return change("setgid", [&] { return f(g); }, SYS_setgid, id(g));
}

// glibc implements seteuid/setegid with setresuid/setresgid(-1, e, -1).
int seteuid(uid_t u) noexcept {
  static auto f = next<int (*)(uid_t)>("seteuid");
  return change("seteuid", [&] { return f(u); }, SYS_setresuid, -1, id(u), -1);
}

int setegid(gid_t g) noexcept {
  static auto f = next<int (*)(gid_t)>("setegid");
  return change("setegid", [&] { return f(g); }, SYS_setresgid, -1, id(g), -1);
}

int setreuid(uid_t r, uid_t e) noexcept {
  static auto f = next<int (*)(uid_t, uid_t)>("setreuid");
  return change("setreuid", [&] { return f(r, e); }, SYS_setreuid, id(r), id(e));
}

int setregid(gid_t r, gid_t e) noexcept {
  static auto f = next<int (*)(gid_t, gid_t)>("setregid");
  return change("setregid", [&] { return f(r, e); }, SYS_setregid, id(r), id(e));
}

int setresuid(uid_t r, uid_t e, uid_t s) noexcept {
  static auto f = next<int (*)(uid_t, uid_t, uid_t)>("setresuid");
  return change("setresuid", [&] { return f(r, e, s); }, SYS_setresuid, id(r), id(e), id(s));
}

int setresgid(gid_t r, gid_t e, gid_t s) noexcept {
  static auto f = next<int (*)(gid_t, gid_t, gid_t)>("setresgid");
  return change("setresgid", [&] { return f(r, e, s); }, SYS_setresgid, id(r), id(e), id(s));
}

int setgroups(size_t n, const gid_t* list) noexcept {
  static auto f = next<int (*)(size_t, const gid_t*)>("setgroups");
  return change("setgroups", [&] { return f(n, list); }, SYS_setgroups, static_cast<long>(n),
                reinterpret_cast<long>(list));
}

}  // extern "C"
