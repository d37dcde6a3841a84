// io/offload.h — blocking calls on helper threads while the calling ULT
// parks.
//
// Some calls block their kernel thread for as long as another process
// pleases (system(), pclose(), waitpid() for a running child, the vfork
// window of posix_spawn) and neither io_uring nor epoll can wait for them.
// A ULT that makes one hands it to a helper thread (an ordinary pthread,
// made on demand) and parks until the helper has run it; its worker runs
// other ULTs meanwhile, and no worker KLT is tied up however many such
// calls are outstanding (a weft::blocking() region would take a worker,
// and a spare, for each).
//
// The helper runs the call with the caller's signal mask (a spawned child
// inherits its caller's mask, and so it still does) and leaves errno as
// the call set it in the caller. Helpers are started on demand, at most
// kMaxHelpers at once; more calls wait in FIFO order. An idle helper exits
// after kIdleExit. Outside a ULT, offload just calls fn.
//
// Fork: the pool belongs to the parent; a forked child starts with none
// (offload_fork_child, registered with the runtime's fork hooks).
#pragma once

#include <chrono>

#include "absl/functional/function_ref.h"

namespace weft::io_internal {

inline constexpr int kMaxHelpers = 4;
inline constexpr std::chrono::seconds kIdleExit{10};

// Runs fn on a helper thread and parks the calling ULT until it has
// returned (see above). If no helper can be started and none exists (out
// of threads or memory), fn runs on the caller's KLT inside a
// weft::blocking() region instead, so the call is never lost.
void offload(absl::FunctionRef<void()> fn);

// Fork hooks (engine.cc registers them).
void offload_fork_prepare();
void offload_fork_parent();
void offload_fork_child();

// For tests: helpers alive now.
int offload_helpers();

}  // namespace weft::io_internal
