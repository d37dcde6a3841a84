// hook/socket.cc — recv, recvfrom, recvmsg, send, sendto, sendmsg,
// accept, accept4, connect (and __recv_chk, __recvfrom_chk) on a ULT.
//
// Receives and sends first try with MSG_DONTWAIT added (one system call:
// the fast path); on EAGAIN the caller's own MSG_DONTWAIT or the socket's
// O_NONBLOCK gives EAGAIN at once, as the kernel would; otherwise the ULT
// waits in weft::io with SO_RCVTIMEO / SO_SNDTIMEO as the deadline (expiry:
// EAGAIN, as the kernel says). A blocking send goes on until every byte is
// sent (send(2) on a blocking stream socket does), a MSG_WAITALL receive on
// a stream socket until the buffer is full, the peer closes or an error
// comes (the bytes already received are then returned).
//
// accept and connect have no per-call "do not wait" flag: on a socket in
// non-blocking mode they are the plain system call; on a blocking one they
// go to weft::io (io_uring's accept/connect, or the epoll backend's
// readiness wait). The accepted socket gets exactly the flags asked for
// (weft::io adds SOCK_CLOEXEC, and SOCK_NONBLOCK on an epoll worker: they
// are taken back). A connect whose SO_SNDTIMEO expires fails with
// EINPROGRESS, as the kernel's does.
//
// SIGPIPE: the first try carries the caller's flags, so the kernel raises
// SIGPIPE as it would. weft::io always adds MSG_NOSIGNAL; when the call had
// to wait and then fails with EPIPE without the caller's MSG_NOSIGNAL,
// SIGPIPE is raised on the calling ULT (raise(3), which weft directs to
// the ULT).
#include <signal.h>
#include <sys/socket.h>

#include "hook/hook_internal.h"

namespace weft::hook_internal {
namespace {

using weft::io::Deadline;

HOOK_DECLARE_NEXT(recv);
HOOK_DECLARE_NEXT(recvfrom);
HOOK_DECLARE_NEXT(recvmsg);
HOOK_DECLARE_NEXT(send);
HOOK_DECLARE_NEXT(sendto);
HOOK_DECLARE_NEXT(sendmsg);
HOOK_DECLARE_NEXT(accept);
HOOK_DECLARE_NEXT(accept4);
HOOK_DECLARE_NEXT(connect);

__attribute__((constructor)) void resolve_socket() {
  (void)HOOK_NEXT(recv);
  (void)HOOK_NEXT(recvfrom);
  (void)HOOK_NEXT(recvmsg);
  (void)HOOK_NEXT(send);
  (void)HOOK_NEXT(sendto);
  (void)HOOK_NEXT(sendmsg);
  (void)HOOK_NEXT(accept);
  (void)HOOK_NEXT(accept4);
  (void)HOOK_NEXT(connect);
}

inline long map_waited(long r, Deadline d, long timeout_error = -EAGAIN) {
  if (r == -ETIMEDOUT && deadline_passed(d)) return timeout_error;
  return r;
}

// Whether the caller asked not to wait, or the socket is non-blocking.
// -errno if F_GETFL fails.
inline long no_wait(int fd, int flags) {
  if (flags & MSG_DONTWAIT) return 1;
  long fl = fd_flags(fd);
  if (fl < 0) return fl;
  return (fl & O_NONBLOCK) ? 1 : 0;
}

bool is_stream_socket(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  return sys(SYS_getsockopt, fd, SOL_SOCKET, SO_TYPE, arg(&type), arg(&len)) == 0 && type == SOCK_STREAM;
}

long recv_on_ult(int fd, void* buf, size_t n, int flags, sockaddr* from, socklen_t* fromlen) {
  long r = sys(SYS_recvfrom, fd, arg(buf), static_cast<long>(n), flags | MSG_DONTWAIT, arg(from), arg(fromlen));
  if (r != -EAGAIN) {
    // MSG_WAITALL on a blocking stream socket: the rest, waiting.
    if (r > 0 && static_cast<size_t>(r) < n && (flags & MSG_WAITALL) && !(flags & MSG_PEEK) &&
        no_wait(fd, flags) == 0 && is_stream_socket(fd)) {
      Deadline d = socket_deadline(fd, true);
      size_t got = static_cast<size_t>(r);
      while (got < n) {
        long m = weft::io::recv(fd, static_cast<char*>(buf) + got, n - got, flags, d);
        if (m <= 0) break;
        got += static_cast<size_t>(m);
      }
      return static_cast<long>(got);
    }
    return r;
  }
  long nw = no_wait(fd, flags);
  if (nw != 0) return nw < 0 ? nw : -EAGAIN;
  Deadline d = socket_deadline(fd, true);
  long w = from != nullptr ? weft::io::recvfrom(fd, buf, n, flags, from, fromlen, d)
                           : weft::io::recv(fd, buf, n, flags, d);
  return map_waited(w, d);
}

long recvmsg_on_ult(int fd, msghdr* msg, int flags) {
  long r = sys(SYS_recvmsg, fd, arg(msg), flags | MSG_DONTWAIT);
  if (r != -EAGAIN) return r;
  long nw = no_wait(fd, flags);
  if (nw != 0) return nw < 0 ? nw : -EAGAIN;
  Deadline d = socket_deadline(fd, true);
  return map_waited(weft::io::recvmsg(fd, msg, flags, d), d);
}

// EPIPE after a wait (weft::io added MSG_NOSIGNAL): the SIGPIPE the kernel
// would have raised, unless the caller asked for none.
inline long sent_epipe(long r, int flags) {
  if (r == -EPIPE && !(flags & MSG_NOSIGNAL)) raise(SIGPIPE);
  return r;
}

long send_on_ult(int fd, const void* buf, size_t n, int flags, const sockaddr* to, socklen_t tolen) {
  long r = sys(SYS_sendto, fd, arg(buf), static_cast<long>(n), flags | MSG_DONTWAIT, arg(to), tolen);
  if (r >= 0 && static_cast<size_t>(r) >= n) return r;
  if (r < 0 && r != -EAGAIN) return r;
  long nw = no_wait(fd, flags);
  if (nw != 0) return r >= 0 ? r : (nw < 0 ? nw : -EAGAIN);
  Deadline d = socket_deadline(fd, false);
  size_t done = r > 0 ? static_cast<size_t>(r) : 0;
  while (done < n) {
    const char* p = static_cast<const char*>(buf) + done;
    long w = to != nullptr ? weft::io::sendto(fd, p, n - done, flags, to, tolen, d)
                           : weft::io::send(fd, p, n - done, flags, d);
    if (w < 0) return done > 0 ? static_cast<long>(done) : sent_epipe(map_waited(w, d), flags);
    if (w == 0) break;
    done += static_cast<size_t>(w);
  }
  return static_cast<long>(done);
}

long sendmsg_on_ult(int fd, const msghdr* msg, int flags) {
  long r = sys(SYS_sendmsg, fd, arg(msg), flags | MSG_DONTWAIT);
  size_t want = iov_total(msg->msg_iov, static_cast<int>(msg->msg_iovlen));
  if (r >= 0 && static_cast<size_t>(r) >= want) return r;
  if (r < 0 && r != -EAGAIN) return r;
  long nw = no_wait(fd, flags);
  if (nw != 0) return r >= 0 ? r : (nw < 0 ? nw : -EAGAIN);
  Deadline d = socket_deadline(fd, false);
  if (r <= 0) {
    long w = weft::io::sendmsg(fd, msg, flags, d);
    if (w < 0) return sent_epipe(map_waited(w, d), flags);
    r = w;
  }
  // A stream socket took part of it: the rest, without the ancillary data
  // (it went with the first bytes).
  size_t done = static_cast<size_t>(r);
  std::vector<iovec> rest;
  while (done < want) {
    advance_iov(msg->msg_iov, static_cast<int>(msg->msg_iovlen), done, &rest);
    msghdr m{};
    m.msg_name = msg->msg_name;
    m.msg_namelen = msg->msg_namelen;
    m.msg_iov = rest.data();
    m.msg_iovlen = rest.size();
    long w = weft::io::sendmsg(fd, &m, flags, d);
    if (w <= 0) break;
    done += static_cast<size_t>(w);
  }
  return static_cast<long>(done);
}

long accept_on_ult(int fd, sockaddr* addr, socklen_t* len, int flags) {
  if (flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK)) return -EINVAL;
  long fl = fd_flags(fd);
  if (fl < 0) return fl;
  if (fl & O_NONBLOCK) {
    long c = sys(SYS_accept4, fd, arg(addr), arg(len), flags);
    if (c >= 0) {
      forget_fd(static_cast<int>(c));
      remember_socket(static_cast<int>(c));
    }
    return c;
  }
  Deadline d = socket_deadline(fd, true);
  long c = weft::io::accept(fd, addr, len, d);
  if (c < 0) return map_waited(c, d);
  // The flags asked for, exactly (weft::io's own are SOCK_CLOEXEC, plus
  // SOCK_NONBLOCK on an epoll worker). The socket is new: no one else
  // shares its file description yet.
  if (!(flags & SOCK_CLOEXEC)) sys(SYS_fcntl, c, F_SETFD, 0);
  long cf = fd_flags(static_cast<int>(c));
  bool want_nb = (flags & SOCK_NONBLOCK) != 0;
  if (cf >= 0 && ((cf & O_NONBLOCK) != 0) != want_nb)
    sys(SYS_fcntl, c, F_SETFL, want_nb ? (cf | O_NONBLOCK) : (cf & ~O_NONBLOCK));
  forget_fd(static_cast<int>(c));
  remember_socket(static_cast<int>(c));
  return c;
}

long connect_on_ult(int fd, const sockaddr* addr, socklen_t len) {
  long fl = fd_flags(fd);
  if (fl < 0) return fl;
  if (fl & O_NONBLOCK) return sys(SYS_connect, fd, arg(addr), len);
  Deadline d = socket_deadline(fd, false);
  return map_waited(weft::io::connect(fd, addr, len, d), d, -EINPROGRESS);
}

}  // namespace
}  // namespace weft::hook_internal

using namespace weft::hook_internal;

extern "C" {

[[noreturn]] void __chk_fail(void);

WEFT_HOOK_EXPORT ssize_t recv(int fd, void* buf, size_t n, int flags) {
  if (!on_ult()) return HOOK_NEXT(recv)(fd, buf, n, flags);
  return from_result(recv_on_ult(fd, buf, n, flags, nullptr, nullptr));
}

WEFT_HOOK_EXPORT ssize_t recvfrom(int fd, void* buf, size_t n, int flags, struct sockaddr* from, socklen_t* fromlen) {
  if (!on_ult()) return HOOK_NEXT(recvfrom)(fd, buf, n, flags, from, fromlen);
  return from_result(recv_on_ult(fd, buf, n, flags, from, fromlen));
}

WEFT_HOOK_EXPORT ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
  if (!on_ult()) return HOOK_NEXT(recvmsg)(fd, msg, flags);
  return from_result(recvmsg_on_ult(fd, msg, flags));
}

WEFT_HOOK_EXPORT ssize_t send(int fd, const void* buf, size_t n, int flags) {
  if (!on_ult()) return HOOK_NEXT(send)(fd, buf, n, flags);
  return from_result(send_on_ult(fd, buf, n, flags, nullptr, 0));
}

WEFT_HOOK_EXPORT ssize_t sendto(int fd, const void* buf, size_t n, int flags, const struct sockaddr* to,
                                socklen_t tolen) {
  if (!on_ult()) return HOOK_NEXT(sendto)(fd, buf, n, flags, to, tolen);
  return from_result(send_on_ult(fd, buf, n, flags, to, tolen));
}

WEFT_HOOK_EXPORT ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
  if (!on_ult()) return HOOK_NEXT(sendmsg)(fd, msg, flags);
  return from_result(sendmsg_on_ult(fd, msg, flags));
}

WEFT_HOOK_EXPORT int accept(int fd, struct sockaddr* addr, socklen_t* len) {
  if (!on_ult()) return HOOK_NEXT(accept)(fd, addr, len);
  return static_cast<int>(from_result(accept_on_ult(fd, addr, len, 0)));
}

WEFT_HOOK_EXPORT int accept4(int fd, struct sockaddr* addr, socklen_t* len, int flags) {
  if (!on_ult()) return HOOK_NEXT(accept4)(fd, addr, len, flags);
  return static_cast<int>(from_result(accept_on_ult(fd, addr, len, flags)));
}

WEFT_HOOK_EXPORT int connect(int fd, const struct sockaddr* addr, socklen_t len) {
  if (!on_ult()) return HOOK_NEXT(connect)(fd, addr, len);
  return static_cast<int>(from_result(connect_on_ult(fd, addr, len)));
}

WEFT_HOOK_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags) {
  if (n > buflen) __chk_fail();
  return recv(fd, buf, n, flags);
}

WEFT_HOOK_EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags,
                                        struct sockaddr* from, socklen_t* fromlen) {
  if (n > buflen) __chk_fail();
  return recvfrom(fd, buf, n, flags, from, fromlen);
}

}  // extern "C"
