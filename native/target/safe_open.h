// Opening files a target names (NT_FILE, /proc/PID/maps, debug-file paths) without trusting the
// names: resolved inside the sysroot by descriptor, regular files only, no device ever opened.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace heapwalk::target {

/// Closes its descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset();

 private:
  int fd_ = -1;
};

/// A sysroot held open as a directory descriptor. Every name is resolved inside it
/// (openat2 RESOLVE_IN_ROOT, else a component-wise O_NOFOLLOW walk that resolves symlinks
/// relative to the root), so `..`, absolute symlinks and a directory swapped for a symlink
/// during the run cannot leave it. The given path is not canonicalised: `/proc/PID/root`
/// stays that process's root, in its mount namespace.
class Root {
 public:
  /// `dir` empty: the host's own root (names are opened as they are).
  explicit Root(const std::string& dir);
  bool host() const { return host_; }
  /// Why the sysroot could not be opened ("" when it was).
  const std::string& error() const { return error_; }
  const std::string& name() const { return name_; }
  /// How `path` is shown in messages: `<sysroot>/<path>` (or `path` on the host root).
  std::string display(const std::string& path) const;

  /// Opens `path` (as the target named it) read-only: resolved inside the root, refused unless it
  /// is a regular file (FIFOs, devices, directories are never opened for reading: the name is
  /// resolved with O_PATH, checked with fstat, then reopened through the descriptor).
  /// `max_size` > 0 bounds the size. Returns an invalid Fd and sets `why` on refusal.
  Fd open_regular(const std::string& path, std::string* why, uint64_t max_size = 0) const;

  /// For tests: resolve with the component-wise walk even where openat2 exists.
  static void force_walk(bool on);

 private:
  Fd resolve(const std::string& rel, std::string* why) const;
  std::string name_, strip_;
  Fd dir_;
  bool host_ = true;
  std::string error_;
};

/// Writes `data` to a new file in the directory `dirfd`, then renames it to `name` (atomic for
/// readers). The temporary is created O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, under a fresh name
/// (`name.tmp<PID>.<random>`): a file or symlink planted at any name is never followed or
/// truncated. False on failure, with nothing left behind.
bool write_new_file(int dirfd, const std::string& name, const std::string& data);
/// The same with the temporary's name given (tests: a symlink planted there makes it fail).
bool write_new_file_via(int dirfd, const std::string& tmp, const std::string& name, const std::string& data);

/// Reopens an O_PATH descriptor of a regular file for reading (through /proc/self/fd), checking it
/// is still the same file. Invalid Fd on failure.
Fd reopen_for_reading(int path_fd);

}  // namespace heapwalk::target
