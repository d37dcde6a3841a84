// examples/accept.h — the accept step the example servers share.
#pragma once

#include <weft/weft.h>

#include <cerrno>
#include <chrono>

namespace examples {

// Accepts the next connection on the listening socket lfd (call it in a
// ULT): the new socket, or a negative errno once the listener itself is
// unusable (-EBADF, -EINVAL, -ENOTSOCK; -ECANCELED when another ULT closes
// it). An error that concerns one connection only (-ECONNABORTED: the peer
// gave up first) is skipped at once. Any other error, above all a shortage
// of descriptors or memory (-EMFILE, -ENFILE, -ENOBUFS, -ENOMEM), waits
// 10 ms before the next try: the pending connection stays in the kernel's
// backlog until a descriptor frees, and retrying at once would be a busy
// loop that burns a worker for as long as the shortage lasts.
inline int accept_next(int lfd) {
  for (;;) {
    int c = weft::io::accept(lfd);
    if (c >= 0) return c;
    if (c == -EBADF || c == -EINVAL || c == -ENOTSOCK || c == -ECANCELED) return c;
    if (c != -ECONNABORTED) weft::this_ult::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace examples
