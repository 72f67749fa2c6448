// Diagnostics: corruption and surprises are data, never stderr output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace heapwalk {

/// What a diagnostic says about the result it comes with; decides the exit status.
enum class Severity {
  Note,     ///< information only; the result is complete and exact (exit 0)
  Warning,  ///< something was missing or unused, but the result is still complete and exact (exit 0)
  Error,    ///< the result is incomplete or may be wrong: corruption, truncation, unreadable memory (exit 1)
};

/// "note", "warning" or "error".
const char* severity_name(Severity s);

/// One diagnostic kind: its stable token, its severity and what it means (README's table).
struct DiagnosticKind {
  const char* kind;
  Severity severity;
  const char* meaning;
};

/// Every kind the engine produces, in the order README lists them.
const std::vector<DiagnosticKind>& diagnostic_kinds();

/// The severity of `kind`; a kind not in diagnostic_kinds() is an Error (never a silent exit 0).
Severity severity_of(std::string_view kind);

/// One finding about the target that may make results incomplete.
/// `kind` is a short stable token (see native/bindings/API.md); its severity comes from
/// diagnostic_kinds(), decided here, not by the front ends.
struct Diagnostic {
  std::string kind;
  std::optional<uint64_t> address;
  std::optional<uint64_t> arena;
  std::string detail;
  Severity severity = Severity::Error;
};

/// Collects diagnostics with a cap so a hostile input cannot make the list unbounded. Past the
/// cap, the first Error is still kept (one more item), so a list full of warnings cannot hide
/// that the result is incomplete.
class Diagnostics {
 public:
  static constexpr size_t kMax = 1000;

  void add(std::string kind, std::optional<uint64_t> address, std::optional<uint64_t> arena, std::string detail) {
    Severity s = severity_of(kind);
    if (items_.size() < kMax || (s == Severity::Error && !has_error_)) {
      items_.push_back({std::move(kind), address, arena, std::move(detail), s});
      if (s == Severity::Error) has_error_ = true;
    } else {
      ++dropped_;
    }
  }
  void note(std::string detail) { add("note", std::nullopt, std::nullopt, std::move(detail)); }
  const std::vector<Diagnostic>& items() const { return items_; }
  size_t dropped() const { return dropped_; }
  /// True when some diagnostic (kept or not) is an Error.
  bool has_error() const { return has_error_; }
  void append(const Diagnostics& other) {
    for (const auto& d : other.items_) add(d.kind, d.address, d.arena, d.detail);
    dropped_ += other.dropped_;
  }

 private:
  std::vector<Diagnostic> items_;
  size_t dropped_ = 0;
  bool has_error_ = false;
};

/// Hex formatting helper used in diagnostic details.
std::string hex(uint64_t value);

}  // namespace heapwalk
