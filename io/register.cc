// io/register.cc — picks the io backend and makes it every worker's Poller.
//
// The choice is made once per process, at the first Runtime: WEFT_IO=epoll
// forces epoll; WEFT_IO=uring forces io_uring and aborts with the reason if
// it cannot be set up; otherwise a probe ring decides (ENOSYS: no io_uring
// in this kernel; EPERM: a seccomp profile or kernel.io_uring_disabled).
// Other probe failures (EMFILE, ENFILE, ENOMEM, ...) come from the kernel
// after it accepted the call, so io_uring is there: they are a shortage of
// the moment and must not decide the process's backend for good; the
// workers' own setup retries (uring_engine.h). WEFT_IO is read with
// secure_getenv: a set-user-ID program ignores it.
#include <liburing.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "io/epoll_engine.h"
#include "io/uring_engine.h"
#include "runtime/log.h"
#include "sys/raw_log.h"
#include "weft/io.h"

namespace weft::io_internal {
namespace {

struct Choice {
  bool uring = false;
  std::string reason;
};

std::string disabled_sysctl() {
  FILE* f = fopen("/proc/sys/kernel/io_uring_disabled", "re");
  if (f == nullptr) return "";
  int v = 0;
  bool ok = fscanf(f, "%d", &v) == 1;
  fclose(f);
  return ok && v != 0 ? " (kernel.io_uring_disabled=" + std::to_string(v) + ")" : "";
}

Choice decide() {
  const char* env = secure_getenv("WEFT_IO");
  std::string forced = env != nullptr ? env : "";
  if (forced == "epoll") return {false, "WEFT_IO=epoll"};
  if (!forced.empty() && forced != "uring") {
    sys::raw_logf("weft: WEFT_IO=%s is not one of uring, epoll", forced.c_str());
    abort();
  }
  io_uring probe;
  int r = io_uring_queue_init(4, &probe, 0);
  if (r == 0) {
    io_uring_queue_exit(&probe);
    return {true, forced == "uring" ? "WEFT_IO=uring" : "io_uring available"};
  }
  if (r != -ENOSYS && r != -EPERM && r != -EACCES && r != -EINVAL) {
    // The kernel got past its permission checks: io_uring is available,
    // the probe just ran short of something (a descriptor, memory).
    return {true, std::string(forced == "uring" ? "WEFT_IO=uring" : "io_uring available") + " (probe: " +
                      strerror(-r) + ", transient)"};
  }
  std::string why = std::string("io_uring_setup: ") + strerror(-r);
  if (r == -ENOSYS) why += " (kernel without io_uring)";
  if (r == -EPERM || r == -EACCES) why += " (seccomp profile or kernel.io_uring_disabled)" + disabled_sysctl();
  if (forced == "uring") {
    sys::raw_logf("weft: WEFT_IO=uring but %s", why.c_str());
    abort();
  }
  return {false, why + ": using epoll"};
}

const Choice& choice() {
  static const Choice c = [] {
    Choice d = decide();
    rt::log().info("io backend: {} ({})", d.uring ? "io_uring" : "epoll", d.reason);
    return d;
  }();
  return c;
}

std::unique_ptr<rt::Poller> make_engine(int, void*) {
  if (choice().uring) return make_uring_engine();
  return make_epoll_engine();
}

}  // namespace

std::unique_ptr<rt::Poller> make_uring_engine() { return std::make_unique<UringEngine>(); }
std::unique_ptr<rt::Poller> make_epoll_engine() { return std::make_unique<EpollEngine>(); }

void register_engines() {
  rt::register_poller_factory(&make_engine, nullptr);
  register_fork_hooks();
}

}  // namespace weft::io_internal

namespace weft::io {
const char* default_backend() { return io_internal::choice().uring ? "io_uring" : "epoll"; }
const char* default_backend_reason() { return io_internal::choice().reason.c_str(); }
}  // namespace weft::io
