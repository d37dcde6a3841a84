// hook/hook.cc — what libweft-hook's interposers share (hook_internal.h):
// the on/off switch, glibc's next definitions, the errno store, socket
// timeouts as deadlines, the fd cache; and weft::hook::active().
#include "weft/hook.h"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "hook/hook_internal.h"
#include "runtime/park.h"
#include "sys/raw_log.h"

namespace weft::hook_internal {

bool g_enabled = true;

namespace {

// WEFT_HOOK=off (or 0, no, false) turns every interposer into plain
// forwarding, read once when the library is loaded. Runs before main() and
// before any ULT exists, so no call is routed before it.
__attribute__((constructor)) void read_switch() {
  const char* v = getenv("WEFT_HOOK");
  if (v == nullptr) return;
  if (strcmp(v, "off") == 0 || strcmp(v, "0") == 0 || strcmp(v, "no") == 0 || strcmp(v, "false") == 0)
    g_enabled = false;
}

}  // namespace

void* next_symbol(const char* name) {
  void* p = dlsym(RTLD_NEXT, name);
  if (p == nullptr) {
    sys::raw_logf("weft-hook: %s not found after libweft-hook (dlsym RTLD_NEXT)", name);
    abort();
  }
  return p;
}

// noinline (hook_internal.h): errno's address is computed here, after
// whatever parked, by the kernel thread running the ULT now. (glibc's
// __errno_location directly: weft/runtime.h's errno macro would do the same
// through an offset cached per shared object, which in this library's
// hidden copy would be looked up again at every call.)
__attribute__((noinline)) int fail(int e) {
  *::__errno_location() = e;
  return -1;
}

int64_t now_ns() { return rt::monotonic_ns(); }

int64_t deadline_after_ns(int64_t rel_ns) {
  int64_t now = now_ns();
  if (rel_ns <= 0) return now;
  return rel_ns > INT64_MAX - now ? INT64_MAX : now + rel_ns;
}

weft::io::Deadline socket_deadline(int fd, bool receive) {
  timeval tv{};
  socklen_t len = sizeof tv;
  if (sys(SYS_getsockopt, fd, SOL_SOCKET, receive ? SO_RCVTIMEO : SO_SNDTIMEO, arg(&tv), arg(&len)) < 0)
    return weft::io::Deadline::none();
  if (tv.tv_sec == 0 && tv.tv_usec == 0) return weft::io::Deadline::none();
  return weft::io::Deadline::in(std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec));
}

bool deadline_passed(weft::io::Deadline d) { return !d.is_none() && now_ns() >= d.ns(); }

namespace {
// One bit per descriptor: "not a regular file nor a block device".
std::atomic<uint64_t> g_stream_bits[kFdCacheSize / 64];
// One bit per descriptor: "a socket" (hook_internal.h: known_socket).
std::atomic<uint64_t> g_socket_bits[kFdCacheSize / 64];
// One bit per descriptor: "fstat'ed since its number was last forgotten"
// (a hint that only saves fstat calls: learn_fd).
std::atomic<uint64_t> g_known_bits[kFdCacheSize / 64];
}  // namespace

void learn_fd(int fd) {
  if (fd < 0 || fd >= kFdCacheSize) return;
  uint64_t bit = uint64_t{1} << (fd % 64);
  if (g_known_bits[fd / 64].load(std::memory_order_relaxed) & bit) return;
  (void)is_stream(fd);
}

bool known_socket(int fd) {
  return fd >= 0 && fd < kFdCacheSize &&
         (g_socket_bits[fd / 64].load(std::memory_order_relaxed) & (uint64_t{1} << (fd % 64))) != 0;
}

void remember_socket(int fd) {
  if (fd >= 0 && fd < kFdCacheSize) {
    g_socket_bits[fd / 64].fetch_or(uint64_t{1} << (fd % 64), std::memory_order_relaxed);
    remember_stream(fd);
  }
}

void forget_socket(int fd) {
  if (fd < 0 || fd >= kFdCacheSize) return;
  uint64_t bit = uint64_t{1} << (fd % 64);
  if (g_socket_bits[fd / 64].load(std::memory_order_relaxed) & bit)
    g_socket_bits[fd / 64].fetch_and(~bit, std::memory_order_relaxed);
}

bool is_stream(int fd, off_t* st_size_out) {
  if (fd >= 0 && fd < kFdCacheSize &&
      (g_stream_bits[fd / 64].load(std::memory_order_relaxed) & (uint64_t{1} << (fd % 64))))
    return true;
  struct stat st {};
  if (sys(SYS_fstat, fd, arg(&st)) < 0) return true;  // let the caller return what it has
  if (fd >= 0 && fd < kFdCacheSize)
    g_known_bits[fd / 64].fetch_or(uint64_t{1} << (fd % 64), std::memory_order_relaxed);
  if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
    if (st_size_out != nullptr) *st_size_out = st.st_size;
    return false;
  }
  if (S_ISSOCK(st.st_mode)) {
    remember_socket(fd);
  } else {
    remember_stream(fd);
  }
  return true;
}

void remember_stream(int fd) {
  if (fd >= 0 && fd < kFdCacheSize)
    g_stream_bits[fd / 64].fetch_or(uint64_t{1} << (fd % 64), std::memory_order_relaxed);
}

void forget_fd(int fd) {
  forget_socket(fd);
  if (fd < 0 || fd >= kFdCacheSize) return;
  if (g_known_bits[fd / 64].load(std::memory_order_relaxed) & (uint64_t{1} << (fd % 64)))
    g_known_bits[fd / 64].fetch_and(~(uint64_t{1} << (fd % 64)), std::memory_order_relaxed);
  uint64_t bit = uint64_t{1} << (fd % 64);
  if (g_stream_bits[fd / 64].load(std::memory_order_relaxed) & bit)
    g_stream_bits[fd / 64].fetch_and(~bit, std::memory_order_relaxed);
}

size_t iov_total(const iovec* iov, int cnt) {
  size_t t = 0;
  for (int i = 0; i < cnt; ++i) t += iov[i].iov_len;
  return t;
}

void advance_iov(const iovec* iov, int cnt, size_t skip, std::vector<iovec>* out) {
  out->clear();
  for (int i = 0; i < cnt; ++i) {
    if (skip >= iov[i].iov_len) {
      skip -= iov[i].iov_len;
      continue;
    }
    out->push_back(iovec{static_cast<char*>(iov[i].iov_base) + skip, iov[i].iov_len - skip});
    skip = 0;
  }
}

}  // namespace weft::hook_internal

namespace weft::hook {

namespace {
// A function of this library that nothing can interpose (hidden): its
// address says which loaded object is libweft-hook.
__attribute__((visibility("hidden"), noinline)) void self_marker() { __asm__ volatile(""); }

// Whether calls to `name` reach this library's definition: it is the first
// one in the global lookup order, or the first one is a sanitizer's
// interceptor (libasan, libtsan: they forward to the next definition,
// ours).
bool reaches_us(const char* name) {
  Dl_info self{}, first{};
  if (dladdr(reinterpret_cast<void*>(&self_marker), &self) == 0) return false;
  void* p = dlsym(RTLD_DEFAULT, name);
  if (p == nullptr || dladdr(p, &first) == 0) return false;
  if (first.dli_fbase == self.dli_fbase) return true;
  const char* f = first.dli_fname != nullptr ? first.dli_fname : "";
  return strstr(f, "libasan") != nullptr || strstr(f, "libtsan") != nullptr;
}
}  // namespace

WEFT_HOOK_EXPORT bool active() {
  if (!hook_internal::g_enabled) return false;
  // Ours must be the definitions the program's calls bind to: first in the
  // global lookup order (linked before libc, or LD_PRELOADed).
  return reaches_us("read") && reaches_us("poll") && reaches_us("nanosleep") && reaches_us("connect");
}

WEFT_HOOK_EXPORT bool enabled() { return hook_internal::g_enabled; }

}  // namespace weft::hook
