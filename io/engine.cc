// io/engine.cc — what every io engine shares: setup retries, the wake word,
// the cross-worker cancel queue (io::close's requests), the engine
// registry and per-fd in-flight counts.
#include "io/engine.h"

#include <sys/eventfd.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#include "io/offload.h"
#include "runtime/fork.h"
#include "runtime/log.h"
#include "sys/futex.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"

namespace weft::io_internal {

namespace {
// Fork (runtime/fork.cc): the registry is consistent in the child because
// its lock is held across the fork; the child empties it (the parent's
// engines are not used there; the kept worker's new engine registers when
// it sets up).
// Lock order: the registry, then each engine's request queue (post_cancel).
void registry_fork_prepare() {
  registry_lock().lock();
  for (Engine* e : registry()) e->fork_lock_requests();
}
void registry_fork_parent() {
  for (Engine* e : registry()) e->fork_unlock_requests();
  registry_lock().unlock();
}
void registry_fork_child() {
  registry_lock().reset_after_fork();
  for (Engine* e : registry()) e->fork_reset_request_lock();
  registry().clear();
  fd_ops_reset_after_fork();
}
}  // namespace

void register_fork_hooks() {
  rt::ForkHooks h;
  h.prepare = [] {
    registry_fork_prepare();
    resolve_fork_prepare();
    offload_fork_prepare();
  };
  h.parent = [] {
    offload_fork_parent();
    resolve_fork_parent();
    registry_fork_parent();
  };
  h.child = [] {
    registry_fork_child();
    resolve_fork_child();
    offload_fork_child();
  };
  rt::register_fork_hooks(h);
}

rt::KltMutex& registry_lock() {
  static rt::KltMutex* m = new rt::KltMutex();
  return *m;
}

std::vector<Engine*>& registry() {
  static std::vector<Engine*>* v = new std::vector<Engine*>();
  return *v;
}

void register_engine(Engine* e) {
  rt::LockGuard<rt::KltMutex> g(registry_lock());
  registry().push_back(e);
}

void unregister_engine(Engine* e) {
  rt::LockGuard<rt::KltMutex> g(registry_lock());
  auto& v = registry();
  v.erase(std::remove(v.begin(), v.end(), e), v.end());
}

Engine::~Engine() {
  unregister_engine(this);
  if (int efd = eventfd_.load(std::memory_order_relaxed); efd >= 0) sys::raw_syscall(SYS_close, efd);
  for (CloseRequest* r : take_requests()) close_request_ack(r);
}

bool Engine::setup_failed(const char* what, int err) {
  state_ = State::kFailed;
  backoff_ns_ = backoff_ns_ == 0 ? kRetryMinNs : std::min(backoff_ns_ * 2, kRetryMaxNs);
  retry_at_ns_ = rt::monotonic_ns() + backoff_ns_;
  if (failures_++ == 0) {
    sys::raw_logf("weft: %s failed on a worker (%s); its io runs as blocking calls until a retry succeeds "
                  "(retried at its next io, backing off up to 1 s)",
                  what, strerror(err));
  } else {
    rt::log().debug("{} failed again on a worker ({}), attempt {}", what, strerror(err), failures_);
  }
  return false;
}

bool Engine::setup_succeeded(const char* what, const char* again) {
  state_ = State::kReady;
  if (failures_ != 0) {
    sys::raw_logf("weft: %s succeeded on a worker after %u failed attempts; its io uses %s again", what, failures_,
                  again);
  }
  failures_ = 0;
  backoff_ns_ = 0;
  register_engine(this);
  return true;
}

long Engine::open_eventfd() {
  long fd = sys::raw_syscall(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!sys::is_error(fd)) eventfd_.store(static_cast<int>(fd), std::memory_order_relaxed);
  return fd;
}

void Engine::close_eventfd_after_fork() {
  if (int efd = eventfd_.load(std::memory_order_relaxed); efd >= 0) sys::raw_syscall(SYS_close, efd);
  eventfd_.store(-1, std::memory_order_relaxed);
}

void Engine::wait(int64_t deadline_ns) {
  if (!ready()) {  // not set up: sleep on the word like FutexPoller
    rt::futex_word_wait(&word_, deadline_ns);
    if (has_requests()) process_requests();
    return;
  }
  if (word_.exchange(2, std::memory_order_acq_rel) == 1) {  // woken before we slept
    word_.exchange(0, std::memory_order_acq_rel);
    poll();
    return;
  }
  sleep_until(deadline_ns);
}

void Engine::wake() {
  if (word_.exchange(1, std::memory_order_acq_rel) != 2) return;
  if (int efd = eventfd_.load(std::memory_order_relaxed); efd >= 0) {
    uint64_t one = 1;
    sys::raw_syscall(SYS_write, efd, reinterpret_cast<long>(&one), sizeof one);
  } else {
    sys::futex_wake(&word_, 1);  // reaches the ring's armed FUTEX_WAIT, or a plain futex_word_wait
  }
}

void close_request_unref(CloseRequest* r) {
  if (r->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete r;
}

void close_request_ack(CloseRequest* r) {
  uint32_t prev = r->state.fetch_sub(1, std::memory_order_acq_rel);
  WEFT_DCHECK((prev & ~CloseRequest::kAbandoned) != 0, "close request for fd %d acknowledged once too often", r->fd);
  if (prev == (CloseRequest::kAbandoned | 1)) {
    // The closer stopped waiting and this was the last engine with
    // operations on fd: they are cancelled (a ring's SQEs for fd went to
    // the kernel, in order, before its cancel), so the number may go now.
    sys::raw_syscall(SYS_close, r->fd);
  }
  r->acked.count_down();
  close_request_unref(r);
}

void Engine::post_cancel(CloseRequest* r) {
  {
    rt::LockGuard<rt::KltMutex> g(req_lock_);
    requests_.push_back(r);
    has_requests_.store(true, std::memory_order_release);
  }
  wake();
}

std::vector<CloseRequest*> Engine::take_requests() {
  std::vector<CloseRequest*> out;
  rt::LockGuard<rt::KltMutex> g(req_lock_);
  out.swap(requests_);
  if (op_cancels_.empty()) has_requests_.store(false, std::memory_order_relaxed);
  return out;
}

void Engine::post_op_cancel(void* op) {
  {
    rt::LockGuard<rt::KltMutex> g(req_lock_);
    op_cancels_.push_back(op);
    has_requests_.store(true, std::memory_order_release);
  }
  wake();
}

std::vector<void*> Engine::take_op_cancels() {
  std::vector<void*> out;
  rt::LockGuard<rt::KltMutex> g(req_lock_);
  out.swap(op_cancels_);
  if (requests_.empty()) has_requests_.store(false, std::memory_order_relaxed);
  return out;
}

namespace {
// One counter per fd, in lazily committed memory (4 MiB of address space).
std::atomic<uint32_t>* fd_counters() {
  static std::atomic<uint32_t>* counters = [] {
    long m = sys::raw_syscall(SYS_mmap, 0, kMaxTrackedFd * sizeof(std::atomic<uint32_t>), PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return sys::is_error(m) ? nullptr : reinterpret_cast<std::atomic<uint32_t>*>(m);
  }();
  return counters;
}
}  // namespace

void fd_ops_reset_after_fork() {
  // No operation is in flight in a fresh child: zero every counter
  // (private anonymous memory reads as zero after MADV_DONTNEED).
  if (std::atomic<uint32_t>* c = fd_counters())
    sys::raw_syscall(SYS_madvise, reinterpret_cast<long>(c), kMaxTrackedFd * sizeof(std::atomic<uint32_t>),
                     MADV_DONTNEED);
}

void fd_ops_add(int fd, int delta) {
  if (fd < 0 || fd >= kMaxTrackedFd) return;
  if (std::atomic<uint32_t>* c = fd_counters()) c[fd].fetch_add(static_cast<uint32_t>(delta), std::memory_order_acq_rel);
}

bool fd_maybe_busy(int fd) {
  if (fd < 0) return false;
  std::atomic<uint32_t>* c = fd_counters();
  if (fd >= kMaxTrackedFd || c == nullptr) return true;
  return c[fd].load(std::memory_order_acquire) != 0;
}

}  // namespace weft::io_internal
