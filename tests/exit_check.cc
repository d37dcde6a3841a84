// tests/exit_check.cc — an LD_PRELOAD module for tests/examples_test.cc:
// exit() called on any thread other than the main thread (a weft worker
// running a ULT, for instance) prints a message and ends the process with
// status 86 instead of running the atexit handlers and static destructors
// while other threads still run. Returning from main() is not affected
// (glibc calls its own exit internally, on the main thread).
#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>

extern "C" [[noreturn]] void exit(int status) {
  if (syscall(SYS_gettid) != getpid()) {
    static const char msg[] = "exit_check: exit() called off the main thread\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(86);
  }
  auto real = reinterpret_cast<void (*)(int)>(dlsym(RTLD_NEXT, "exit"));
  real(status);
  __builtin_unreachable();
}
