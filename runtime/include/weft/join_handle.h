// weft/join_handle.h — weft::JoinHandle<R>, the handle spawn() returns, and
// the typed result of a ULT. Included by weft/runtime.h; use that.
//
//   weft::JoinHandle<int> h = weft::spawn([] { return 6 * 7; });
//   absl::StatusOr<int> v = h.join();       // 42, or why there is none
//
// What join() gives for a callable returning R (JoinResult<R>):
//   void                    absl::Status
//   absl::Status            absl::Status (the callable's own, not wrapped)
//   absl::StatusOr<T>       absl::StatusOr<T> (likewise)
//   T& (a reference)        absl::StatusOr<std::reference_wrapper<T>> (the
//                           callable is destroyed when it returns: a
//                           reference into its own captures dangles)
//   T or T&&                absl::StatusOr<T>
// An error status from join() is either weft's (the spawn failed, the
// handle is empty, the joining ULT was asked to stop while it waited) or,
// for Status and StatusOr callables, the callable's own.
//
// Exceptions: an exception that escapes the callable is kept and rethrown
// by join(), as std::future::get does. If nobody will ever see it (the ULT
// was detached, or its handle was destroyed without join), the process
// terminates with a message naming the ULT and the exception, as with
// std::thread — except while the destroying scope is itself unwinding an
// exception: then the message is printed and the ULT's exception dropped
// (the exception in flight is the one the program is handling).
//
// The result lives on the ULT's own stack until it is joined (no
// allocation); a ULT's stack must hold the callable and its result (spawn
// fails with InvalidArgument otherwise).
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <new>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "weft/ult_id.h"

namespace weft {

namespace detail {

template <class R>
struct JoinResultOf {
  using type = absl::StatusOr<std::remove_cv_t<R>>;
};
template <>
struct JoinResultOf<void> {
  using type = absl::Status;
};
template <>
struct JoinResultOf<absl::Status> {
  using type = absl::Status;
};
template <class T>
struct JoinResultOf<absl::StatusOr<T>> {
  using type = absl::StatusOr<T>;
};
template <class T>
struct JoinResultOf<T&> {
  using type = absl::StatusOr<std::reference_wrapper<T>>;
};
template <class T>
struct JoinResultOf<T&&> {
  using type = absl::StatusOr<std::remove_cv_t<T>>;
};

// What a ULT's stack holds for its result: the value (a pointer for a
// reference), or nothing for void.
template <class R>
struct StoredOf {
  using type = std::remove_cv_t<std::remove_reference_t<R>>;
};
template <class T>
struct StoredOf<T&> {
  using type = T*;
};

// The result of one ULT, on its stack (the first member of its Task).
// Written by the ULT before it exits; read and destroyed by whoever joins
// it, or destroyed by the runtime when nobody will (drop): never both, and
// never while the ULT runs (the join protocol orders them: runtime/ult_life.cc).
template <class V>
struct ResultSlot {
  std::exception_ptr error;
  bool has_value = false;
  alignas(V) unsigned char storage[sizeof(V)];
  V* value() { return std::launder(reinterpret_cast<V*>(storage)); }
  template <class... A>
  void emplace(A&&... a) {
    ::new (static_cast<void*>(storage)) V(std::forward<A>(a)...);
    has_value = true;
  }
  void reset() {
    if (has_value) value()->~V();
    has_value = false;
  }
};
template <>
struct ResultSlot<void> {
  std::exception_ptr error;
  void reset() {}
};

// True while the calling ULT is being unwound by pthread_exit (weft's forced
// unwinding, which a catch (...) must rethrow); false outside ULTs.
bool exiting_by_unwind();

// A type-erased callable that spawn() moves onto the new ULT's stack, so a
// spawn allocates nothing on the heap.
struct Closure {
  size_t size;
  size_t align;
  void* src;                                // the caller's object (moved from)
  void (*move_to)(void* dst, void* src);    // move-construct at dst
  void (*invoke_and_destroy)(void* obj);    // run it, then destroy the callable (not its result)
  // Destroys the result nobody will read, handing out an exception it
  // holds (the runtime reports it with the ULT's name). May be null.
  void (*drop)(void* obj, std::exception_ptr* lost);
};

// The object on a ULT's stack: its result slot and its callable.
template <class Fn, class R>
struct Task {
  using Stored = typename StoredOf<R>::type;
  ResultSlot<Stored> slot;
  Fn fn;
  explicit Task(Fn&& f) : fn(std::move(f)) {}

  static void run(void* obj) {
    Task* t = static_cast<Task*>(obj);
    struct DestroyFn {
      Fn* f;
      ~DestroyFn() { f->~Fn(); }
    } d{&t->fn};
    // pthread_exit in fn unwinds with a forced unwinding that must go on
    // to the ULT's entry. It is recognised by weft's flag, not with
    // catch (abi::__forced_unwind&): that binds a null reference (the
    // personality passes no object), which UBSan reports.
    try {
      if constexpr (std::is_void_v<R>) {
        t->fn();
      } else if constexpr (std::is_lvalue_reference_v<R>) {
        t->slot.emplace(std::addressof(t->fn()));
      } else {
        t->slot.emplace(t->fn());
      }
    } catch (...) {
      if (exiting_by_unwind()) throw;
      t->slot.error = std::current_exception();
    }
  }
  static void drop(void* obj, std::exception_ptr* lost) {
    Task* t = static_cast<Task*>(obj);
    *lost = std::move(t->slot.error);
    t->slot.error = nullptr;
    t->slot.reset();
  }
};

template <class Fn, class R>
Closure make_task_closure(Fn* fn) {
  using T = Task<Fn, R>;
  return Closure{sizeof(T), alignof(T), fn,
                 [](void* dst, void* src) { ::new (dst) T(std::move(*static_cast<Fn*>(src))); }, &T::run, &T::drop};
}

// What detail::spawn gives a handle: the id, or why there is none, and the
// Task object on the new ULT's stack.
struct Spawned {
  UltId id;
  absl::Status status;
  void* task = nullptr;
};

// Waits for the ULT `id` to exit, then calls collect(ctx) (the handle takes
// its result) and releases the ULT. cancellable: a stop request of the
// calling ULT ends the wait with Cancelled (the ULT stays joinable).
absl::Status join_handle(UltId id, void** exit_value, bool cancellable, void (*collect)(void* ctx), void* ctx);
// Joins the ULT `id` by its id alone (its result is destroyed): what
// tests of stale and forged ids use.
absl::Status join_id(UltId id);
// Detaches the ULT `id` (its result is destroyed when it exits, or now).
absl::Status detach_handle(UltId id);
// Asks the ULT `id` to stop (this_ult::stop_requested). False if it was
// already asked, or the id is stale.
bool request_stop_of(UltId id);
// A handle's destructor is about to join `id`; `unwinding`: an exception
// is in flight in the destroying scope (debug builds print a diagnostic).
void note_destructor_join(UltId id, bool unwinding);
// The exception `e` of ULT `id` will never be seen (`what`: how it was
// lost). Terminates the process with a message, unless `unwinding`: then
// only prints it.
void lost_exception(UltId id, const std::exception_ptr& e, const char* what, bool unwinding);

}  // namespace detail

// What join() returns for a callable returning R (see the table above).
template <class R>
using JoinResult = typename detail::JoinResultOf<R>::type;

// A handle to a spawned ULT that returns R. Move-only. Like std::jthread:
// destroying (or assigning over) a handle that is still joinable asks the
// ULT to stop (request_stop) and then joins it — never detaches silently;
// call detach() to let a ULT run on its own. spawn() is [[nodiscard]] for
// that reason: a discarded handle would join at once.
template <class R>
class [[nodiscard]] JoinHandle {
 public:
  using Result = JoinResult<R>;

  JoinHandle() = default;
  JoinHandle(JoinHandle&& o) noexcept
      : id_(std::exchange(o.id_, UltId())),
        status_(std::exchange(o.status_, absl::OkStatus())),
        exit_value_(std::exchange(o.exit_value_, nullptr)),
        slot_(std::exchange(o.slot_, nullptr)) {}
  JoinHandle& operator=(JoinHandle&& o) noexcept {
    if (this != &o) {
      finish_in_destructor();
      id_ = std::exchange(o.id_, UltId());
      status_ = std::exchange(o.status_, absl::OkStatus());
      exit_value_ = std::exchange(o.exit_value_, nullptr);
      slot_ = std::exchange(o.slot_, nullptr);
    }
    return *this;
  }
  JoinHandle(const JoinHandle&) = delete;
  JoinHandle& operator=(const JoinHandle&) = delete;
  ~JoinHandle() { finish_in_destructor(); }

  // Waits until the ULT's function has returned, releases the ULT and gives
  // its result (see JoinResult), or rethrows the exception that escaped it.
  // In a ULT this parks the caller; on a foreign thread it blocks on a
  // futex. Errors (as the Status, or in the StatusOr): the spawn's own
  // error if the spawn failed; FailedPrecondition if the handle is empty
  // (already joined or detached) or a ULT joins itself; Cancelled if the
  // calling ULT was asked to stop while it waited (the handle stays
  // joinable: join again, or let the destructor do it); Aborted for a
  // non-void callable whose ULT ended with pthread_exit() instead of
  // returning a value; for absl::Status / StatusOr callables, their own
  // (a callable's own Cancelled and weft's look alike: joinable() tells
  // them apart — still true only after weft's). In a ULT that was asked to
  // stop, join() of a ULT still running returns Cancelled at once, every
  // time: cleanup code that must wait for it uses join_ignoring_stop()
  // (after request_stop(), typically).
  Result join() { return join_impl(true); }

  // As join(), but a stop request of the calling ULT does not end the wait
  // (for code that must not leave before the ULT has ended: a scope that
  // owns what the ULT uses).
  Result join_ignoring_stop() { return join_impl(false); }

  // Lets the ULT run to completion on its own; its result is destroyed when
  // it returns (an exception that escapes it then terminates the process,
  // as with a detached std::thread). Errors: as join(), without waiting.
  absl::Status detach() {
    if (!status_.ok()) return status_;
    if (!id_.valid()) return absl::FailedPreconditionError("this handle is empty (already joined or detached)");
    absl::Status s = detail::detach_handle(id_);
    id_ = UltId();
    slot_ = nullptr;
    return s;
  }

  // Asks the ULT to stop: this_ult::stop_requested() becomes true in it,
  // and its cancellable waits end (see "Cancellation" in weft/runtime.h).
  // True if this call made the request; false if it had been made before,
  // or the handle is empty.
  bool request_stop() { return id_.valid() && detail::request_stop_of(id_); }

  // The value the ULT passed to pthread_exit(), or nullptr if its function
  // returned. Valid after join() returned; nullptr before. (In a ULT,
  // pthread_exit(v) ends the ULT as it ends a thread: destructors of its
  // frames and pthread_cleanup_push handlers run.)
  void* exit_value() const { return exit_value_; }

  // The ULT's id (invalid for an empty handle or after join/detach).
  UltId id() const { return id_; }
  bool joinable() const { return id_.valid(); }
  // OK, or why the spawn failed.
  const absl::Status& status() const { return status_; }

  // For spawn(): the new ULT's id (or why there is none) and the result
  // slot of its Task.
  JoinHandle(UltId id, absl::Status status, void* slot)
      : id_(id), status_(std::move(status)), slot_(static_cast<Slot*>(slot)) {}

 private:
  using Stored = typename detail::StoredOf<R>::type;
  using Slot = detail::ResultSlot<Stored>;

  // What the joiner takes out of the slot before the ULT is released.
  struct Taken {
    Slot* slot;
    std::exception_ptr error;
    detail::ResultSlot<Stored> value;  // moved out of the ULT's stack
    ~Taken() { value.reset(); }
  };

  Result join_impl(bool cancellable) {
    if (!status_.ok()) return status_;
    if (!id_.valid()) return absl::FailedPreconditionError("this handle is empty (already joined or detached)");
    Taken t{slot_, nullptr, {}};
    absl::Status s = detail::join_handle(
        id_, &exit_value_, cancellable,
        [](void* ctx) {
          Taken* t = static_cast<Taken*>(ctx);
          t->error = std::move(t->slot->error);
          t->slot->error = nullptr;
          if constexpr (!std::is_void_v<Stored>) {
            // A move constructor that throws: its exception is the join's
            // (the runtime must still release the ULT: nothing escapes).
            try {
              if (t->slot->has_value) t->value.emplace(std::move(*t->slot->value()));
            } catch (...) {
              t->error = std::current_exception();
            }
          }
          t->slot->reset();
        },
        &t);
    if (s.ok() || absl::IsNotFound(s)) {
      id_ = UltId();
      slot_ = nullptr;
    }
    if (!s.ok()) return s;
    if (t.error) std::rethrow_exception(t.error);
    if constexpr (std::is_void_v<R>) {
      return absl::OkStatus();
    } else {
      if (!t.value.has_value)
        return absl::AbortedError("the ULT called pthread_exit() instead of returning a value");
      Result r = [&]() -> Result {
        if constexpr (std::is_lvalue_reference_v<R>) {
          return std::ref(**t.value.value());
        } else {
          return std::move(*t.value.value());
        }
      }();
      t.value.reset();
      return r;
    }
  }

  // The destructor's join: asks the ULT to stop, waits for it whatever
  // happens to the caller, and reports an exception nobody will see.
  void finish_in_destructor() noexcept {
    if (!status_.ok() || !id_.valid()) return;
    bool unwinding = std::uncaught_exceptions() > 0;
    detail::note_destructor_join(id_, unwinding);
    (void)request_stop();
    UltId id = id_;
    try {
      (void)join_impl(false);
    } catch (...) {
      detail::lost_exception(id, std::current_exception(), "its handle was destroyed without join()", unwinding);
    }
  }

  UltId id_;
  absl::Status status_;
  void* exit_value_ = nullptr;
  Slot* slot_ = nullptr;  // the result slot on the ULT's stack, while joinable
};

// The handle of a ULT that returns nothing (the name weft used before
// JoinHandle existed).
using Ult = JoinHandle<void>;

}  // namespace weft
