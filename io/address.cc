// io/address.cc — socket addresses: numeric host parsing, Address::ToString,
// local_port, and the TCP conveniences listen_tcp and connect_tcp, with
// their Status-returning variants listen_tcp_or and dial_tcp.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "io/ops_common.h"
#include "weft/io.h"

namespace weft::io {

using io_internal::arg;
using io_internal::sys;

namespace {

// Fills out with host as a numeric address of one family: Sockaddr is
// sockaddr_in (AF_INET) or sockaddr_in6 (AF_INET6), given with its address,
// family and port members. False if host is not such an address.
template <class Sockaddr, class InAddr>
bool numeric_address_of(int family, InAddr Sockaddr::*addr, sa_family_t Sockaddr::*fam, in_port_t Sockaddr::*prt,
                        const std::string& host, uint16_t port, Address* out) {
  auto* sa = reinterpret_cast<Sockaddr*>(&out->storage);
  if (inet_pton(family, host.c_str(), &(sa->*addr)) != 1) return false;
  sa->*fam = static_cast<sa_family_t>(family);
  sa->*prt = htons(port);
  out->len = sizeof *sa;
  return true;
}

// A numeric address for host:port (IPv4, then IPv6; an empty host is
// 0.0.0.0), or false.
bool numeric_address(std::string_view host, uint16_t port, Address* out) {
  std::string h(host.empty() ? "0.0.0.0" : host);
  return numeric_address_of(AF_INET, &sockaddr_in::sin_addr, &sockaddr_in::sin_family, &sockaddr_in::sin_port, h,
                            port, out) ||
         numeric_address_of(AF_INET6, &sockaddr_in6::sin6_addr, &sockaddr_in6::sin6_family, &sockaddr_in6::sin6_port,
                            h, port, out);
}

}  // namespace

int local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  long r = sys(SYS_getsockname, fd, arg(&ss), arg(&len));
  if (r < 0) return static_cast<int>(r);
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return -EAFNOSUPPORT;
}

namespace {

// "host:port", "[v6]:port".
std::string host_port(std::string_view host, uint16_t port) {
  std::string h(host);
  if (h.find(':') != std::string::npos) return absl::StrCat("[", h, "]:", port);
  return absl::StrCat(h, ":", port);
}

// The Status code of a failed step's errno (io.h, "Status codes"). Abseil's
// ErrnoToStatusCode for the rest; these differ from it or are pinned here
// (Abseil says FailedPrecondition for EADDRINUSE and AlreadyExists for
// EADDRNOTAVAIL).
absl::StatusCode code_for_errno(int e) {
  switch (e) {
    case ETIMEDOUT: return absl::StatusCode::kDeadlineExceeded;
    case ECONNREFUSED: case ECONNRESET: case ECONNABORTED: case EHOSTUNREACH: case ENETUNREACH:
    case ENETDOWN: case EHOSTDOWN: case EAGAIN: case EINTR:
      return absl::StatusCode::kUnavailable;
    case EADDRINUSE: return absl::StatusCode::kAlreadyExists;
    case EADDRNOTAVAIL: return absl::StatusCode::kFailedPrecondition;
    case EACCES: case EPERM: return absl::StatusCode::kPermissionDenied;
    case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM: return absl::StatusCode::kResourceExhausted;
    case EINVAL: return absl::StatusCode::kInvalidArgument;
    case ECANCELED: return absl::StatusCode::kCancelled;
    case EAFNOSUPPORT: case EPROTONOSUPPORT: return absl::StatusCode::kUnimplemented;
  }
  return absl::ErrnoToStatusCode(e);
}

// "<what>: <strerror(e)>".
std::string with_reason(const std::string& what, int e) {
  return std::string(absl::ErrnoToStatus(e, what).message());
}

// A step of listen_tcp/connect_tcp failed with -err: its Status for the
// precise variants (io.h), when they asked for one (why != null).
void explain(absl::Status* why, const std::string& call, const std::string& step, int err) {
  if (why != nullptr) *why = absl::Status(code_for_errno(-err), with_reason(absl::StrCat(call, ": ", step), -err));
}

// listen_tcp and listen_tcp_or: the fd or -errno; with `why`, a failure
// also gets its Status there.
int listen_steps(std::string_view host, uint16_t port, const ListenOptions& o, absl::Status* why) {
  const std::string call = why != nullptr ? absl::StrCat("listen_tcp_or(", host_port(host, port), ")") : "";
  Address a;
  if (!numeric_address(host, port, &a)) {
    absl::StatusOr<std::vector<Address>> r = resolve(host, port);
    if (!r.ok() || r->empty()) {
      if (why != nullptr) {
        *why = r.ok() ? absl::NotFoundError(absl::StrCat(call, ": resolve: no addresses"))
                      : absl::Status(r.status().code(), absl::StrCat(call, ": ", r.status().message()));
      }
      return -EADDRNOTAVAIL;
    }
    a = r->front();
  }
  const int family = a.storage.ss_family;
  int fd = io::socket(family, SOCK_STREAM, 0);
  if (fd < 0) {
    explain(why, call, family == AF_INET6 ? "socket(AF_INET6)" : "socket(AF_INET)", fd);
    return fd;
  }
  // Options: each one asked for must take (a listener silently without
  // SO_REUSEPORT would make the next one's bind fail, far from the cause).
  int one = 1;
  int r = 0;
  std::string step;
  if (r == 0 && o.reuse_addr) {
    r = io::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    step = "setsockopt(SO_REUSEADDR)";
  }
  if (r == 0 && o.reuse_port) {
    r = io::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    step = "setsockopt(SO_REUSEPORT)";
  }
  if (r == 0 && o.v6_only && family == AF_INET6) {
    r = io::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    step = "setsockopt(IPV6_V6ONLY)";
  }
  if (r == 0) {
    r = io::bind(fd, a.get(), a.len);
    if (why != nullptr) step = absl::StrCat("bind to ", a.ToString());
  }
  if (r == 0) {
    r = io::listen(fd, o.backlog);
    step = "listen";
  }
  if (r < 0) {
    explain(why, call, step, r);
    sys(SYS_close, fd);
    return r;
  }
  return fd;
}

// connect_tcp and dial_tcp (as listen_steps).
int connect_steps(std::string_view host, uint16_t port, Deadline d, absl::Status* why) {
  const std::string call = why != nullptr ? absl::StrCat("dial_tcp(", host_port(host, port), ")") : "";
  std::vector<Address> addrs(1);
  if (!numeric_address(host, port, &addrs[0])) {
    absl::StatusOr<std::vector<Address>> r = resolve(host, port, d);
    if (!r.ok()) {
      if (why != nullptr) *why = absl::Status(r.status().code(), absl::StrCat(call, ": ", r.status().message()));
      if (absl::IsNotFound(r.status())) return -EHOSTUNREACH;
      if (absl::IsDeadlineExceeded(r.status())) return -ETIMEDOUT;
      return -EAGAIN;
    }
    addrs = std::move(*r);
  }
  int last = -EHOSTUNREACH;
  std::string tried;  // "connect to A: reason; connect to B: reason"
  for (const Address& a : addrs) {
    int fd = io::socket(a.storage.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
      explain(why, call, a.storage.ss_family == AF_INET6 ? "socket(AF_INET6)" : "socket(AF_INET)", fd);
      return fd;
    }
    int r = io::connect(fd, a.get(), a.len, d);
    if (r == 0) return fd;
    sys(SYS_close, fd);
    last = r;
    if (why != nullptr) {
      // The reason in the errno's words; the code comes from the last one.
      absl::StrAppend(&tried, tried.empty() ? "" : "; ", with_reason(absl::StrCat("connect to ", a.ToString()), -r));
    }
    if (r == -ETIMEDOUT) break;
  }
  if (why != nullptr) *why = absl::Status(code_for_errno(-last), absl::StrCat(call, ": ", tried));
  return last;
}

}  // namespace

int listen_tcp(std::string_view host, uint16_t port, int backlog) {
  ListenOptions o;
  o.backlog = backlog;
  return listen_steps(host, port, o, nullptr);
}

int listen_tcp(std::string_view host, uint16_t port, const ListenOptions& opts) {
  return listen_steps(host, port, opts, nullptr);
}

absl::StatusOr<int> listen_tcp_or(std::string_view host, uint16_t port, const ListenOptions& opts) {
  absl::Status why;
  int fd = listen_steps(host, port, opts, &why);
  if (fd >= 0) return fd;
  return why;
}

int connect_tcp(std::string_view host, uint16_t port, Deadline d) { return connect_steps(host, port, d, nullptr); }

absl::StatusOr<int> dial_tcp(std::string_view host, uint16_t port, Deadline d) {
  absl::Status why;
  int fd = connect_steps(host, port, d, &why);
  if (fd >= 0) return fd;
  return why;
}

std::string Address::ToString() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (storage.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    return absl::StrCat(buf, ":", ntohs(v4->sin_port));
  }
  if (storage.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    return absl::StrCat("[", buf, "]:", ntohs(v6->sin6_port));
  }
  return "?";
}

}  // namespace weft::io
