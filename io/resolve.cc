// io/resolve.cc — getaddrinfo on a small bounded pool of helper threads.
//
// getaddrinfo blocks (files, DNS) and io_uring cannot run it. A ULT hands
// the lookup to one of at most kMaxHelpers pthreads and parks on a Latch;
// the helper counts the latch down when done. Helpers are started on demand
// and live as long as the process. Outside a ULT the lookup runs inline.
#include <netdb.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "io/engine.h"
#include "weft/io.h"
#include "weft/sync.h"

namespace weft::io {
namespace {

constexpr size_t kMaxHelpers = 4;

absl::StatusOr<std::vector<Address>> lookup(const std::string& host, uint16_t port) {
  // getaddrinfo may leave errno changed; weft calls never do.
  struct KeepErrno {
    int saved = errno;
    ~KeepErrno() { errno = saved; }
  } keep;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int r = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (r != 0) {
    std::string msg = absl::StrCat("resolve(", host, "): ", gai_strerror(r));
    if (r == EAI_NONAME || r == EAI_NODATA) return absl::NotFoundError(msg);
    if (r == EAI_AGAIN) return absl::UnavailableError(msg);
    return absl::InternalError(msg);
  }
  std::vector<Address> out;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    Address addr;
    memcpy(&addr.storage, a->ai_addr, a->ai_addrlen);
    addr.len = a->ai_addrlen;
    out.push_back(addr);
  }
  freeaddrinfo(res);
  if (out.empty()) return absl::NotFoundError(absl::StrCat("resolve(", host, "): no addresses"));
  return out;
}

struct Job {
  std::string host;
  uint16_t port;
  absl::StatusOr<std::vector<Address>> result;
  Latch done{1};
};

class Helpers {
 public:
  void submit(Job* j) {
    std::lock_guard<std::mutex> g(mu_);
    queue_.push_back(j);
    if (idle_ == 0 && started_ < kMaxHelpers) {
      ++started_;
      std::thread([this] { run(); }).detach();
    }
    cv_.notify_one();
  }
  // Fork: the queue is consistent in the child if its lock is held across
  // the fork; the child then drops this object (its threads are gone).
  void fork_prepare() { mu_.lock(); }
  void fork_parent() { mu_.unlock(); }

 private:
  void run() {
    std::unique_lock<std::mutex> g(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(g, [this] { return !queue_.empty(); });
      --idle_;
      Job* j = queue_.front();
      queue_.pop_front();
      g.unlock();
      j->result = lookup(j->host, j->port);
      j->done.count_down();  // j may be gone after this
      g.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job*> queue_;
  size_t started_ = 0;
  size_t idle_ = 0;
};

// Never destroyed: its threads outlive static destructors. Replaced by a
// fresh one in a forked child (the old one, whose threads and queued jobs
// belong to the parent, is leaked there).
std::atomic<Helpers*> the_helpers{nullptr};

Helpers& helpers() {
  Helpers* h = the_helpers.load(std::memory_order_acquire);
  if (h != nullptr) return *h;
  auto* fresh = new Helpers();
  if (the_helpers.compare_exchange_strong(h, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *h;
}

}  // namespace

}  // namespace weft::io

namespace weft::io_internal {
void resolve_fork_prepare() { io::helpers().fork_prepare(); }
void resolve_fork_parent() { io::helpers().fork_parent(); }
void resolve_fork_child() { io::the_helpers.store(nullptr, std::memory_order_relaxed); }
}  // namespace weft::io_internal

namespace weft::io {

absl::StatusOr<std::vector<Address>> resolve(std::string_view host, uint16_t port) {
  if (!this_ult::in_ult()) return lookup(std::string(host), port);
  Job job;
  job.host = std::string(host);
  job.port = port;
  helpers().submit(&job);
  job.done.wait();
  return std::move(job.result);
}

}  // namespace weft::io
