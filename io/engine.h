// io/engine.h — the per-worker io engine: a runtime Poller that also does io.
//
// Each worker's Poller is an Engine (registered by io/register.cc): a
// UringEngine (one io_uring per worker) or an EpollEngine (one epoll
// instance per worker). The runtime only sees the Poller interface; io ops
// find the calling ULT's worker's engine through current_engine().
//
// Ownership: an engine is used by its worker's KLT only (the ring is
// SINGLE_ISSUER), except wake() and post_cancel(), which any thread calls.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "runtime/locks.h"
#include "runtime/poller.h"
#include "runtime/scheduler.h"
#include "weft/sync.h"

namespace weft::io_internal {

// A request to cancel everything in flight on fd on one engine (io::close).
struct CancelRequest {
  int fd = -1;
  Latch* done = nullptr;        // counted down once the engine has cancelled
  CancelRequest* next = nullptr;
};

class Engine : public rt::Poller {
 public:
  enum class Kind { kUring, kEpoll };
  explicit Engine(Kind k) : kind_(k) { poller_is_io_engine = true; }
  ~Engine() override;
  Kind kind() const { return kind_; }

  // Any thread: ask the owner to cancel all operations on fd; `r->done` is
  // counted down when it has. The owner is woken.
  void post_cancel(CancelRequest* r);

  // Operations this engine has in flight (read by io::close on any thread).
  std::atomic<int64_t> in_flight{0};

 protected:
  // Owner: the cancel requests posted since the last call.
  CancelRequest* take_requests();
  bool has_requests() const { return has_requests_.load(std::memory_order_acquire); }

 private:
  Kind kind_;
  rt::KltMutex req_lock_;
  CancelRequest* requests_ = nullptr;
  std::atomic<bool> has_requests_{false};
};

// The engine of the calling ULT's worker, or null outside a ULT (and in a
// weft::blocking() region, which counts as outside).
inline Engine* current_engine() {
  rt::Worker* w = rt::current_worker();
  if (w == nullptr || w->current.load(std::memory_order_relaxed) == nullptr) return nullptr;
  rt::Poller* p = w->poller.get();
  return p->poller_is_io_engine ? static_cast<Engine*>(p) : nullptr;
}

// Every live engine, for io::close's broadcast.
void register_engine(Engine* e);
void unregister_engine(Engine* e);
// Calls f(e) for every live engine with operations in flight, under the
// registry lock (f must not block).
template <class F>
void for_each_busy_engine(F f);

// Per-fd count of operations in flight in any engine (fds < kMaxTrackedFd;
// others are always treated as busy).
inline constexpr int kMaxTrackedFd = 1 << 20;
void fd_ops_add(int fd, int delta);
bool fd_maybe_busy(int fd);

// In a forked child: every fd counter to zero.
void fd_ops_reset_after_fork();

// Fork hooks of io/ (engine registry, resolver threads), registered with the
// runtime once (register.cc).
void register_fork_hooks();
void resolve_fork_prepare();
void resolve_fork_parent();
void resolve_fork_child();

// Engine construction for the runtime's poller factory.
std::unique_ptr<rt::Poller> make_uring_engine();
std::unique_ptr<rt::Poller> make_epoll_engine();

// Registry internals, for for_each_busy_engine.
rt::KltMutex& registry_lock();
std::vector<Engine*>& registry();

template <class F>
void for_each_busy_engine(F f) {
  rt::LockGuard<rt::KltMutex> g(registry_lock());
  for (Engine* e : registry())
    if (e->in_flight.load(std::memory_order_acquire) > 0) f(e);
}

}  // namespace weft::io_internal
