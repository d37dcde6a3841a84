// io/address.cc — socket addresses: numeric host parsing, Address::ToString,
// local_port, and the TCP conveniences listen_tcp and connect_tcp.
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

int listen_tcp(std::string_view host, uint16_t port, int backlog) {
  Address a;
  if (!numeric_address(host, port, &a)) {
    absl::StatusOr<std::vector<Address>> r = resolve(host, port);
    if (!r.ok() || r->empty()) return -EADDRNOTAVAIL;
    a = r->front();
  }
  int fd = io::socket(a.storage.ss_family, SOCK_STREAM, 0);
  if (fd < 0) return fd;
  int one = 1;
  sys(SYS_setsockopt, fd, SOL_SOCKET, SO_REUSEADDR, arg(&one), sizeof one);
  int r = io::bind(fd, a.get(), a.len);
  if (r == 0) r = io::listen(fd, backlog);
  if (r < 0) {
    sys(SYS_close, fd);
    return r;
  }
  return fd;
}

int connect_tcp(std::string_view host, uint16_t port, Deadline d) {
  std::vector<Address> addrs(1);
  if (!numeric_address(host, port, &addrs[0])) {
    absl::StatusOr<std::vector<Address>> r = resolve(host, port, d);
    if (!r.ok()) {
      if (absl::IsNotFound(r.status())) return -EHOSTUNREACH;
      if (absl::IsDeadlineExceeded(r.status())) return -ETIMEDOUT;
      return -EAGAIN;
    }
    addrs = std::move(*r);
  }
  int last = -EHOSTUNREACH;
  for (const Address& a : addrs) {
    int fd = io::socket(a.storage.ss_family, SOCK_STREAM, 0);
    if (fd < 0) return fd;
    int r = io::connect(fd, a.get(), a.len, d);
    if (r == 0) return fd;
    sys(SYS_close, fd);
    last = r;
    if (r == -ETIMEDOUT) break;
  }
  return last;
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
