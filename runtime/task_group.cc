// runtime/task_group.cc — weft::TaskGroup (weft/task_group.h).
//
// Invariants (under mu_):
//  - running_ counts the children from starting() (before their spawn)
//    until child_ended() (their last touch of the group) — or until adopt()
//    finds the spawn failed. wait() returns when it is 0, so no child
//    touches the group after wait() or the destructor returned.
//  - children_ holds the handle of every adopted child that has not
//    ended; a child that ends detaches and drops its own handle (its
//    result is void: nothing is lost), or, if its spawner has not adopted
//    it yet, leaves its id in ended_early_ for adopt() to detach.
//  - failed_: first_error_/first_exception_ hold the first failure since
//    the last wait(). A child records its failure (child_failed) before it
//    ends, so wait() sees every failure of the children it waited for.
//  - stop_ is requested once; a child adopted after that is asked to stop
//    by adopt(), under mu_; request_stop() requests stop_, then asks the
//    children present, under mu_: no child misses it.
#include "weft/task_group.h"

#include <thread>

#include "sys/raw_log.h"

namespace weft {

TaskGroup::TaskGroup(Runtime* rt, Options o)
    : rt_(rt), options_(std::move(o)), uncaught_at_start_(std::uncaught_exceptions()) {
  if (this_ult::in_ult()) owner_stop_.emplace(this_ult::stop_token(), OwnerStop{this});
}

TaskGroup::~TaskGroup() {
  bool unwinding = std::uncaught_exceptions() > uncaught_at_start_;
  owner_stop_.reset();  // the owner's stop request cannot reach us from here on
  if (unwinding) request_stop();
  absl::Status s;
  std::exception_ptr e;
  wait_children(&s, &e);
  if (e) detail::lost_exception(UltId(), e, "a TaskGroup child; the group was destroyed without wait()", unwinding);
  if (!s.ok())
    sys::raw_logf("weft: a TaskGroup was destroyed without wait(); its first failure: %s", s.ToString().c_str());
}

void TaskGroup::starting() {
  std::lock_guard<Mutex> g(mu_);
  ++running_;
}

absl::Status TaskGroup::adopt(Ult h) {
  std::lock_guard<Mutex> g(mu_);
  if (!h.status().ok()) {
    if (--running_ == 0) ended_.notify_all();
    return h.status();
  }
  uint64_t id = h.id().value();
  if (ended_early_.erase(id) != 0) {
    (void)h.detach();
    return absl::OkStatus();
  }
  ids_lock();
  ids_.insert(id);
  ids_unlock();
  if (stop_.stop_requested()) (void)h.request_stop();
  children_.emplace(id, std::move(h));
  return absl::OkStatus();
}

void TaskGroup::child_ended() {
  uint64_t me = this_ult::id().value();
  ids_lock();
  ids_.erase(me);
  ids_unlock();
  std::lock_guard<Mutex> g(mu_);
  auto it = children_.find(me);
  if (it != children_.end()) {
    (void)it->second.detach();
    children_.erase(it);
  } else {
    ended_early_.insert(me);
  }
  if (--running_ == 0) ended_.notify_all();
}

void TaskGroup::child_failed(absl::Status s, std::exception_ptr e) {
  bool cancel;
  {
    std::lock_guard<Mutex> g(mu_);
    if (!failed_) {
      failed_ = true;
      first_error_ = std::move(s);
      first_exception_ = std::move(e);
    }
    cancel = options_.cancel_on_failure;
  }
  if (cancel) request_stop();
}

// Never parks (it runs in std::stop_callbacks): the spin flag's holders
// only insert, erase or walk ids_, and request_stop_of takes only a ULT's
// join_lock (a spinlock) and unparks.
void TaskGroup::request_stop() {
  stop_.request_stop();
  ids_lock();
  for (uint64_t id : ids_) (void)detail::request_stop_of(UltId::FromValue(id));
  ids_unlock();
}

void TaskGroup::ids_lock() const {
  for (int spins = 0; ids_busy_.exchange(true, std::memory_order_acquire);) {
    if (++spins > 64) std::this_thread::yield();
  }
}

void TaskGroup::ids_unlock() const { ids_busy_.store(false, std::memory_order_release); }

void TaskGroup::wait_children(absl::Status* s, std::exception_ptr* e) {
  std::unique_lock<Mutex> g(mu_);
  while (running_ > 0) ended_.wait(g);
  if (failed_) {
    *s = std::move(first_error_);
    *e = std::move(first_exception_);
  }
  failed_ = false;
  first_error_ = absl::OkStatus();
  first_exception_ = nullptr;
}

absl::Status TaskGroup::wait() {
  absl::Status s;
  std::exception_ptr e;
  wait_children(&s, &e);
  if (e) std::rethrow_exception(e);
  return s;
}

size_t TaskGroup::size() const {
  std::lock_guard<Mutex> g(mu_);
  return running_;
}

}  // namespace weft
