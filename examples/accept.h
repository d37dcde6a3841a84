// examples/accept.h — the accept step the example servers share.
#pragma once

#include <weft/weft.h>

#include <cerrno>
#include <chrono>

namespace examples {

// Accepts the next connection on the acceptor's listening socket (call it
// in a ULT): the new socket, or a negative errno once the listener itself is
// unusable (-EBADF, -EINVAL, -ENOTSOCK; -ECANCELED when another ULT closes
// it). An error that concerns one connection only (-ECONNABORTED: the peer
// gave up first) is skipped at once. Any other error, above all a shortage
// of descriptors or memory (-EMFILE, -ENFILE, -ENOBUFS, -ENOMEM), waits
// 10 ms before the next try: the pending connection stays in the kernel's
// backlog until a descriptor frees, and retrying at once would be a busy
// loop that burns a worker for as long as the shortage lasts.
//
// Through a weft::io::Acceptor, not io::accept: on io_uring its multishot
// accept queues every connection the kernel has as it arrives, and this
// returns the queued ones without parking. With one io::accept per call,
// a server whose worker is busy took one connection per scheduler pass
// (the accept's CQE is reaped once a pass, and a pass runs every ready
// connection): echo_bench's 'weft 1 worker' needed 2-16 s to give 1,000
// connections their first echo, the epoll loop 35 ms.
inline int accept_next(weft::io::Acceptor& acceptor) {
  for (;;) {
    int c = acceptor.accept();
    if (c >= 0) return c;
    if (c == -EBADF || c == -EINVAL || c == -ENOTSOCK || c == -ECANCELED) return c;
    if (c != -ECONNABORTED) weft::this_ult::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace examples
