#include "target/safe_open.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

namespace heapwalk::target {

namespace {

std::atomic<bool> g_force_walk{false};

std::string kind_of(mode_t m) {
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISLNK(m)) return "a symlink";
  return "not a regular file";
}

std::vector<std::string> split(const std::string& p) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    if (j > i) out.push_back(p.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

// openat2(2) through syscall(2): glibc 2.36 has no wrapper. -1/ENOSYS on kernels before 5.6.
int openat2_in_root(int dirfd, const std::string& rel) {
  struct open_how how {};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  // EAGAIN: a rename or mount raced the lookup of `..` (the kernel's own check); try again.
  for (int attempt = 0;; ++attempt) {
    int fd = static_cast<int>(::syscall(SYS_openat2, dirfd, rel.c_str(), &how, sizeof how));
    if (fd >= 0 || errno != EAGAIN || attempt == 16) return fd;
  }
}

// The fallback: one component at a time, each opened O_PATH|O_NOFOLLOW relative to the directory
// reached so far; a symlink's target is resolved from the root (absolute) or from its directory
// (relative), `..` never climbs above the root. Same answer as RESOLVE_IN_ROOT.
int walk_in_root(int rootfd, const std::string& rel) {
  std::vector<Fd> dirs;  // dirs.back() is the current directory; empty means the root
  std::deque<std::string> todo;
  for (auto& c : split(rel)) todo.push_back(std::move(c));
  int links = 0;
  auto cur = [&] { return dirs.empty() ? rootfd : dirs.back().get(); };
  while (!todo.empty()) {
    std::string c = std::move(todo.front());
    todo.pop_front();
    if (c == ".") continue;
    if (c == "..") {
      if (!dirs.empty()) dirs.pop_back();
      continue;
    }
    Fd fd(::openat(cur(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return -1;
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return -1;
    if (S_ISLNK(st.st_mode)) {
      if (++links > 40) {
        errno = ELOOP;
        return -1;
      }
      char buf[PATH_MAX];
      ssize_t n = ::readlinkat(fd.get(), "", buf, sizeof buf - 1);
      if (n <= 0) return -1;
      std::string target(buf, static_cast<size_t>(n));
      if (target[0] == '/') dirs.clear();
      auto parts = split(target);
      todo.insert(todo.begin(), parts.begin(), parts.end());
      continue;
    }
    if (todo.empty()) return fd.release();
    if (!S_ISDIR(st.st_mode)) {
      errno = ENOTDIR;
      return -1;
    }
    dirs.push_back(std::move(fd));
  }
  errno = EISDIR;  // the name resolved to the root itself
  return -1;
}

}  // namespace

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Root::force_walk(bool on) { g_force_walk = on; }

Root::Root(const std::string& dir) : name_(dir) {
  if (dir.empty()) return;
  host_ = false;
  // Kept as given: realpath("/proc/PID/root") names our "/" when the process is in another mount
  // namespace; the descriptor is that process's root.
  dir_ = Fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir_) {
    error_ = std::string("cannot open sysroot ") + dir + ": " + std::strerror(errno);
    return;
  }
  // A core made from outside a chroot (gcore on the host) names files by their host path, which
  // already lies under the sysroot: that prefix is taken off before resolving inside the root.
  // Only a name comparison: the resolution itself never leaves the descriptor.
  char real[PATH_MAX];
  if (::realpath(dir.c_str(), real) && std::strcmp(real, "/") != 0) strip_ = real;
}

std::string Root::display(const std::string& path) const {
  if (host_) return path;
  return name_ + (path.empty() || path[0] != '/' ? "/" : "") + path;
}

Fd Root::resolve(const std::string& path, std::string* why) const {
  auto fail = [&](const std::string& w) {
    if (why) *why = w;
    return Fd();
  };
  if (path.empty()) return fail("empty file name");
  if (host_) {
    Fd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
    if (!fd) return fail(std::strerror(errno));
    return fd;
  }
  if (!dir_) return fail(error_);
  std::string rel = path;
  if (!strip_.empty() && rel.compare(0, strip_.size(), strip_) == 0 &&
      (rel.size() == strip_.size() || rel[strip_.size()] == '/'))
    rel = rel.substr(strip_.size());
  while (!rel.empty() && rel[0] == '/') rel.erase(0, 1);
  if (rel.empty()) return fail("names the sysroot itself");
  int fd = -1;
  if (!g_force_walk) {
    fd = openat2_in_root(dir_.get(), rel);
    if (fd < 0 && (errno == ENOSYS || errno == EPERM)) fd = walk_in_root(dir_.get(), rel);  // EPERM: seccomp
  } else {
    fd = walk_in_root(dir_.get(), rel);
  }
  if (fd < 0) return fail(std::strerror(errno));
  return Fd(fd);
}

Fd reopen_for_reading(int path_fd) {
  struct stat a {
  }, b{};
  if (::fstat(path_fd, &a) != 0 || !S_ISREG(a.st_mode)) return Fd();
  std::string proc = "/proc/self/fd/" + std::to_string(path_fd);
  // O_NONBLOCK | O_NOCTTY: whatever the descriptor names, opening it has no side effect.
  Fd fd(::open(proc.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) return Fd();
  if (::fstat(fd.get(), &b) != 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino || !S_ISREG(b.st_mode)) return Fd();
  return fd;
}

Fd Root::open_regular(const std::string& path, std::string* why, uint64_t max_size) const {
  Fd p = resolve(path, why);
  if (!p) return p;
  struct stat st {};
  if (::fstat(p.get(), &st) != 0) {
    if (why) *why = std::strerror(errno);
    return Fd();
  }
  if (!S_ISREG(st.st_mode)) {
    if (why) *why = kind_of(st.st_mode) + ", not a regular file; not opened";
    return Fd();
  }
  if (max_size && static_cast<uint64_t>(st.st_size) > max_size) {
    if (why) *why = "larger than " + std::to_string(max_size) + " bytes; not read";
    return Fd();
  }
  Fd fd = reopen_for_reading(p.get());
  if (!fd && why) *why = "cannot reopen for reading";
  return fd;
}

bool write_new_file_via(int dirfd, const std::string& tmp, const std::string& name, const std::string& data) {
  Fd fd(::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600));
  if (!fd) return false;
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      ::unlinkat(dirfd, tmp.c_str(), 0);
      return false;
    }
    done += static_cast<size_t>(n);
  }
  fd.reset();
  if (::renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0) {
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return false;
  }
  return true;
}

bool write_new_file(int dirfd, const std::string& name, const std::string& data) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    uint64_t r = 0;
    if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r))
      r = static_cast<uint64_t>(::getpid()) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(attempt);
    char suffix[24];
    std::snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(r));
    std::string tmp = name + ".tmp" + std::to_string(::getpid()) + "." + suffix;
    if (write_new_file_via(dirfd, tmp, name, data)) return true;
    if (errno != EEXIST) return false;
  }
  return false;
}

}  // namespace heapwalk::target
