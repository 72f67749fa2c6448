#include "memory/live_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace heapwalk::memory {

LiveProcess::LiveProcess(int pid, bool freeze) : pid_(pid) {
  std::string base = "/proc/" + std::to_string(pid);
  if (pid <= 0 || ::access(base.c_str(), F_OK) != 0) throw FormatError("pid " + std::to_string(pid), "no such process");
  if (freeze) this->freeze();
  mm_pid_ = memory_task(pid);  // a zombie leader's memory is reached through a live thread
  base = "/proc/" + std::to_string(mm_pid_);
  fd_ = ::open((base + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    int e = errno;
    release();
    throw FormatError(base + "/mem", std::strerror(e));
  }
  load_maps();
}

char task_state(int pid, int tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  size_t close = line.rfind(')');  // the name may contain spaces and parentheses
  if (close == std::string::npos || close + 2 >= line.size()) return 0;
  return line[close + 2];
}

namespace {

std::vector<int> list_tasks(int pid) {
  std::vector<int> tids;
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/task").c_str());
  if (!d) return tids;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9') tids.push_back(std::atoi(e->d_name));
  }
  ::closedir(d);
  std::sort(tids.begin(), tids.end());
  return tids;
}

bool gone(char state) { return state == 'Z' || state == 'X' || state == 0; }

double seconds_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

/// How long a thread may take to reach its ptrace stop (HEAPWALK_STOP_TIMEOUT seconds, else 5):
/// a thread in uninterruptible sleep (a vfork parent, a hung NFS read) stops only when it
/// returns to user space.
double stop_timeout() {
  const char* t = std::getenv("HEAPWALK_STOP_TIMEOUT");
  double v = t ? std::atof(t) : 0;
  return v > 0 ? v : 5.0;
}

}  // namespace

int memory_task(int pid) {
  if (!gone(task_state(pid, pid))) return pid;
  for (int tid : list_tasks(pid))
    if (!gone(task_state(pid, tid))) return tid;
  return pid;
}

void LiveProcess::freeze() {
  std::string base = "/proc/" + std::to_string(pid_);
  const double timeout = stop_timeout();
  // Threads may start while the others are being stopped: list the tasks again until a pass
  // finds none that is not stopped yet (a stopped thread cannot create another).
  for (int pass = 0; pass < 100; ++pass) {
    if (::access((base + "/task").c_str(), F_OK) != 0) {
      int e = errno;
      release();
      throw FormatError("pid " + std::to_string(pid_), std::strerror(e));
    }
    bool fresh = false;
    for (int tid : list_tasks(pid_)) {
      if (std::find(seized_.begin(), seized_.end(), tid) != seized_.end()) continue;
      if (std::find(skipped_.begin(), skipped_.end(), tid) != skipped_.end()) continue;
      // A zombie (an exited thread-group leader whose threads run on) has no registers and
      // cannot be seized: it is not an error, and there is nothing of it to stop.
      if (gone(task_state(pid_, tid))) {
        skipped_.push_back(tid);
        continue;
      }
      fresh = true;
      if (::ptrace(PTRACE_SEIZE, tid, nullptr, nullptr) != 0) {
        int e = errno;
        if (e == ESRCH || gone(task_state(pid_, tid))) {  // the thread exited meanwhile
          skipped_.push_back(tid);
          continue;
        }
        release();
        throw FormatError("pid " + std::to_string(pid_),
                          std::string("cannot ptrace thread ") + std::to_string(tid) + ": " + std::strerror(e) +
                              (e == EPERM ? " (another debugger attached, or ptrace_scope)" : ""));
      }
      seized_.push_back(tid);
      ::ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
      // Wait for the stop, bounded: never block forever on a thread that cannot stop.
      const double deadline = seconds_now() + timeout;
      bool stopped = false, exited = false;
      for (;;) {
        int status = 0;
        pid_t w = ::waitpid(tid, &status, __WALL | WNOHANG);
        if (w == tid) {
          if (WIFEXITED(status) || WIFSIGNALED(status)) exited = true;
          stopped = !exited;
          break;
        }
        if (w < 0 && errno != EINTR) {
          exited = errno == ECHILD && gone(task_state(pid_, tid));
          break;
        }
        if (seconds_now() > deadline) break;
        timespec ms{0, 500000};
        ::nanosleep(&ms, nullptr);
      }
      if (exited) {  // it ended while we stopped it: no longer part of the process
        seized_.erase(std::find(seized_.begin(), seized_.end(), tid));
        skipped_.push_back(tid);
        continue;
      }
      if (!stopped) {
        char st = task_state(pid_, tid);
        release();
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.0f s", timeout);
        throw FormatError("pid " + std::to_string(pid_),
                          "thread " + std::to_string(tid) + " did not stop within " + buf + " (state " +
                              std::string(1, st ? st : '?') +
                              (st == 'D' ? ": uninterruptible sleep, e.g. a vfork parent waiting for its child, or"
                                           " blocked on I/O"
                                         : "") +
                              "); nothing was read; try again later (HEAPWALK_STOP_TIMEOUT=SECONDS waits longer)");
      }
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
  std::ifstream in("/proc/" + std::to_string(mm_pid_) + "/maps");
  if (!in) throw FormatError("/proc/" + std::to_string(mm_pid_) + "/maps", "cannot read");
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
