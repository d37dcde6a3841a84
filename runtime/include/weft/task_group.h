// weft/task_group.h — structured concurrency: weft::TaskGroup (a nursery)
// and weft::timeout.
//
//   absl::Status serve_all(std::vector<int> fds) {
//     weft::TaskGroup g;                    // children end before g does
//     for (int fd : fds) g.spawn([fd] { return serve(fd); });  // absl::Status
//     return g.wait();                      // the first failure; the others
//   }                                       // were asked to stop meanwhile
//
// A TaskGroup owns the ULTs it spawns: they never outlive it (its
// destructor waits for them), a failure of one asks the others to stop
// (Options::cancel_on_failure), and a stop request of the ULT that made
// the group reaches its children (so a group inside a task of another
// group, or inside a ULT that Runtime::shutdown(timeout) stops, is
// stopped with it). Go's errgroup.WithContext, Trio's nursery, Tokio's
// JoinSet with abort-on-drop.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace weft {

// How a TaskGroup treats its children (TaskGroup::Options).
struct TaskGroupOptions {
  // A child that fails (returns a non-OK absl::Status, a StatusOr holding
  // an error, or throws) asks every other child to stop. false: the
  // others run on; wait() still reports the first failure.
  bool cancel_on_failure = true;
  // Spawn options of the children (name, stack size, priority, bound);
  // spawn() may give others per child.
  SpawnOptions spawn = {};
};

class TaskGroup {
 public:
  using Options = TaskGroupOptions;

  // A group whose children run on the runtime of the calling ULT, or on
  // `rt` (needed outside a ULT; in a ULT null means the caller's runtime).
  // In a ULT, the calling ULT's stop request is passed on to the group
  // (a std::stop_callback on this_ult::stop_token()).
  TaskGroup() : TaskGroup(nullptr, Options{}) {}
  explicit TaskGroup(Options o) : TaskGroup(nullptr, std::move(o)) {}
  explicit TaskGroup(Runtime* rt, Options o = {});

  // Waits for every child (as wait(), whose result is then lost). A scope
  // left by an exception first asks the children to stop; otherwise (an
  // early return, say) the children are not asked — unlike a JoinHandle's
  // destructor — and the destructor waits for them as they are: call
  // request_stop() first to end them. A failure nobody
  // took with wait() is printed to stderr; an exception of a child that
  // nobody took terminates the process (as for a JoinHandle), unless an
  // exception is already unwinding the scope.
  ~TaskGroup();

  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  // Spawns fn() as a child. fn returns void, absl::Status or
  // absl::StatusOr<T> (whose value is dropped: use a capture for results).
  // A child spawned after the group was asked to stop starts asked to stop.
  // Errors: the spawn's (FailedPrecondition outside a ULT without a
  // runtime, ResourceExhausted...); the group is unchanged then.
  template <class F>
  absl::Status spawn(F&& fn) {
    return spawn(std::forward<F>(fn), options_.spawn);
  }
  template <class F>
  absl::Status spawn(F&& fn, const SpawnOptions& opts) {
    using R = std::invoke_result_t<std::decay_t<F>&>;
    static_assert(std::is_void_v<R> || std::is_same_v<R, absl::Status> || is_status_or<R>::value,
                  "a TaskGroup child returns void, absl::Status or absl::StatusOr<T>");
    using Fn = std::decay_t<F>;
    auto body = [this, f = std::optional<Fn>(std::in_place, std::forward<F>(fn))]() mutable {
      // The callable (and what it captured) is destroyed before the child
      // ends, so none of it outlives the group's wait; also when
      // pthread_exit unwinds the child.
      struct End {
        TaskGroup* g;
        std::optional<Fn>* f;
        ~End() {
          f->reset();
          g->child_ended();
        }
      } end{this, &f};
      // A group already asked to stop: its children start asked to stop
      // (adopt() asks too, but this child may run before it is adopted).
      if (stop_.stop_requested()) (void)detail::request_stop_of(this_ult::id());
      try {
        if constexpr (std::is_void_v<R>) {
          (*f)();
        } else if constexpr (std::is_same_v<R, absl::Status>) {
          absl::Status s = (*f)();
          if (!s.ok()) child_failed(std::move(s), nullptr);
        } else {
          R r = (*f)();
          if (!r.ok()) child_failed(r.status(), nullptr);
        }
      } catch (...) {
        if (detail::exiting_by_unwind()) throw;
        child_failed(absl::OkStatus(), std::current_exception());
      }
    };
    starting();
    Ult h;
    try {  // a throwing move of fn: the start did not happen
      h = rt_ != nullptr ? rt_->spawn(std::move(body), opts) : weft::spawn(std::move(body), opts);
    } catch (...) {
      (void)adopt(Ult(UltId(), absl::InternalError("spawn threw"), nullptr));
      throw;
    }
    return adopt(std::move(h));
  }

  // Waits until every child has returned — children spawned meanwhile
  // included — and gives the first failure since the last wait(): OK if
  // none failed, the first non-OK Status, or the first exception
  // rethrown. A stop request of the calling ULT does not end the wait (it
  // is passed on to the children, which end first). After wait() the group
  // can be used again (once asked to stop, it stays so).
  absl::Status wait();

  // Asks every child to stop, and every child spawned from now on.
  void request_stop();
  // True once the group was asked to stop (by request_stop, a failure, or
  // its owner's stop request).
  bool stop_requested() const { return stop_.stop_requested(); }
  // The group's token (stopped with the group); for std::stop_callback or
  // the stop_token overloads of weft's waits.
  std::stop_token stop_token() const { return stop_.get_token(); }

  // Children running now (a hint while they run). A child that has
  // returned is gone at once: its stack is recycled without waiting for
  // wait().
  size_t size() const;

 private:
  template <class T>
  struct is_status_or : std::false_type {};
  template <class T>
  struct is_status_or<absl::StatusOr<T>> : std::true_type {};

  void child_failed(absl::Status s, std::exception_ptr e);
  void starting();
  absl::Status adopt(Ult h);
  void child_ended();
  // Waits until no child runs; the first failure not yet reported.
  void wait_children(absl::Status* s, std::exception_ptr* e);

  struct OwnerStop {
    TaskGroup* g;
    void operator()() const { g->request_stop(); }
  };

  Runtime* rt_;
  Options options_;
  std::stop_source stop_;
  mutable Mutex mu_;
  // The ids of the adopted children still running, under a spin flag, not
  // mu_: request_stop() runs in std::stop_callbacks (the owner's stop),
  // which must not park (a stop_callback's destructor waits for a running
  // callback by blocking its kernel thread).
  mutable std::atomic<bool> ids_busy_{false};
  std::unordered_set<uint64_t> ids_;  // guarded by ids_busy_
  void ids_lock() const;
  void ids_unlock() const;
  CondVar ended_;                 // running_ reached 0
  size_t running_ = 0;            // guarded by mu_: spawned (or spawning) and not ended
  // guarded by mu_: handles of the running children, by id; a child that
  // ends detaches its own handle (so an ended child's stack is recycled
  // at once: a server's group does not accumulate finished connections);
  // one that ends before its spawner adopted the handle leaves its id in
  // ended_early_, and adopt() detaches it then.
  std::unordered_map<uint64_t, Ult> children_;
  std::unordered_set<uint64_t> ended_early_;
  absl::Status first_error_;      // guarded by mu_
  std::exception_ptr first_exception_;  // guarded by mu_
  bool failed_ = false;           // guarded by mu_: the first failure is recorded and not yet reported
  int uncaught_at_start_;
  std::optional<std::stop_callback<OwnerStop>> owner_stop_;  // last: removed first
};

// Runs fn() in a ULT of the calling ULT's runtime (or of `rt`) and waits for
// it at most `d`: at the deadline the ULT is asked to stop (its
// cancellable waits end: see "Cancellation" in weft/runtime.h) and
// timeout() waits for it to return. Gives fn's result as join() would
// (JoinResult), or DeadlineExceeded when the deadline came first (fn's own
// result is then dropped, whatever it was). A stop request of the calling
// ULT is passed on to fn's ULT likewise (the result is then fn's).
// Errors: as spawn().
template <class F>
JoinResult<std::invoke_result_t<std::decay_t<F>&>> timeout(std::chrono::nanoseconds d, F&& fn, Runtime* rt = nullptr) {
  auto spawn_on = [rt](auto&& f) {
    return rt != nullptr ? rt->spawn(std::forward<decltype(f)>(f)) : weft::spawn(std::forward<decltype(f)>(f));
  };
  auto h = spawn_on(std::forward<F>(fn));
  if (!h.status().ok()) return h.status();
  // The timer: a ULT that sleeps d and then asks fn's ULT to stop (by id:
  // a stale id, fn's ULT joined meanwhile, is refused); asked to stop
  // itself (its sleep ends) once fn has returned.
  std::atomic<bool> expired{false};
  auto timer = spawn_on([id = h.id(), d, &expired] {
    this_ult::sleep_for(d);
    if (this_ult::stop_requested()) return;  // fn returned first
    expired.store(true);
    (void)detail::request_stop_of(id);  // a stale id (fn joined meanwhile) is refused
  });
  if (!timer.status().ok()) {  // no timer: do not wait without a bound
    (void)h.request_stop();
    (void)h.join_ignoring_stop();
    return timer.status();
  }
  auto r = h.join();
  if (h.joinable() && h.status().ok()) {  // the caller was asked to stop: pass it on
    (void)h.request_stop();
    r = h.join_ignoring_stop();
  }
  (void)timer.request_stop();
  (void)timer.join_ignoring_stop();
  if (expired.load()) return absl::DeadlineExceededError("weft::timeout: the deadline passed");
  return r;
}

}  // namespace weft
