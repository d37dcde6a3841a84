// io/uring_defs.h — io_uring constants newer than Debian 12's liburing 2.3.
//
// The kernel may support opcodes and flags that liburing 2.3's headers do
// not name yet. They are defined here, in one place, and the SQEs that use
// them are prepared by hand. Each is probed at run time before use.
#pragma once

#include <liburing.h>

#include <cstdint>

namespace weft::io_internal {

// enum io_uring_op, Linux 6.0 .. 6.7 (liburing 2.3 stops at SENDMSG_ZC = 48).
inline constexpr uint8_t kOpReadMultishot = 49;  // 6.7
inline constexpr uint8_t kOpWaitid = 50;         // 6.7
inline constexpr uint8_t kOpFutexWait = 51;      // 6.7
inline constexpr uint8_t kOpFutexWake = 52;      // 6.7

// futex2 flags (linux/futex.h, 6.7): the size of the futex word, and private.
inline constexpr uint32_t kFutex2SizeU32 = 0x02;
inline constexpr uint32_t kFutex2Private = 128;
inline constexpr uint64_t kFutexBitsetMatchAny = 0xffffffffu;

// Prepares IORING_OP_FUTEX_WAIT: complete when *word != val at submission,
// or when woken by a futex wake on word (what liburing >= 2.5's
// io_uring_prep_futex_wait does).
inline void prep_futex_wait(io_uring_sqe* sqe, const uint32_t* word, uint32_t val) {
  io_uring_prep_rw(kOpFutexWait, sqe, static_cast<int>(kFutex2SizeU32 | kFutex2Private), word, 0, val);
  sqe->rw_flags = 0;  // futex_flags in newer headers: no multishot etc.
  sqe->addr3 = kFutexBitsetMatchAny;
}

// Prepares IORING_OP_WAITID: waitid(idtype, id, info, options) done by the
// ring (what liburing >= 2.5's io_uring_prep_waitid does); the kernel fills
// *info when the request completes with 0.
inline void prep_waitid(io_uring_sqe* sqe, int idtype, int id, void* info, int options) {
  io_uring_prep_rw(kOpWaitid, sqe, id, nullptr, static_cast<unsigned>(idtype), 0);
  sqe->rw_flags = 0;  // waitid_flags in newer headers
  sqe->file_index = static_cast<uint32_t>(options);
  sqe->addr2 = reinterpret_cast<uint64_t>(info);
}

}  // namespace weft::io_internal
