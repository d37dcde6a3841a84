// weft/ult_id.h — weft::UltId, the identity of a ULT. Included by
// weft/runtime.h; use that.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace weft {

// Identifies a ULT: an index into weft's ULT table plus a generation that
// changes every time the slot is reused. Never a pointer: a stale or forged
// id is detected by every call that takes one. Ids are never reused: once
// an id is stale (its ULT was joined or detached and has exited) it never
// names another ULT for the life of the process (a slot whose 32-bit
// generation runs out is retired, not wrapped). The default value is the
// invalid id (no ULT has it).
class UltId {
 public:
  constexpr UltId() = default;
  static constexpr UltId FromValue(uint64_t v) { return UltId(v); }
  constexpr uint64_t value() const { return value_; }
  constexpr uint32_t index() const { return static_cast<uint32_t>(value_); }
  constexpr uint32_t generation() const { return static_cast<uint32_t>(value_ >> 32); }
  constexpr bool valid() const { return generation() != 0; }
  friend constexpr bool operator==(UltId a, UltId b) { return a.value_ == b.value_; }
  friend constexpr bool operator!=(UltId a, UltId b) { return a.value_ != b.value_; }
  friend constexpr bool operator<(UltId a, UltId b) { return a.value_ < b.value_; }
  template <typename H>
  friend H AbslHashValue(H h, UltId id) {
    return H::combine(std::move(h), id.value_);
  }
  // "index.generation", e.g. "17.3"; "none" for the invalid id.
  std::string ToString() const;

 private:
  constexpr explicit UltId(uint64_t v) : value_(v) {}
  uint64_t value_ = 0;
};

}  // namespace weft
