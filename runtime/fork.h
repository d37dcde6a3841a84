// runtime/fork.h — fork() while runtimes run (the design is in fork.cc).
#pragma once

#include <cstdint>

namespace weft::rt {

// Registers weft's pthread_atfork handlers, once per process. A constructor
// in fork.cc calls it when the library is loaded, so that weft's handlers
// are registered before the application's (POSIX runs prepare handlers in
// reverse order of registration and parent/child handlers in order: weft's
// prepare then runs after the application's, which may still use weft
// locks, and weft's child handler before the application's, which may
// spawn ULTs). Every runtime start calls it too (a static library links
// fork.cc only when something refers to it). Thread-safe.
void install_fork_handlers();

// Does nothing; Scheduler::start calls it so that a static link always
// includes weft's set*id/setgroups (runtime/credentials.cc).
void credentials_linked();

// Fork steps of a layer above runtime/ (io/ registers one for its engine
// registry and resolver threads). prepare runs after the runtime's own
// locks are taken, parent before they are released; child runs in the
// child before the runtimes are rebuilt (its locks must be usable then).
// Each runs on the forking thread; child follows HACKING.md's atfork rules.
struct ForkHooks {
  void (*prepare)() = nullptr;
  void (*parent)() = nullptr;
  void (*child)() = nullptr;
};
// Adds hooks (at most four sets; a static initialiser's job). Not
// thread-safe against a concurrent fork.
void register_fork_hooks(const ForkHooks& h);

// For tests: how many times each of weft's handlers has run in this
// process (a child inherits its parent's counts), and whether every internal
// lock the child resets is free right now (try-locks and releases each; call
// only while no other thread uses the runtimes).
struct ForkCounts {
  uint64_t prepare = 0, parent = 0, child = 0;
};
ForkCounts fork_counts();
bool internal_locks_free();

}  // namespace weft::rt
