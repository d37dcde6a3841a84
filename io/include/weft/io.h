// weft/io.h — I/O that parks a ULT instead of blocking its worker.
//
// In a ULT, every operation below is submitted to the calling worker's
// io_uring (or, where io_uring is missing or forbidden, waited for through
// the worker's epoll instance) and the ULT parks until it completes; the
// worker runs other ULTs meanwhile. Called outside a ULT, every operation is
// the plain blocking system call.
//
// Results are values, never errno:
//   - byte counts and descriptors: >= 0 on success; a byte count may be
//     short, as with the system calls: one call moves at most 0x7ffff000
//     bytes (the kernel's MAX_RW_COUNT: INT_MAX rounded down to a page),
//     larger lengths are clamped to that on every backend;
//   - errors: the negative errno (-ECONNREFUSED, -EPIPE, -EBADF, ...);
//   - a Deadline that passes: -ETIMEDOUT, and the operation has really been
//     cancelled (it did not and will not take effect later), except that a
//     read or write may have transferred bytes just before the deadline, in
//     which case the byte count is returned. On a thread (outside a ULT) a
//     deadline bounds the wait for readiness (poll) of reads, writes,
//     receives, sends, accepts and connects; file operations (openat,
//     fsync, statx, pread, pwrite) honour deadlines in ULTs only.
//
// Backend: io_uring by default (one ring per worker, see DESIGN.md); epoll
// when io_uring is unavailable (ENOSYS, EPERM from a seccomp profile,
// kernel.io_uring_disabled) or when the (secure) environment says
// WEFT_IO=epoll (WEFT_IO=uring forces io_uring and fails loudly if it
// cannot be used). A failure of the process's io_uring probe for lack of
// resources (EMFILE, ENOMEM, ...) does not count as "unavailable".
//
// With epoll, weft never changes the O_NONBLOCK flag of a descriptor it
// did not create (the open file description is shared with other
// processes and dups): reads and writes of pipes, sockets and character
// devices are tried with per-call flags (RWF_NOWAIT, MSG_DONTWAIT), and on
// EAGAIN the ULT parks until epoll reports the fd ready; where the kernel
// refuses RWF_NOWAIT for a file (ttys, ptys) the call waits for readiness
// and then runs as a weft::blocking() call, as does accept() on a listener
// in blocking mode. Regular files, block devices and directories run as
// weft::blocking() calls. Sockets weft creates there (socket(), accept(),
// listen_tcp(), connect_tcp() in a ULT) are made non-blocking. The one exception:
// connect() with a deadline on a blocking-mode socket sets O_NONBLOCK for
// the duration of the call and restores it (on every backend but
// io_uring; nothing else can bound a blocking connect).
//
// Engine setup: each worker sets up its ring (or epoll instance) itself,
// at its first idle wait or io. If that fails (EMFILE, ENOMEM, ...) the
// failure is logged to stderr, the worker's io runs as plain blocking
// calls (as weft::blocking() regions: the worker may be handed off; see
// backend(), which then says "blocking"), and setup is tried again at the
// worker's next io or idle wait once a backoff has passed (1 ms, doubling
// up to 1 s); success after failures is logged too. A worker is never
// degraded for good by a transient shortage.
//
// Stop requests (weft/runtime.h, "Cancellation"): an operation of a ULT
// that is asked to stop — before or while it waits — is cancelled and
// returns -ECANCELED: it did not and will not take effect, except that an
// operation that could complete without waiting may still complete, and a
// read or write that moved bytes before the cancel returns that count.
// close() is never cancelled. On a thread nothing is cancelled (threads
// have no stop request).
//
// Closing: io::close(fd) first cancels every operation in flight on fd (on
// any worker); they complete with -ECANCELED (or with their own result if
// they completed first). See close() for how long it waits for that.
// Using an fd in one ULT while another closes it is still a race, as with
// threads.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "weft/runtime.h"

namespace weft::io {

// When an operation gives up: never (none(), the default), or a point on
// the monotonic clock (CLOCK_MONOTONIC, which is std::chrono::steady_clock).
//
// "None" is a flag, not a special time: no arithmetic on a duration can
// turn a real deadline into "never". Conversions saturate:
//   - in(d) with d <= 0 (however large its magnitude, e.g. -100 years) is a
//     deadline that has already passed: the operation does not wait (it
//     still completes if it can without waiting, as with a zero timeout);
//   - in(d) with d too large for int64 nanoseconds from now (hours::max(),
//     seconds::max(), ...) is the farthest representable point, about 292
//     years after boot: in effect never, but not none();
//   - at(t) with t before the clock's epoch is a passed deadline.
// A floating-point duration that is NaN counts as "do not wait".
class Deadline {
 public:
  constexpr Deadline() = default;
  static constexpr Deadline none() { return Deadline(); }
  // `d` from now.
  template <class Rep, class Period>
  static Deadline in(std::chrono::duration<Rep, Period> d) {
    return after_ns(saturating_ns(d));
  }
  static Deadline at(std::chrono::steady_clock::time_point t) {
    int64_t ns = saturating_ns(t.time_since_epoch());
    return Deadline(ns < 0 ? 0 : ns);
  }
  // A point on another clock (system_clock, a user clock): converted to
  // CLOCK_MONOTONIC once, now, as std::this_thread::sleep_until does (a
  // later change of that clock, e.g. the wall clock stepped by NTP, does
  // not move the deadline).
  template <class Clock, class Duration>
  static Deadline at(std::chrono::time_point<Clock, Duration> t) {
    if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
      return at(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(t));
    } else {
      return in(t - Clock::now());
    }
  }
  constexpr bool is_none() const { return none_; }
  // CLOCK_MONOTONIC nanoseconds (>= 0), or -1 for none().
  constexpr int64_t ns() const { return none_ ? -1 : ns_; }

 private:
  constexpr explicit Deadline(int64_t ns) : ns_(ns), none_(false) {}
  static int64_t now_ns();
  // now + rel, saturated to [now, INT64_MAX] (rel <= 0: now).
  static Deadline after_ns(int64_t rel);
  // d in nanoseconds, saturated to [INT64_MIN, INT64_MAX]; NaN is 0.
  template <class Rep, class Period>
  static int64_t saturating_ns(std::chrono::duration<Rep, Period> d) {
    static_assert(std::is_arithmetic_v<Rep>, "Deadline::in takes arithmetic durations");
    // The value in nanoseconds, computed in long double to check the range
    // first (an exact int64 conversion of hours::max() would overflow).
    long double v = static_cast<long double>(d.count()) * Period::num * 1e9L / Period::den;
    if (v != v) return 0;  // NaN
    constexpr long double kLimit = 9.2e18L;  // just under INT64_MAX (9.22e18)
    if (v >= kLimit) return INT64_MAX;
    if (v <= -kLimit) return INT64_MIN;
    return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  }
  int64_t ns_ = 0;
  bool none_ = true;
};

// --- files and generic descriptors ---------------------------------------------
// Each returns what the system call of the same name returns, as a value.
// SIGPIPE (write, writev to a pipe or socket whose reader is gone): besides
// -EPIPE the kernel raises it; with io_uring, on the worker's kernel thread
// when the write completes, so it reaches whichever ULT runs there then,
// not necessarily the caller. Use send() on sockets (MSG_NOSIGNAL), or
// ignore or block SIGPIPE. libweft-hook's write(2) raises it on the caller.
int64_t read(int fd, void* buf, size_t n, Deadline d = {});
int64_t write(int fd, const void* buf, size_t n, Deadline d = {});
int64_t pread(int fd, void* buf, size_t n, off_t offset, Deadline d = {});
int64_t pwrite(int fd, const void* buf, size_t n, off_t offset, Deadline d = {});
int64_t readv(int fd, const iovec* iov, int iovcnt, Deadline d = {});
int64_t writev(int fd, const iovec* iov, int iovcnt, Deadline d = {});
// A new descriptor (O_CLOEXEC is added) or -errno.
int openat(int dirfd, const char* path, int flags, mode_t mode = 0, Deadline d = {});
// Cancels the operations in flight on fd, then closes it. 0 or -errno
// (-EBADF: fd is not open).
//
// Operations in flight on the calling kernel thread's own worker (the
// caller's worker, also when close is called inside a weft::blocking()
// region) are cancelled on the spot. Other workers cancel theirs at their
// next scheduler pass; close waits for them for at most 50 ms. A worker
// that does not answer in that time is busy (a ULT that does not yield,
// or a long weft::blocking() region): then close returns 0 at once and
// that worker finishes the job when it next schedules — it cancels its
// operations on fd (they end with -ECANCELED after close returned) and
// then closes fd. Until then fd stays open: its number is not reused, so
// no operation ever acts on a file that later got the same number; an
// error of that deferred close (EIO on some file systems) is not
// reported. Waiting parks a ULT; on a thread it blocks.
int close(int fd);
int fsync(int fd, Deadline d = {});
int statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* out, Deadline d = {});
// Waits until fd is ready for `events` (any of poll(2)'s: POLLIN, POLLOUT,
// POLLPRI, POLLRDHUP, ...; 0 waits for POLLHUP/POLLERR, which are always
// reported, as by poll(2)): the ready events, or -errno / -ETIMEDOUT.
int poll(int fd, short events, Deadline d = {});

// --- sockets ------------------------------------------------------------------------
// A new socket (SOCK_CLOEXEC is added; with the epoll backend also
// SOCK_NONBLOCK) or -errno.
int socket(int domain, int type, int protocol);
int bind(int fd, const sockaddr* addr, socklen_t len);
int listen(int fd, int backlog);
// A TCP socket listening on host:port (host may be "0.0.0.0", "::",
// "127.0.0.1", or empty for any IPv4 address), with SO_REUSEADDR. port 0
// picks a free port: read it back with local_port(). fd or -errno.
int listen_tcp(std::string_view host, uint16_t port, int backlog = 1024);
// The local port of a bound socket, or -errno.
int local_port(int fd);
// A connected socket (SOCK_CLOEXEC added), or -errno.
int accept(int fd, sockaddr* addr = nullptr, socklen_t* len = nullptr, Deadline d = {});
int connect(int fd, const sockaddr* addr, socklen_t len, Deadline d = {});
// A new TCP socket connected to host:port (a numeric address, or a name
// resolved with resolve(host, port, d)), or -errno: -ETIMEDOUT when the
// deadline passes (during the name lookup or the connect), -EHOSTUNREACH
// for a name that does not exist, -EAGAIN when the lookup failed
// temporarily or could not be queued (resolve()'s Unavailable,
// ResourceExhausted, Internal), or what connect() returns.
int connect_tcp(std::string_view host, uint16_t port, Deadline d = {});
// MSG_NOSIGNAL is always added to send(): a closed peer gives -EPIPE, never
// SIGPIPE.
int64_t recv(int fd, void* buf, size_t n, int flags = 0, Deadline d = {});
int64_t send(int fd, const void* buf, size_t n, int flags = 0, Deadline d = {});
// Sends all n bytes (several sends if needed): n, or -errno.
int64_t send_all(int fd, const void* buf, size_t n, Deadline d = {});
int shutdown(int fd, int how);

// --- datagrams and messages -----------------------------------------------------------
// sendto(2), recvfrom(2), sendmsg(2), recvmsg(2) as values.
//
// Results: the number of bytes sent or received (0 for an empty datagram,
// or end of stream on a stream socket), or -errno: what the system call
// returns (-EBADF, -ENOTSOCK, -EMSGSIZE, -ECONNREFUSED on a connected UDP
// socket whose peer port is closed, -EDESTADDRREQ, -EPIPE, ...), -ETIMEDOUT
// when the deadline passes first (nothing was sent or received), -EINTR
// when a signal handler installed without SA_RESTART runs on the waiting
// ULT before anything was transferred (as recv/send; with SA_RESTART the
// wait goes on).
//
// MSG_NOSIGNAL is always added to sendto() and sendmsg(): a closed peer
// gives -EPIPE, never SIGPIPE. MSG_DONTWAIT in `flags` is the caller's: the
// call then never waits (-EAGAIN). recvmsg() writes msg->msg_flags
// (MSG_TRUNC: the datagram was longer than the buffers, its tail was
// dropped; MSG_CTRUNC), msg->msg_namelen and msg->msg_controllen as
// recvmsg(2) does; recvfrom() sets *fromlen to the source address's
// length (from and fromlen may be null: the source is not reported).
//
// Blocking: in a ULT the call parks until the socket is ready or the
// deadline passes. io_uring: IORING_OP_SENDMSG / IORING_OP_RECVMSG (sendto
// and recvfrom are sendmsg/recvmsg with one iovec), with a linked timeout
// for a deadline; epoll: the call with MSG_DONTWAIT, and on EAGAIN the ULT
// parks until epoll reports the socket ready; on a thread (and in a
// weft::blocking() region) the plain system call, a deadline bounding the
// wait for readiness (ppoll). The msghdr, its iovecs and its buffers must
// stay valid until the call returns (they do: the call does not return
// earlier).
int64_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* to, socklen_t tolen, Deadline d = {});
int64_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* from, socklen_t* fromlen, Deadline d = {});
int64_t sendmsg(int fd, const msghdr* msg, int flags = 0, Deadline d = {});
int64_t recvmsg(int fd, msghdr* msg, int flags = 0, Deadline d = {});
// The same with an Address (declared below): sendto(to), and recvfrom
// filling *from (from->len is set; from may be null).
struct Address;
int64_t sendto(int fd, const void* buf, size_t n, const Address& to, int flags = 0, Deadline d = {});
int64_t recvfrom(int fd, void* buf, size_t n, Address* from, int flags = 0, Deadline d = {});

// --- socket options ---------------------------------------------------------------------
// setsockopt(2) and getsockopt(2): 0 or -errno (-EBADF: fd is not open,
// -ENOTSOCK, -ENOPROTOOPT: the option is unknown at that level, -EINVAL:
// a bad length, -EFAULT). getsockopt sets *len to the option's length.
// Never wait: plain system calls on every backend and context.
int setsockopt(int fd, int level, int name, const void* value, socklen_t len);
int getsockopt(int fd, int level, int name, void* value, socklen_t* len);
// TCP_NODELAY on (Nagle's algorithm off) or off: setsockopt(fd,
// IPPROTO_TCP, TCP_NODELAY, on). 0 or -errno (-ENOPROTOOPT: a socket that
// is not TCP, such as UDP; -ENOTSOCK: not a socket; -EBADF).
int set_nodelay(int fd, bool on = true);

// --- zero-copy transfers --------------------------------------------------------------
// splice(2): moves up to `len` bytes from fd_in to fd_out, one of which
// must be a pipe, without copying through user memory. off_in / off_out:
// null to use (and advance) the file position, else the offset to use,
// advanced by the bytes moved (must be null for a pipe, as in splice(2):
// -ESPIPE). `flags`: SPLICE_F_MOVE, SPLICE_F_MORE, SPLICE_F_NONBLOCK
// (then the call never waits for readiness: -EAGAIN).
//
// Results: the bytes moved (0: end of input, or len was 0), or -errno
// (-EINVAL: neither end is a pipe, or an end cannot splice; -EBADF,
// -ESPIPE, -EPIPE: the output socket or pipe is closed for writing, ...),
// -ETIMEDOUT at the deadline (nothing was moved), -EINTR as recv().
// len is clamped to 0x7ffff000 bytes.
//
// Blocking: every backend makes the call with SPLICE_F_NONBLOCK added
// (pipe ends and socket inputs never sleep in it) and, on EAGAIN, waits
// for the end that is not ready with io::poll (the worker's ring or epoll
// in a ULT, ppoll on a thread; within the deadline, and io::close ends
// it), then tries again. io_uring: the call is IORING_OP_SPLICE (run by
// one of the kernel's io-wq threads; the ULT parks, a deadline is a linked
// timeout). epoll and threads: splice(2) as a weft::blocking() region (a
// file end may wait for the disk).
// Limit: SPLICE_F_NONBLOCK does not reach a socket OUTPUT: splicing into
// a socket in blocking mode (as weft makes them for io_uring workers and
// threads) whose send buffer is full sleeps in the kernel until the peer
// reads, past the deadline; on io_uring (seen on Linux 6.18) neither the
// deadline's cancel nor io::close(fd_out) interrupts it, and the worker
// keeps an operation in flight meanwhile. For bounded splices into a
// socket, make it non-blocking (fcntl O_NONBLOCK), or use sendfile(),
// which copies instead when the socket blocks.
int64_t splice(int fd_in, off_t* off_in, int fd_out, off_t* off_out, size_t len, unsigned flags = 0,
               Deadline d = {});
// sendfile(2): sends up to `count` bytes of in_fd (a regular file or
// another file that can be spliced from) from *offset, or from its file
// position when offset is null, to out_fd (a socket, pipe or file).
// *offset (or the file position) is advanced by exactly the bytes sent.
//
// Results: the bytes sent, possibly fewer than count (end of file, a
// deadline or error after some bytes went out: the count), 0 at end of
// file, or -errno (-EBADF, -EINVAL, -ESPIPE, -EPIPE: the peer closed),
// -ETIMEDOUT when nothing was sent by the deadline, -EINTR as send().
// count is clamped to 0x7ffff000 bytes.
//
// How (by out_fd's mode; the result is the same):
//  - out_fd in non-blocking mode (sockets weft makes for an epoll worker,
//    or the caller's): sendfile(2) itself, zero-copy, as a weft::blocking()
//    region (the file read may wait for the disk); on EAGAIN the ULT waits
//    for POLLOUT within the deadline (io::poll: the worker's ring or
//    epoll; ppoll on a thread) and tries again.
//  - out_fd in blocking mode in a ULT on io_uring (the sockets weft makes
//    there), or anywhere with a deadline: sendfile(2) would wait in the
//    kernel past the deadline, holding the worker and deaf to io::close;
//    so the bytes go through a 64 KiB buffer of the call: io::pread from
//    in_fd at the offset, then io::send (a socket) or io::write to out_fd,
//    each keeping the deadline and cancelled by io::close. One copy in
//    user memory. (Splicing through a pipe would avoid the copy, but a
//    splice into a blocking socket cannot keep a deadline: see splice.)
//  - out_fd in blocking mode, no deadline, outside io_uring (threads,
//    epoll workers with the caller's own socket): sendfile(2) as a
//    weft::blocking() region, waiting as the system call does.
// The offset (or the file position) advances by exactly the bytes that
// reached out_fd, also when an error or the deadline stops the copy path.
// SIGPIPE (sendfile and splice): unlike send(), these cannot carry
// MSG_NOSIGNAL; writing to a socket whose peer is gone may raise SIGPIPE
// (on the epoll and thread paths, for the calling thread) besides the
// -EPIPE result. Ignore or block SIGPIPE where peers may go away.
int64_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count, Deadline d = {});

// --- listeners: options, and errors that say why ----------------------------------
// Options of listen_tcp(host, port, ListenOptions) and listen_tcp_or():
struct ListenOptions {
  int backlog = 1024;      // listen(2)'s backlog
  bool reuse_addr = true;  // SO_REUSEADDR: rebind at once after a restart (TIME_WAIT)
  // SO_REUSEPORT: several sockets (of this or other processes of the same
  // user) may listen on one port; the kernel spreads connections over them.
  // Each must set it: one without it makes the next bind fail (-EADDRINUSE).
  bool reuse_port = false;
  // IPV6_V6ONLY, for an IPv6 host ("::", "::1", ...): accept IPv6
  // connections only, leaving the port's IPv4 side free for another
  // socket. Off: the system's default (net.ipv6.bindv6only, 0 unless
  // changed: "::" also takes IPv4 connections, as ::ffff:a.b.c.d). Ignored
  // for IPv4 hosts.
  bool v6_only = false;
};
// As listen_tcp(host, port, backlog) with the options (its results and
// errors). Pass ListenOptions explicitly: `listen_tcp(h, p, {})` picks the
// backlog overload (backlog 0); `listen_tcp(h, p, {.reuse_port = true})`
// does not.
int listen_tcp(std::string_view host, uint16_t port, const ListenOptions& opts);

// Precise errors. listen_tcp() and connect_tcp() fold every failure into
// one errno (an unknown host is -EADDRNOTAVAIL or -EHOSTUNREACH, the
// resolver's reason is lost). These return the fd or a Status whose message
// names the call, the step that failed and its reason:
//   "dial_tcp(nosuch.invalid:80): resolve(nosuch.invalid): Name or service not known"
//   "dial_tcp(127.0.0.1:9): connect to 127.0.0.1:9: Connection refused"
//   "listen_tcp_or(127.0.0.1:80): bind to 127.0.0.1:80: Permission denied"
// Steps: resolve (resolve()'s message: the resolver's own text,
// gai_strerror, or the deadline), socket,
// setsockopt (which option), bind, listen, connect (each address tried, in
// order, "; "-separated, when several were tried).
// Status codes:
//   resolve:  NotFound (no such name: EAI_NONAME, EAI_NODATA), Unavailable
//             (EAI_AGAIN, a temporary failure), DeadlineExceeded, and
//             ResourceExhausted / Internal as resolve() says;
//   the others, from the errno: DeadlineExceeded (ETIMEDOUT: the
//             deadline passed), Unavailable (ECONNREFUSED, ECONNRESET,
//             ECONNABORTED, EHOSTUNREACH, ENETUNREACH, ENETDOWN, EHOSTDOWN,
//             EAGAIN, EINTR), AlreadyExists (EADDRINUSE: another socket
//             has the address), FailedPrecondition (EADDRNOTAVAIL: not a
//             local address, or no free local port), PermissionDenied
//             (EACCES, EPERM: a port below 1024), ResourceExhausted
//             (EMFILE, ENFILE, ENOBUFS, ENOMEM), InvalidArgument (EINVAL),
//             Cancelled (ECANCELED: io::close), Unimplemented
//             (EAFNOSUPPORT, EPROTONOSUPPORT: no such address family
//             here), and absl::ErrnoToStatusCode's choice for the rest.
// dial_tcp: a TCP connection to host:port, as connect_tcp() (the same
// resolution, addresses tried in order, Deadline for the whole).
absl::StatusOr<int> dial_tcp(std::string_view host, uint16_t port, Deadline d = {});
// listen_tcp_or: a listening TCP socket, as listen_tcp(host, port, opts).
absl::StatusOr<int> listen_tcp_or(std::string_view host, uint16_t port, const ListenOptions& opts = {});

// --- Acceptor: accepts on one listener with a standing multishot accept -----------
// An Acceptor serves accept() calls on a listening socket it does not own.
//
//   io::Acceptor acc(listen_fd);
//   for (;;) { int c = acc.accept(); if (c < 0) break; (void)conns.spawn(...); }  // a TaskGroup
//
// accept(d): the next connection (a new socket, close-on-exec, in the same
// mode as io::accept() gives on this backend), or -errno: -ETIMEDOUT at
// the deadline, -EINTR (a signal handler without SA_RESTART ran on the
// waiting ULT), -ECANCELED (io::close(listen_fd) or the Acceptor's own
// cancel ended the armed accept while this call waited, or the calling ULT
// was asked to stop: see weft/runtime.h, "Cancellation"), or accept(2)'s
// errors (-EBADF, -EINVAL: not listening, -EMFILE, ...). Errors of the
// armed accept go to every call waiting when it ends; the next call arms
// a new one.
//
// io_uring (a ULT on an io_uring worker): the first accept() arms one
// IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT on the calling worker's
// ring, and it stays armed: each connection the kernel accepts is a CQE,
// reaped by that ring's worker, which hands the fd to the longest-waiting
// accept() (a ULT on any worker: a caller that migrated, or one that never
// ran on that worker, is woken where it is) or queues it for the next
// call. Up to kAcceptorMaxQueued connections are accepted ahead of calls;
// then the armed accept is cancelled (further connections wait in the
// listen backlog) and the next accept() arms it again on its own worker.
// If the kernel ends the multishot (an error, a full CQ), a waiting call
// re-arms it. Several ULTs may call accept() on one Acceptor at once: each
// connection goes to exactly one of them, in the order they started
// waiting.
// Other backends (epoll, threads, weft::blocking() regions): each accept()
// is io::accept(listen_fd, nullptr, nullptr, d). Calls of both kinds on
// one listener (and plain io::accept calls) share its connections. On a
// thread, as with io::accept, a deadline bounds the wait for readiness:
// threads racing for one connection on a listener in blocking mode may
// lose and then block in accept(2) until the next one (make the listener
// non-blocking if several threads accept with deadlines).
//
// No peer address is returned (a multishot accept has one address buffer
// for all its CQEs): ask getpeername(2).
//
// Destruction cancels the armed accept (IORING_OP_ASYNC_CANCEL on its
// ring, posted to that ring's worker) and waits up to 50 ms for its final
// CQE; then nothing is in flight on listen_fd and no further connection is
// taken. Connections accepted but not yet returned are closed. If the
// ring's worker does not answer in time (a ULT that does not yield, or a
// long weft::blocking() region on it), the destructor returns and that
// worker finishes the cancel (and frees the state) at its next pass, as
// io::close() does. No accept() call may be in progress or start during
// destruction; destroy the Acceptor before its Runtime shuts down (an
// armed accept is an operation in flight on the ring).
// Fork: an armed accept is not inherited (the child's rings are new); do
// not use a parent's Acceptor in a child.
inline constexpr size_t kAcceptorMaxQueued = 64;
}  // namespace weft::io
namespace weft::io_internal {
struct MultishotAccept;
}
namespace weft::io {
class Acceptor {
 public:
  explicit Acceptor(int listen_fd);
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;
  int accept(Deadline d = {});
  int fd() const { return fd_; }

 private:
  int fd_;
  io_internal::MultishotAccept* m_;
};

// --- names --------------------------------------------------------------------------
struct Address {
  sockaddr_storage storage{};
  socklen_t len = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  // "1.2.3.4:80" or "[::1]:80".
  std::string ToString() const;
};
// Resolves host:port with getaddrinfo (TCP).
//
// In a ULT, and on a thread that gives a deadline, the lookup runs on a
// small pool of helper threads (at most kResolveMaxHelpers lookups at
// once, at most kResolveMaxQueued more waiting for a helper) while the ULT
// parks (a thread blocks). On a thread without a deadline it runs inline.
// At the deadline the caller gets DeadlineExceeded at once; a lookup a
// helper had already started finishes in the background and its result is
// dropped. Thread- and ULT-safe.
//
// Errors: NotFound (no such name), Unavailable (temporary failure,
// EAI_AGAIN), DeadlineExceeded (no answer by `d`), ResourceExhausted
// (kResolveMaxQueued lookups already wait, or no helper runs and none
// could be started), Internal (other getaddrinfo failures).
inline constexpr size_t kResolveMaxHelpers = 4;
inline constexpr size_t kResolveMaxQueued = 256;
absl::StatusOr<std::vector<Address>> resolve(std::string_view host, uint16_t port);
absl::StatusOr<std::vector<Address>> resolve(std::string_view host, uint16_t port, Deadline d);

// --- timers ---------------------------------------------------------------------------
// Parks the calling ULT for `d` (the worker's next io wait uses the timer as
// its timeout). Same as this_ult::sleep_for.
template <class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> d) {
  this_ult::sleep_for(d);
}

// --- introspection -------------------------------------------------------------------
// The backend the calling ULT's worker uses: "io_uring", "epoll",
// "blocking" while that worker's ring or epoll instance cannot be set up
// (see "Engine setup" above; calling backend() may retry the setup), or
// "none" outside a ULT.
const char* backend();
// The backend new workers will use in this process ("io_uring" or "epoll"),
// and why (e.g. "io_uring_setup: EPERM (seccomp?)"), for logs and tests.
const char* default_backend();
const char* default_backend_reason();

}  // namespace weft::io
