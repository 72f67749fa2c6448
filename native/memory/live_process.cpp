#include "memory/live_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace heapwalk::memory {

LiveProcess::LiveProcess(int pid, bool freeze) : pid_(pid) {
  std::string base = "/proc/" + std::to_string(pid);
  if (pid <= 0 || ::access(base.c_str(), F_OK) != 0) throw FormatError("pid " + std::to_string(pid), "no such process");
  if (freeze) this->freeze();
  fd_ = ::open((base + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    int e = errno;
    release();
    throw FormatError(base + "/mem", std::strerror(e));
  }
  load_maps();
}

void LiveProcess::freeze() {
  std::string base = "/proc/" + std::to_string(pid_);
  // Threads may start while the others are being stopped: list the tasks again until a pass
  // finds none that is not stopped yet (a stopped thread cannot create another).
  for (int pass = 0; pass < 100; ++pass) {
    DIR* d = ::opendir((base + "/task").c_str());
    if (!d) {
      int e = errno;
      release();
      throw FormatError("pid " + std::to_string(pid_), std::strerror(e));
    }
    std::vector<int> tids;
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') tids.push_back(std::atoi(e->d_name));
    }
    ::closedir(d);
    std::sort(tids.begin(), tids.end());
    bool fresh = false;
    for (int tid : tids) {
      if (std::find(seized_.begin(), seized_.end(), tid) != seized_.end()) continue;
      fresh = true;
      if (::ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
        int e = errno;
        if (e == ESRCH) continue;  // the thread exited meanwhile
        release();
        throw FormatError("pid " + std::to_string(pid_),
                          std::string("cannot ptrace thread ") + std::to_string(tid) + ": " + std::strerror(e) +
                              (e == EPERM ? " (another debugger attached, or ptrace_scope)" : ""));
      }
      seized_.push_back(tid);
      ::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
      int status = 0;
      ::waitpid(tid, &status, __WALL);
      CoreThread t;
      t.lwp = tid;
      user_regs_struct regs{};
      if (::ptrace(PTRACE_GETREGS, tid, nullptr, &regs) == 0) {
        t.fs_base = regs.fs_base;
        t.rsp = regs.rsp;
        t.rip = regs.rip;
        static_assert(sizeof regs == sizeof t.regs, "user_regs_struct is 27 words");
        std::memcpy(t.regs.data(), &regs, sizeof regs);
        t.has_regs = true;
      }
      threads_.push_back(t);
    }
    if (!fresh) break;
  }
  std::sort(threads_.begin(), threads_.end(), [](const CoreThread& a, const CoreThread& b) { return a.lwp < b.lwp; });
  // The main thread (lwp == pid) first, as in a core's notes.
  std::stable_partition(threads_.begin(), threads_.end(), [this](const CoreThread& t) { return t.lwp == pid_; });
}

LiveProcess::~LiveProcess() {
  release();
  if (fd_ >= 0) ::close(fd_);
}

void LiveProcess::release() {
  for (int tid : seized_) ::ptrace(PTRACE_DETACH, tid, nullptr, nullptr);
  seized_.clear();
}

void LiveProcess::load_maps() {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/maps");
  if (!in) throw FormatError("/proc/" + std::to_string(pid_) + "/maps", "cannot read");
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long start = 0, end = 0, off = 0;
    char perms[8] = {0};
    int pos = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx %4s %llx %*s %*s%n", &start, &end, perms, &off, &pos) < 4) continue;
    Region r;
    r.start = start;
    r.end = end;
    r.read = perms[0] == 'r';
    r.write = perms[1] == 'w';
    r.exec = perms[2] == 'x';
    r.file_offset = off;
    r.saved_end = end;
    std::string rest = line.substr(static_cast<size_t>(pos));
    size_t b = rest.find_first_not_of(' ');
    r.path = b == std::string::npos ? "" : rest.substr(b);
    regions_.push_back(std::move(r));
  }
}

size_t LiveProcess::read(uint64_t addr, void* out, size_t len) {
  size_t done = 0;
  auto* dst = static_cast<uint8_t*>(out);
  while (done < len) {
    ssize_t n = ::pread(fd_, dst + done, len - done, static_cast<off_t>(addr + done));
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    done += static_cast<size_t>(n);
  }
  return done;
}

}  // namespace heapwalk::memory
