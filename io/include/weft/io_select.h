// weft/io_select.h — io readiness as a weft::select case.
//
//   int revents = 0;
//   std::optional<Msg> m;
//   switch (weft::select(weft::io::ready_case(fd, POLLIN, &revents),
//                        weft::recv_case(control, &m), weft::after(1s))) {
//     case 0: /* fd is readable (revents), or revents is -errno */ break;
//     ...
//   }
//
// The case is served by a helper ULT that waits in io::poll(fd, events)
// and hands its result to the select through a one-slot channel; when
// another case fires first, that ULT is asked to stop (its poll is
// cancelled: weft/runtime.h, "Cancellation") and joined before select's
// caller goes on. Readiness is only observed, never consumed (no data is
// read), so losing the race to another case loses nothing. Cost: one
// spawn, one poll operation and one join per select that names it (about
// a microsecond); for a hot loop on one descriptor prefer plain io calls
// with a Deadline. In a ULT only: outside a ULT (no runtime to run the
// helper) the case fires at once with revents = -ENOTSUP.
#pragma once

#include <cerrno>
#include <optional>

#include "weft/channel.h"
#include "weft/io.h"
#include "weft/runtime.h"
#include "weft/select.h"

namespace weft::io {

class ReadyCase {
 public:
  // Waits until fd is ready for `events` (POLLIN, POLLOUT, ...); when the
  // case fires, *revents holds the ready events, or -errno (as io::poll).
  ReadyCase(int fd, short events, int* revents)
      : revents_(revents),
        ch_(1),
        inner_(&ch_, &got_),
        poller_(weft::spawn([this, fd, events] { (void)ch_.try_send(io::poll(fd, events)); })) {
    if (!poller_.status().ok()) (void)ch_.try_send(-ENOTSUP);
  }
  ReadyCase(const ReadyCase&) = delete;
  ReadyCase& operator=(const ReadyCase&) = delete;
  // The helper is asked to stop and joined (JoinHandle's destructor).
  ~ReadyCase() = default;

  // Used by select() only.
  detail::SelCase to_case() { return inner_.to_case(); }
  void finish(const detail::SelCase& c, bool fired) {
    inner_.finish(c, fired);
    if (fired) *revents_ = got_.has_value() ? *got_ : -ECANCELED;
  }

 private:
  int* revents_;
  Channel<int> ch_;
  std::optional<int> got_;
  RecvCase<int> inner_;
  Ult poller_;  // last: destroyed (stopped and joined) before the channel
};

// A select case that fires when fd is ready for `events` (see ReadyCase).
inline ReadyCase ready_case(int fd, short events, int* revents) { return ReadyCase(fd, events, revents); }

}  // namespace weft::io
