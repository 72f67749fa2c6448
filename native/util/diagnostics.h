// Diagnostics: corruption and surprises are data, never stderr output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace heapwalk {

/// One finding about the target that may make results incomplete.
/// `kind` is a short stable token (see native/bindings/API.md); "note" is informational.
struct Diagnostic {
  std::string kind;
  std::optional<uint64_t> address;
  std::optional<uint64_t> arena;
  std::string detail;
};

/// Collects diagnostics with a cap so a hostile input cannot make the list unbounded.
class Diagnostics {
 public:
  static constexpr size_t kMax = 1000;

  void add(std::string kind, std::optional<uint64_t> address, std::optional<uint64_t> arena, std::string detail) {
    if (items_.size() < kMax) {
      items_.push_back({std::move(kind), address, arena, std::move(detail)});
    } else {
      ++dropped_;
    }
  }
  void note(std::string detail) { add("note", std::nullopt, std::nullopt, std::move(detail)); }
  const std::vector<Diagnostic>& items() const { return items_; }
  size_t dropped() const { return dropped_; }
  void append(const Diagnostics& other) {
    for (const auto& d : other.items_) add(d.kind, d.address, d.arena, d.detail);
    dropped_ += other.dropped_;
  }

 private:
  std::vector<Diagnostic> items_;
  size_t dropped_ = 0;
};

/// Hex formatting helper used in diagnostic details.
std::string hex(uint64_t value);

}  // namespace heapwalk
