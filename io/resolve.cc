// io/resolve.cc — getaddrinfo on a small bounded pool of helper threads.
//
// getaddrinfo blocks (files, DNS) and io_uring cannot run it. A ULT (or a
// thread that gave a deadline) hands the lookup to one of at most
// kMaxHelpers pthreads and waits on the Job's WaitGroup, for at most its
// deadline; the helper counts the wait group down when done. At most
// kMaxQueued lookups wait for a helper; more are refused
// (ResourceExhausted), as is a lookup that finds no helper and cannot
// start one (std::thread throws: caught here, reported as a status).
// Helpers are started on demand and live as long as the process. A thread
// without a deadline runs the lookup inline.
//
// A Job is shared (std::shared_ptr) between the waiter and the queue or
// helper: a waiter that gives up at its deadline returns at once, and the
// helper still running getaddrinfo for it writes its result into the Job,
// not into the waiter's (by then reused) stack. A job given up while still
// queued is taken off the queue.
#include <netdb.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "io/engine.h"
#include "io/leaked.h"
#include "runtime/park.h"
#include "weft/io.h"
#include "weft/sync.h"

namespace weft::io {
namespace {


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
  Job(std::string h, uint16_t p) : host(std::move(h)), port(p) {}
  const std::string host;
  const uint16_t port;
  absl::StatusOr<std::vector<Address>> result;  // written by the helper before `done`
  WaitGroup done{1};
};
using JobPtr = std::shared_ptr<Job>;

class Helpers {
 public:
  // Queues j for a helper, starting one if none is idle and fewer than
  // kMaxHelpers run. ResourceExhausted if the queue is full, or if no
  // helper runs and none can be started.
  absl::Status submit(JobPtr j) {
    std::lock_guard<std::mutex> g(mu_);
    if (queue_.size() >= kResolveMaxQueued) {
      return absl::ResourceExhaustedError(absl::StrCat("resolve(", j->host, "): ", kResolveMaxQueued,
                                                       " lookups already wait for a helper thread"));
    }
    queue_.push_back(j);
    if (idle_ < queue_.size() && started_ < kResolveMaxHelpers) {
      try {
        std::thread([this] { run(); }).detach();
        ++started_;
      } catch (const std::exception& e) {
        // Out of threads or memory. Helpers that run will get to the job;
        // with none, nobody would.
        if (started_ == 0) {
          queue_.pop_back();
          return absl::ResourceExhaustedError(
              absl::StrCat("resolve(", j->host, "): cannot start a helper thread: ", e.what()));
        }
      }
    }
    cv_.notify_one();
    return absl::OkStatus();
  }

  // Takes j off the queue if no helper has taken it yet (its waiter gave up).
  void withdraw(const Job* j) {
    std::lock_guard<std::mutex> g(mu_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (it->get() == j) {
        queue_.erase(it);
        return;
      }
    }
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
      JobPtr j = std::move(queue_.front());
      queue_.pop_front();
      g.unlock();
      j->result = lookup(j->host, j->port);
      j->done.count_down();
      j.reset();  // the waiter may have gone: the last reference frees the job
      g.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<JobPtr> queue_;
  size_t started_ = 0;
  size_t idle_ = 0;
};

// Never destroyed: its threads outlive static destructors. Replaced by a
// fresh one in a forked child (the old one, whose threads and queued jobs
// belong to the parent, is leaked there).
std::atomic<Helpers*> the_helpers{nullptr};

Helpers& helpers() { return io_internal::leaked_instance(the_helpers); }

}  // namespace

}  // namespace weft::io

namespace weft::io_internal {
void resolve_fork_prepare() { io::helpers().fork_prepare(); }
void resolve_fork_parent() { io::helpers().fork_parent(); }
namespace {
std::atomic<io::Helpers*> abandoned_helpers{nullptr};  // the parent's, in a forked child (leaked.h)
}  // namespace
void resolve_fork_child() { io_internal::abandon_instance(io::the_helpers, abandoned_helpers); }
}  // namespace weft::io_internal

namespace weft::io {

absl::StatusOr<std::vector<Address>> resolve(std::string_view host, uint16_t port) {
  return resolve(host, port, Deadline::none());
}

absl::StatusOr<std::vector<Address>> resolve(std::string_view host, uint16_t port, Deadline d) {
  if (d.is_none() && !this_ult::in_ult()) return lookup(std::string(host), port);
  auto job = std::make_shared<Job>(std::string(host), port);
  if (absl::Status s = helpers().submit(job); !s.ok()) return s;
  bool done;
  if (d.is_none()) {
    job->done.wait();
    done = true;
  } else {
    int64_t rel = d.ns() - rt::monotonic_ns();
    done = job->done.wait_for(std::chrono::nanoseconds(rel > 0 ? rel : 0)) || job->done.try_wait();
  }
  if (!done) {
    helpers().withdraw(job.get());
    return absl::DeadlineExceededError(absl::StrCat("resolve(", job->host, "): no answer before the deadline"));
  }
  return std::move(job->result);
}

}  // namespace weft::io
