// examples/shutdown.h — graceful shutdown on SIGINT/SIGTERM, shared by the
// example servers.
//
// A Shutdown object turns SIGINT and SIGTERM into a message (weft::
// SignalSet): on the first one it closes the listener (the accept loop's
// accept returns -ECANCELED) and shuts the read side of every open
// connection (its ULT reads end of file, answers what it already read, and
// closes). The server then gives its connection ULTs (a weft::TaskGroup) a
// grace period to finish, asks those still running to stop (their weft::io
// calls return -ECANCELED), waits for them, and exits 0.
#pragma once

#include <sys/socket.h>
#include <weft/signal.h>
#include <weft/task_group.h>
#include <weft/weft.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <chrono>
#include <set>

namespace examples {

class Shutdown {
 public:
  // Call in main after the runtime started (so the signals are the set's
  // from here on), before serving.
  explicit Shutdown(weft::Runtime& rt, int listener) : lfd_(listener) {
    watcher_ = rt.spawn([this] {
      signal_ = signals_.wait();
      std::lock_guard<weft::Mutex> g(mu_);
      stopping_.store(true);
      weft::io::close(lfd_);
      for (int c : open_) ::shutdown(c, SHUT_RD);
    }, weft::SpawnOptions{.name = "shutdown"});
  }
  Shutdown(const Shutdown&) = delete;
  Shutdown& operator=(const Shutdown&) = delete;

  absl::Status status() const { return signals_.status(); }
  bool stopping() const { return stopping_.load(); }
  int signal() const { return signal_; }

  // A connection's ULT registers its socket for its whole life
  // (Connection's scope); one registered after the stop began is shut at once.
  class Connection {
   public:
    Connection(Shutdown& s, int fd) : s_(s), fd_(fd) {
      s_.running_.add(1);
      std::lock_guard<weft::Mutex> g(s_.mu_);
      s_.open_.insert(fd_);
      if (s_.stopping_.load()) ::shutdown(fd_, SHUT_RD);
    }
    ~Connection() {
      {
        std::lock_guard<weft::Mutex> g(s_.mu_);
        s_.open_.erase(fd_);
      }
      s_.running_.count_down();
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

   private:
    Shutdown& s_;
    int fd_;
  };

  // After the accept loop ended because of the stop (call in the ULT that
  // owns `conns`): waits up to `grace` for the connections to finish what
  // they had read, then asks the rest to stop and waits for them, and for
  // the watcher. Returns how many had to be stopped.
  size_t finish(weft::TaskGroup& conns, std::chrono::nanoseconds grace) {
    size_t forced = 0;
    if (!running_.wait_for(grace)) {
      forced = conns.size();
      conns.request_stop();
    }
    (void)conns.wait();
    (void)watcher_.join();
    return forced;
  }

 private:
  weft::SignalSet signals_{SIGINT, SIGTERM};
  int lfd_;
  std::atomic<bool> stopping_{false};
  int signal_ = 0;
  weft::Mutex mu_;
  std::set<int> open_;  // guarded by mu_
  weft::WaitGroup running_;
  weft::Ult watcher_;
};

}  // namespace examples
