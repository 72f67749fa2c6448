#include "memory/capture.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <thread>

#include "memory/live_process.h"
#include "util/diagnostics.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace heapwalk::memory {

namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kIovMax = 1024;  // IOV_MAX on Linux

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::string pid_name(int pid) { return "pid " + std::to_string(pid); }

struct MapEntry {
  uint64_t start = 0, end = 0, offset = 0, inode = 0;
  bool r = false, w = false, x = false, shared = false;
  std::string path;
  bool file() const { return !path.empty() && path[0] == '/'; }
  bool special() const { return path == "[vvar]" || path == "[vsyscall]" || path == "[vvar_vclock]"; }
};

std::vector<MapEntry> read_maps(int pid) {
  std::string p = "/proc/" + std::to_string(pid) + "/maps";
  std::ifstream in(p);
  if (!in) throw FormatError(p, std::strerror(errno));
  std::vector<MapEntry> out;
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long start = 0, end = 0, off = 0, inode = 0;
    char perms[8] = {0};
    int pos = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx %4s %llx %*s %llu%n", &start, &end, perms, &off, &inode, &pos) < 5)
      continue;
    MapEntry m;
    m.start = start;
    m.end = end;
    m.offset = off;
    m.inode = inode;
    m.r = perms[0] == 'r';
    m.w = perms[1] == 'w';
    m.x = perms[2] == 'x';
    m.shared = perms[3] == 's';
    std::string rest = line.substr(static_cast<size_t>(pos));
    size_t b = rest.find_first_not_of(' ');
    m.path = b == std::string::npos ? "" : rest.substr(b);
    out.push_back(std::move(m));
  }
  return out;
}

// One contiguous run of pages to copy: target address, length, offset in the file.
struct Run {
  uint64_t addr, len, file_off;
};

enum class Mode : uint8_t { None, Resident, Whole, FirstPage };

struct Planned {
  MapEntry map;
  Mode mode = Mode::None;
  uint64_t slot = 0;      // file offset of map.start (Resident/Whole/FirstPage)
  uint64_t slot_len = 0;  // bytes the slot spans in the file
  uint64_t file_len = 0;  // PT_LOAD p_filesz
  std::vector<Run> runs;  // what to copy
  bool excluded = false;  // an `exclude` range (no bytes)
  std::string why;        // for excluded
};

class PagemapReader {
 public:
  explicit PagemapReader(int pid) {
    fd_ = ::open(("/proc/" + std::to_string(pid) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
    zero_pfn_ = shared_zero_pfn();
  }
  ~PagemapReader() {
    if (fd_ >= 0) ::close(fd_);
  }
  PagemapReader(const PagemapReader&) = delete;
  PagemapReader& operator=(const PagemapReader&) = delete;
  bool ok() const { return fd_ >= 0; }
  /// Calls run(start, end) for every maximal run of present-or-swapped pages in [lo, hi), and
  /// reports whether any page is a private anonymous page (copy-on-write of a file mapping).
  /// Calls page(address, present_or_swapped, soft_dirty) for every page of [lo, hi).
  template <typename F>
  void scan(uint64_t lo, uint64_t hi, F&& page) {
    uint64_t first = lo / kPage, n = (hi - lo) / kPage;
    for (uint64_t done = 0; done < n;) {
      uint64_t k = std::min<uint64_t>(n - done, buf_.size());
      ssize_t got = ::pread(fd_, buf_.data(), k * 8, static_cast<off_t>((first + done) * 8));
      uint64_t m = got > 0 ? static_cast<uint64_t>(got) / 8 : 0;
      for (uint64_t i = 0; i < k; ++i) {
        uint64_t e = i < m ? buf_[i] : (uint64_t{1} << 63 | uint64_t{1} << 55);  // unknown: copy
        // A page mapped to the shared zero page (a read of a never-written page, e.g. by an
        // earlier gcore) holds nothing: a hole reads the same.
        bool zero = zero_pfn_ && (e >> 63 & 1) && (e & kPfnMask) == zero_pfn_;
        bool present = ((e >> 63 & 1) || (e >> 62 & 1)) && !zero;
        page((first + done + i) * kPage, present, (e >> 55 & 1) != 0, present && !(e >> 61 & 1));
      }
      done += k;
    }
  }
  /// Calls run(start, end) for every maximal run of present-or-swapped pages in [lo, hi), and
  /// reports whether any page is a private anonymous page (copy-on-write of a file mapping).
  template <typename F>
  bool runs(uint64_t lo, uint64_t hi, F&& run) {
    bool anon = false, open = false;
    uint64_t open_at = 0;
    scan(lo, hi, [&](uint64_t a, bool present, bool, bool private_anon) {
      anon = anon || private_anon;
      if (present && !open) {
        open = true;
        open_at = a;
      } else if (!present && open) {
        open = false;
        run(open_at, a);
      }
    });
    if (open) run(open_at, hi);
    return anon;
  }
  /// Clears the soft-dirty bits of `pid` (Documentation/admin-guide/mm/soft-dirty.rst), after
  /// checking on a page of our own that the kernel tracks them; false when it cannot.
  static bool clear_soft_dirty(int pid) {
    if (!soft_dirty_works()) return false;
    int fd = ::open(("/proc/" + std::to_string(pid) + "/clear_refs").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::write(fd, "4", 1) == 1;
    ::close(fd);
    return ok;
  }

 private:
  static constexpr uint64_t kPfnMask = (uint64_t{1} << 55) - 1;
  static uint64_t self_entry(const void* p) {
    uint64_t e = 0;
    int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    if (::pread(fd, &e, 8, static_cast<off_t>(reinterpret_cast<uintptr_t>(p) / kPage * 8)) != 8) e = 0;
    ::close(fd);
    return e;
  }
  static bool soft_dirty_works() {
    static const bool works = [] {
      void* p = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return false;
      auto* v = static_cast<volatile uint8_t*>(p);
      *v = 1;
      bool ok = false;
      int fd = ::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
      if (fd >= 0 && ::write(fd, "4", 1) == 1) {
        bool cleared = !(self_entry(p) >> 55 & 1);
        *v = 2;
        ok = cleared && (self_entry(p) >> 55 & 1);
      }
      if (fd >= 0) ::close(fd);
      ::munmap(p, kPage);
      return ok;
    }();
    return works;
  }
  /// The PFN of the kernel's zero page, from a read-only page of our own (0 when PFNs are
  /// hidden, i.e. without CAP_SYS_ADMIN: then zero pages are copied like any other).
  static uint64_t shared_zero_pfn() {
    void* p = ::mmap(nullptr, kPage, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 0;
    uint64_t e = 0;
    (void)*static_cast<volatile const uint8_t*>(p);
    int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && ::pread(fd, &e, 8, static_cast<off_t>(reinterpret_cast<uintptr_t>(p) / kPage * 8)) == 8;
    if (fd >= 0) ::close(fd);
    ::munmap(p, kPage);
    return ok && (e >> 63 & 1) ? e & kPfnMask : 0;
  }
  int fd_ = -1;
  uint64_t zero_pfn_ = 0;
  std::vector<uint64_t> buf_ = std::vector<uint64_t>(1 << 15);
};

// Decides how a mapping is copied (see capture.h) and lists its runs, slots not yet assigned.
Planned plan_one(const MapEntry& m, PagemapReader& pm, const CaptureOptions& opt) {
  Planned p;
  p.map = m;
  if (!m.r || m.special() || m.end <= m.start) return p;
  for (const auto& [range, why] : opt.exclude) {
    if (range.first <= m.start && m.end <= range.second) {
      p.excluded = true;
      p.why = why;
      return p;
    }
  }
  bool anon = !m.file();
  if (anon && !m.shared) {
    p.mode = Mode::Resident;
    pm.runs(m.start, m.end, [&](uint64_t s, uint64_t e) { p.runs.push_back({s, e - s, 0}); });
    p.file_len = p.slot_len = m.end - m.start;
  } else if (anon || (m.shared && m.path.rfind("/dev/zero", 0) == 0)) {
    p.mode = Mode::Whole;  // shared anonymous memory (SysV, memfd, /dev/zero): whole
    p.runs.push_back({m.start, m.end - m.start, 0});
    p.file_len = p.slot_len = m.end - m.start;
  } else if (!m.shared && pm.runs(m.start, m.end, [](uint64_t, uint64_t) {})) {
    p.mode = Mode::Whole;  // a file mapping with copy-on-write pages (.data, relocated .got)
    p.runs.push_back({m.start, m.end - m.start, 0});
    p.file_len = p.slot_len = m.end - m.start;
  } else if (m.offset == 0) {
    p.mode = Mode::FirstPage;  // the ELF header, program headers and build-id note
    p.runs.push_back({m.start, kPage, 0});
    p.file_len = p.slot_len = kPage;
  }
  return p;
}

// Splits mappings at the `exclude` boundaries, so an excluded range is its own PT_LOAD.
std::vector<MapEntry> split_at(std::vector<MapEntry> maps, const CaptureOptions& opt) {
  for (const auto& [range, why] : opt.exclude) {
    std::vector<MapEntry> out;
    for (auto& m : maps) {
      uint64_t cuts[2] = {range.first, range.second};
      MapEntry cur = m;
      for (uint64_t c : cuts) {
        if (c > cur.start && c < cur.end) {
          MapEntry left = cur;
          left.end = c;
          out.push_back(left);
          if (cur.file()) cur.offset += c - cur.start;
          cur.start = c;
        }
      }
      out.push_back(cur);
    }
    maps = std::move(out);
  }
  return maps;
}

uint64_t gcore_would_write(const std::vector<Planned>& plan) {
  // gdb's gcore writes every mapping whole, PROT_NONE reservations (as zeros) and the Java
  // heap included, except file mappings without private pages (text, read-only data) and
  // [vvar]; measured against gdb 13's cores of the test programs and JVMs.
  uint64_t n = 0;
  for (const auto& p : plan) {
    if (p.map.path == "[vvar]" || p.map.path == "[vvar_vclock]") continue;
    if (p.map.file() && p.mode != Mode::Whole && !p.excluded) continue;
    n += p.map.end - p.map.start;
  }
  return n;
}

// ---- the file -------------------------------------------------------------------------------

// Where the copy lives. A snapshot is a file (written in place, then renamed). A temporary copy
// is anonymous memory when it fits comfortably in what the machine (and heapwalk's own cgroup)
// has available, else an unnamed file under $TMPDIR: on this kind of machine allocating page-cache
// pages of a fresh file costs 0.1-1.5 s per GiB (ext4 block reservation, writeback of dirty
// pages), anonymous memory with transparent huge pages under 0.1 s per GiB; the file's pages can
// be written back and dropped under memory pressure, anonymous ones cannot (README: Live
// processes).
class Output {
 public:
  Output(const CaptureOptions& opt, int pid, uint64_t planned) : pid_(pid) {
    if (!opt.out.empty()) {
      final_ = opt.out;
      tmp_ = opt.out + ".heapwalk-tmp" + std::to_string(::getpid());
      fd_ = ::open(tmp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd_ < 0) throw FormatError(tmp_, std::strerror(errno));
      dir_ = opt.out.find('/') == std::string::npos ? "." : opt.out.substr(0, opt.out.rfind('/') + 1);
      return;
    }
    uint64_t avail = memory_budget();
    if (opt.store == CaptureStore::Memory ||
        (opt.store == CaptureStore::Auto && planned + planned / 16 + (64 << 20) <= avail)) {
      memory_ = true;
      room_ = avail;
      return;
    }
    dir_ = opt.tmpdir;
    if (dir_.empty()) {
      const char* t = std::getenv("TMPDIR");
      dir_ = t && *t ? t : "/tmp";
    }
    fd_ = ::open(dir_.c_str(), O_RDWR | O_TMPFILE | O_EXCL | O_CLOEXEC, 0600);
    if (fd_ < 0) {  // a filesystem without O_TMPFILE: a named file, unlinked at once
      std::string templ = dir_ + "/heapwalk-capture-XXXXXX";
      std::vector<char> buf(templ.begin(), templ.end());
      buf.push_back(0);
      fd_ = ::mkstemp(buf.data());
      if (fd_ < 0) throw FormatError(dir_, std::string("cannot create the capture file: ") + std::strerror(errno));
      ::unlink(buf.data());
    }
  }
  ~Output() {
    unmap();
    if (fd_ >= 0) ::close(fd_);
    if (!tmp_.empty() && !done_) ::unlink(tmp_.c_str());
  }
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  bool in_memory() const { return memory_; }
  int fd() const { return fd_; }
  const std::string& dir() const { return dir_; }
  /// Bytes the copy may take: free memory (half of MemAvailable, within heapwalk's cgroup) or
  /// the free space of the file's filesystem.
  uint64_t free_space() const {
    if (memory_) return room_;
    struct statvfs sv {};
    if (::fstatvfs(fd_, &sv) != 0) return std::numeric_limits<uint64_t>::max();
    return static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
  }
  /// Grows the copy to `size` and maps [0, size) writable.
  void map(uint64_t size) {
    if (memory_) {
      map_memory(size);
      return;
    }
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
      throw FormatError(where(), std::string("cannot size the capture file: ") + std::strerror(errno));
    if (size == 0) return;
    // Growing moves the mapping with its page tables (the pages copied or allocated so far
    // stay mapped: no fault per page when the freeze writes them again).
    void* m = base_ ? ::mremap(base_, size_, size, MREMAP_MAYMOVE)
                    : ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (m == MAP_FAILED)
      throw FormatError(where(), std::string("cannot map the capture file: ") + std::strerror(errno));
    base_ = static_cast<uint8_t*>(m);
    size_ = size;
    reserved_ = size;
  }
  /// Asks for transparent huge pages where a run of the copy covers whole 2 MiB blocks (the
  /// heaps); short runs (stacks, modules' data) keep small pages, so sparse mappings do not
  /// cost 2 MiB each.
  void advise(uint64_t off, uint64_t len) {
    if (!memory_ || !base_) return;
    uint64_t a = (off + kHuge - 1) & ~(kHuge - 1), b = (off + len) & ~(kHuge - 1);
    if (b > a) ::madvise(base_ + a, b - a, MADV_HUGEPAGE);
  }
  void unmap() {
    if (base_) ::munmap(base_, reserved_);
    base_ = nullptr;
    size_ = reserved_ = 0;
  }
  uint8_t* base() const { return base_; }
  /// The mapping, read-only from now on, for a CoreFile to own (the file stays open through
  /// it: a mapping keeps an unnamed file alive).
  std::pair<const uint8_t*, uint64_t> hand_over() {
    uint64_t keep = (size_ + kPage - 1) & ~(kPage - 1);
    if (reserved_ > keep) ::munmap(base_ + keep, reserved_ - keep);
    ::mprotect(base_, size_, PROT_READ);
    std::pair<const uint8_t*, uint64_t> r{base_, size_};
    base_ = nullptr;
    size_ = reserved_ = 0;
    return r;
  }
  void write_at(uint64_t off, const void* p, size_t n) {
    if (memory_) {
      if (off + n > size_) map(off + n);
      std::memcpy(base_ + off, p, n);
      return;
    }
    const auto* c = static_cast<const uint8_t*>(p);
    while (n) {
      ssize_t w = ::pwrite(fd_, c, n, static_cast<off_t>(off));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw FormatError(where(), std::string("cannot write the capture: ") + std::strerror(errno));
      c += w;
      off += static_cast<uint64_t>(w);
      n -= static_cast<size_t>(w);
    }
  }
  /// Completes the file (a snapshot is synced and renamed into place) and returns the name the
  /// copy goes by in messages: the snapshot's path, or "capture of pid N".
  std::string finish() {
    if (final_.empty()) return "capture of " + pid_name(pid_);
    if (::fsync(fd_) != 0 || ::rename(tmp_.c_str(), final_.c_str()) != 0)
      throw FormatError(final_, std::string("cannot write the snapshot: ") + std::strerror(errno));
    done_ = true;
    return final_;
  }
  std::string where() const {
    if (memory_) return "capture of " + pid_name(pid_) + " (in memory)";
    return final_.empty() ? dir_ + " (capture of " + pid_name(pid_) + ")" : final_;
  }

 private:
  static constexpr uint64_t kHuge = uint64_t{2} << 20;

  /// Half of what the kernel says is available (MemAvailable), and no more than half of what
  /// heapwalk's own memory cgroup still allows (v2 memory.max, v1 memory.limit_in_bytes).
  static uint64_t memory_budget() {
    uint64_t avail = 0;
    std::ifstream mi("/proc/meminfo");
    std::string key;
    uint64_t kb = 0;
    std::string unit;
    while (mi >> key >> kb) {
      std::getline(mi, unit);
      if (key == "MemAvailable:") avail = kb * 1024;
    }
    uint64_t room = avail / 2;
    std::ifstream cg("/proc/self/cgroup");
    std::string line;
    while (std::getline(cg, line)) {
      // "0::/path" (v2) or "N:memory:/path" (v1)
      size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
      if (b == std::string::npos) continue;
      std::string ctl = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
      std::string dir, lim, use;
      if (ctl.empty()) {
        for (const char* m : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"})
          if (::access((std::string(m) + path + "/memory.max").c_str(), R_OK) == 0) {
            dir = m + path;
            break;
          }
        lim = "/memory.max";
        use = "/memory.current";
      } else if (ctl.find("memory") != std::string::npos) {
        dir = "/sys/fs/cgroup/memory" + path;
        lim = "/memory.limit_in_bytes";
        use = "/memory.usage_in_bytes";
      }
      if (dir.empty()) continue;
      uint64_t l = 0, u = 0;
      std::ifstream fl(dir + lim), fu(dir + use);
      if (fl >> l && fu >> u && l > u && l < (uint64_t{1} << 60)) room = std::min(room, (l - u) / 2);
    }
    return room;
  }

  void map_memory(uint64_t size) {
    if (size <= reserved_) {
      size_ = std::max(size_, size);
      return;
    }
    // Address space for the copy with room to grow (late mappings, the headers), 2 MiB aligned
    // so that huge pages line up with the copy's offsets.
    uint64_t want = ((size + size / 64 + (16 << 20)) + kHuge - 1) & ~(kHuge - 1);
    if (base_) {
      void* m = ::mremap(base_, reserved_, want, MREMAP_MAYMOVE);
      if (m == MAP_FAILED) throw FormatError(where(), std::string("cannot grow the copy: ") + std::strerror(errno));
      base_ = static_cast<uint8_t*>(m);
    } else {
      void* m =
          ::mmap(nullptr, want + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) throw FormatError(where(), std::string("cannot allocate the copy: ") + std::strerror(errno));
      auto* p = static_cast<uint8_t*>(m);
      uint8_t* aligned = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1));
      if (aligned > p) ::munmap(p, static_cast<size_t>(aligned - p));
      uint64_t tail = static_cast<uint64_t>(p + want + kHuge - (aligned + want));
      if (tail) ::munmap(aligned + want, tail);
      base_ = aligned;
    }
    reserved_ = want;
    size_ = size;
  }

  int pid_;
  int fd_ = -1;
  bool memory_ = false;
  uint64_t room_ = 0;
  std::string final_, tmp_, dir_;
  bool done_ = false;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0, reserved_ = 0;
};

// ---- notes ----------------------------------------------------------------------------------

void put_note(std::vector<uint8_t>& out, uint32_t type, const char* name, const void* desc, size_t n) {
  Elf64_Nhdr h{};
  h.n_namesz = static_cast<uint32_t>(std::strlen(name) + 1);
  h.n_descsz = static_cast<uint32_t>(n);
  h.n_type = type;
  auto put = [&](const void* p, size_t k) {
    const auto* c = static_cast<const uint8_t*>(p);
    out.insert(out.end(), c, c + k);
    while (out.size() % 4) out.push_back(0);
  };
  put(&h, sizeof h);
  put(name, h.n_namesz);
  put(desc, n);
}

std::string read_small_file(const std::string& p, size_t cap) {
  std::ifstream in(p, std::ios::binary);
  std::string s;
  if (!in) return s;
  s.resize(cap);
  in.read(s.data(), static_cast<std::streamsize>(cap));
  s.resize(static_cast<size_t>(in.gcount()));
  return s;
}

std::vector<uint8_t> make_notes(int pid, const std::vector<CoreThread>& threads, const std::vector<MapEntry>& maps) {
  std::vector<uint8_t> out;
  // struct elf_prpsinfo (x86-64, 136 bytes): pr_pid at 24, pr_fname[16] at 40, pr_psargs[80] at 56.
  uint8_t ps[136] = {};
  int32_t p32 = pid;
  std::memcpy(ps + 24, &p32, 4);
  std::string comm = read_small_file("/proc/" + std::to_string(pid) + "/comm", 15);
  if (!comm.empty() && comm.back() == '\n') comm.pop_back();
  std::memcpy(ps + 40, comm.data(), std::min<size_t>(comm.size(), 15));
  std::string args = read_small_file("/proc/" + std::to_string(pid) + "/cmdline", 79);
  std::replace(args.begin(), args.end(), '\0', ' ');
  std::memcpy(ps + 56, args.data(), std::min<size_t>(args.size(), 79));
  put_note(out, NT_PRPSINFO, "CORE", ps, sizeof ps);
  // struct elf_prstatus (x86-64, 336 bytes): pr_pid at 32, pr_reg at 112 (27 words).
  for (const auto& t : threads) {
    uint8_t st[336] = {};
    int32_t lwp = t.lwp;
    std::memcpy(st + 32, &lwp, 4);
    std::memcpy(st + 36, &p32, 4);  // pr_ppid: unknown; gdb ignores it
    if (t.has_regs) {
      std::memcpy(st + 112, t.regs.data(), t.regs.size() * 8);
    } else {
      std::memcpy(st + 112 + 21 * 8, &t.fs_base, 8);
      std::memcpy(st + 112 + 19 * 8, &t.rsp, 8);
      std::memcpy(st + 112 + 16 * 8, &t.rip, 8);
    }
    put_note(out, NT_PRSTATUS, "CORE", st, sizeof st);
  }
  std::string auxv = read_small_file("/proc/" + std::to_string(memory_task(pid)) + "/auxv", 1 << 16);
  if (!auxv.empty()) put_note(out, NT_AUXV, "CORE", auxv.data(), auxv.size());
  // NT_FILE: count, page size, (start, end, page offset) each, then the names.
  std::vector<uint8_t> nf(16);
  std::string names;
  uint64_t count = 0;
  for (const auto& m : maps) {
    if (!m.file()) continue;
    uint64_t v[3] = {m.start, m.end, m.offset / kPage};
    nf.insert(nf.end(), reinterpret_cast<uint8_t*>(v), reinterpret_cast<uint8_t*>(v) + sizeof v);
    names += m.path;
    names.push_back('\0');
    ++count;
  }
  uint64_t head[2] = {count, kPage};
  std::memcpy(nf.data(), head, sizeof head);
  nf.insert(nf.end(), names.begin(), names.end());
  put_note(out, NT_FILE, "CORE", nf.data(), nf.size());
  return out;
}

// ---- copying --------------------------------------------------------------------------------

struct CopyResult {
  uint64_t copied = 0, unreadable = 0;
};

CopyResult copy_runs(int pid, uint8_t* base, const std::vector<Run>& runs) {
  CopyResult res;
  std::vector<iovec> local, remote;
  local.reserve(kIovMax);
  remote.reserve(kIovMax);
  size_t i = 0;
  while (i < runs.size()) {
    local.clear();
    remote.clear();
    size_t first = i;
    for (; i < runs.size() && local.size() < kIovMax; ++i) {
      local.push_back({base + runs[i].file_off, runs[i].len});
      remote.push_back({reinterpret_cast<void*>(runs[i].addr), runs[i].len});
    }
    ssize_t n = ::process_vm_readv(pid, local.data(), local.size(), remote.data(), remote.size(), 0);
    uint64_t want = 0;
    for (const auto& v : local) want += v.iov_len;
    if (n == static_cast<ssize_t>(want)) {
      res.copied += want;
      continue;
    }
    // A short read stops at the first unreadable page: take the runs one page at a time.
    uint64_t got = n > 0 ? static_cast<uint64_t>(n) : 0;
    res.copied += got;
    for (size_t k = first; k < i; ++k) {
      const Run& r = runs[k];
      if (got >= r.len) {
        got -= r.len;
        continue;
      }
      for (uint64_t off = got; off < r.len; off += kPage) {
        uint64_t len = std::min(kPage, r.len - off);
        iovec l{base + r.file_off + off, len}, rm{reinterpret_cast<void*>(r.addr + off), len};
        ssize_t m = ::process_vm_readv(pid, &l, 1, &rm, 1, 0);
        if (m == static_cast<ssize_t>(len))
          res.copied += len;
        else
          res.unreadable += len;
      }
      got = 0;
    }
  }
  return res;
}

// Splits runs into `parts` lists of about equal bytes (a big run is cut at page boundaries).
std::vector<std::vector<Run>> share(const std::vector<Run>& runs, int parts) {
  uint64_t total = 0;
  for (const auto& r : runs) total += r.len;
  std::vector<std::vector<Run>> out(static_cast<size_t>(std::max(parts, 1)));
  uint64_t each = total / out.size() + kPage, acc = 0;
  size_t cur = 0;
  for (Run r : runs) {
    while (r.len) {
      uint64_t room = each > acc ? each - acc : 0;
      if (room < kPage && cur + 1 < out.size()) {
        ++cur;
        acc = 0;
        continue;
      }
      uint64_t take = cur + 1 < out.size() ? std::min(r.len, (room / kPage) * kPage) : r.len;
      if (take == 0) take = r.len;
      out[cur].push_back({r.addr, take, r.file_off});
      acc += take;
      r.addr += take;
      r.file_off += take;
      r.len -= take;
    }
  }
  return out;
}

/// Raises the calling thread's scheduling priority (nice -10) while alive, where permitted.
class Boost {
 public:
  Boost() {
    errno = 0;
    int cur = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
    if (errno == 0 && cur > kNice && ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kNice) == 0) was_ = cur;
  }
  ~Boost() {
    if (was_ != kUnset) ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), was_);
  }
  Boost(const Boost&) = delete;
  Boost& operator=(const Boost&) = delete;

 private:
  static constexpr int kNice = -10, kUnset = 100;
  int was_ = kUnset;
};

template <typename F>
void on_threads(size_t n, F&& fn) {
  std::vector<std::thread> ts;
  for (size_t i = 1; i < n; ++i) ts.emplace_back([&fn, i] { fn(i); });
  if (n) fn(0);
  for (auto& t : ts) t.join();
}

std::string human(uint64_t b) {
  char buf[64];
  if (b >= (uint64_t{1} << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(b) / (1 << 30));
  else
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1 << 20));
  return buf;
}

}  // namespace

std::unique_ptr<CapturedProcess> CapturedProcess::capture(int pid, const CaptureOptions& opt) {
  const double t0 = now();
  std::string base = "/proc/" + std::to_string(pid);
  if (pid <= 0 || ::access(base.c_str(), F_OK) != 0) throw FormatError(pid_name(pid), "no such process");
  CaptureStats st;
  LiveProcess live(pid, false);
  const int mm = memory_task(pid);  // the leader, or a live thread when the leader is a zombie
  PagemapReader pm(mm);
  if (!pm.ok())
    throw FormatError(base + "/pagemap",
                      std::string(std::strerror(errno)) + " (heapwalk needs to read it to copy the process)");

  auto make_plan = [&](std::vector<MapEntry> maps) {
    std::vector<Planned> plan;
    for (const auto& m : split_at(std::move(maps), opt)) plan.push_back(plan_one(m, pm, opt));
    return plan;
  };
  // 1. Before the freeze: the plan, and the destination pages allocated.
  std::vector<Planned> before = make_plan(read_maps(mm));
  uint64_t off = kPage;  // the ELF header's page
  uint64_t planned = 0;
  std::map<uint64_t, const Planned*> slot_of;
  for (auto& p : before) {
    if (p.mode == Mode::None) continue;
    p.slot = off;
    off += (p.slot_len + kPage - 1) & ~(kPage - 1);
    for (auto& r : p.runs) {
      r.file_off = p.slot + (r.addr - p.map.start);
      planned += r.len;
    }
    slot_of[p.map.start] = &p;
  }
  st.planned_bytes = planned;
  Output out(opt, pid, planned);
  uint64_t room = out.free_space();
  if (opt.max_bytes && planned > opt.max_bytes)
    throw FormatError(pid_name(pid), "the copy would take " + human(planned) + ", more than the limit of " +
                                         human(opt.max_bytes) + " (--max-copy)");
  if (out.in_memory() && planned + planned / 16 + (64 << 20) > room)
    throw FormatError(pid_name(pid), "the copy would take " + human(planned) + " but only " + human(room) +
                                         " of memory can be spared for it (--copy-to file, or --max-copy)");
  if (planned + planned / 16 + (64 << 20) > room)
    throw FormatError(out.dir(), "the copy of " + pid_name(pid) + " needs " + human(planned) + " but only " +
                                     human(room) +
                                     " are free there (set TMPDIR to a larger filesystem, or --max-copy)");
  uint64_t data_end = off;
  out.map(data_end);
  for (const auto& p : before)
    for (const auto& r : p.runs) out.advise(r.file_off, r.len);
  // Pre-copy (as live migration does): with the kernel's soft-dirty bits cleared, the plan is
  // copied while the process runs; the freeze then copies again only the pages written since
  // (and those that appeared). Without soft-dirty tracking the destination pages are only
  // allocated beforehand and everything is copied while frozen.
  // Opt-in (HEAPWALK_PRECOPY=1): the kernels this was built on have no soft-dirty tracking,
  // so the pre-copy is not tested here.
  const char* pc = std::getenv("HEAPWALK_PRECOPY");
  const bool precopy = pc && std::string(pc) == "1" && PagemapReader::clear_soft_dirty(pid);
  {
    const double p0 = now();
    std::vector<Run> all;
    for (const auto& p : before)
      for (const auto& r : p.runs) all.push_back(r);
    auto parts = share(all, opt.copy_threads);
    std::vector<CopyResult> res(parts.size());
    on_threads(parts.size(), [&](size_t i) {
      if (precopy) {
        res[i] = copy_runs(mm, out.base(), parts[i]);
      } else {
        for (const auto& r : parts[i]) ::madvise(out.base() + r.file_off, r.len, MADV_POPULATE_WRITE);
      }
    });
    for (const auto& r : res) st.precopied_bytes += r.copied;
    st.prefault_seconds = now() - p0;
  }
  st.precopy = precopy;

  // 2. The freeze: plan again, copy (again), release.
  std::vector<CoreThread> threads = opt.threads;
  const double f0 = now();
  auto boost = std::make_unique<Boost>();
  if (opt.freeze) {
    live.freeze();
    threads = live.threads();
  }
  std::vector<Planned> plan;
  std::vector<Run> runs;
  std::vector<uint64_t> stale;  // file offsets of pre-copied pages no longer in the process
  try {
    std::vector<MapEntry> maps = read_maps(mm);
    plan = make_plan(maps);
    uint64_t grow = data_end;
    for (auto& p : plan) {
      if (p.mode == Mode::None) continue;
      auto it = slot_of.find(p.map.start);
      const Planned* was = nullptr;
      if (it != slot_of.end() && it->second->mode == p.mode && it->second->slot_len >= p.slot_len) {
        p.slot = it->second->slot;
        was = it->second;
      } else {
        p.slot = grow;
        grow += (p.slot_len + kPage - 1) & ~(kPage - 1);
      }
      for (auto& r : p.runs) r.file_off = p.slot + (r.addr - p.map.start);
      bool shared_whole = p.mode == Mode::Whole && (p.map.shared || !p.map.file());
      if (!precopy || !was || shared_whole) continue;  // copied whole now
      if (p.mode == Mode::FirstPage) {                 // a file's ELF headers: they do not change
        p.runs.clear();
        continue;
      }
      // Only what changed since the pre-copy: written (soft-dirty) or new pages; pages that
      // went away (released, unmapped) are zeroed in the copy after the release.
      std::vector<bool> pre((p.map.end - p.map.start) / kPage);
      for (const auto& r : was->runs)
        for (uint64_t a = r.addr; a < r.addr + r.len && a < p.map.end; a += kPage)
          pre[(a - p.map.start) / kPage] = true;
      p.runs.clear();
      pm.scan(p.map.start, p.map.end, [&](uint64_t a, bool present, bool dirty, bool) {
        size_t i = (a - p.map.start) / kPage;
        bool need = present && (dirty || !pre[i]) && (p.mode == Mode::Resident || dirty);
        if (need) {
          if (!p.runs.empty() && p.runs.back().addr + p.runs.back().len == a)
            p.runs.back().len += kPage;
          else
            p.runs.push_back({a, kPage, p.slot + (a - p.map.start)});
        } else if (!present && pre[i] && p.mode == Mode::Resident) {
          stale.push_back(p.slot + (a - p.map.start));
        }
      });
    }
    if (grow != data_end) {
      out.map(grow);  // a mapping that appeared or grew: fresh pages, copied while frozen
      data_end = grow;
    }
    for (const auto& p : plan)
      for (const auto& r : p.runs) runs.push_back(r);
    const double c0 = now();
    const char* ct = std::getenv("HEAPWALK_COPY_THREADS");
    auto parts = share(runs, ct ? std::max(1, std::atoi(ct)) : opt.copy_threads);
    std::vector<CopyResult> res(parts.size());
    on_threads(parts.size(), [&](size_t i) {
      // The freeze is the target's outage: its copy runs ahead of other work on the machine
      // where heapwalk may raise its priority (root, CAP_SYS_NICE), on its own threads only.
      Boost boost;
      res[i] = copy_runs(mm, out.base(), parts[i]);
    });
    for (const auto& r : res) {
      st.copied_bytes += r.copied;
      st.unreadable_bytes += r.unreadable;
    }
    st.copy_seconds = now() - c0;
  } catch (...) {
    live.release();
    throw;
  }
  live.release();
  st.frozen_seconds = opt.freeze ? now() - f0 : 0;
  boost.reset();
  for (uint64_t o : stale) std::memset(out.base() + o, 0, kPage);
  st.recopied_bytes = st.copied_bytes;
  st.copied_bytes += st.precopied_bytes;
  st.stale_bytes = stale.size() * kPage;
  if (!precopy && st.copied_bytes > planned) st.late_bytes = st.copied_bytes - planned;

  // 3. The core file: notes and program headers after the data, the ELF header first.
  std::vector<MapEntry> maps;
  for (const auto& p : plan) maps.push_back(p.map);
  std::vector<uint8_t> notes = make_notes(pid, threads, maps);
  uint64_t notes_off = data_end;
  out.write_at(notes_off, notes.data(), notes.size());
  uint64_t ph_off = (notes_off + notes.size() + 7) & ~uint64_t{7};
  std::vector<Elf64_Phdr> ph;
  Elf64_Phdr pn{};
  pn.p_type = PT_NOTE;
  pn.p_offset = notes_off;
  pn.p_filesz = notes.size();
  pn.p_align = 4;
  ph.push_back(pn);
  for (const auto& p : plan) {
    Elf64_Phdr l{};
    l.p_type = PT_LOAD;
    l.p_flags = (p.map.r ? PF_R : 0) | (p.map.w ? PF_W : 0) | (p.map.x ? PF_X : 0);
    l.p_vaddr = p.map.start;
    l.p_memsz = p.map.end - p.map.start;
    l.p_align = kPage;
    if (p.mode != Mode::None) {
      l.p_offset = p.slot;
      l.p_filesz = p.file_len;
    }
    ph.push_back(l);
    if (!p.runs.empty()) ++st.copied_mappings;
    if (p.excluded) {
      uint64_t resident = 0;
      pm.runs(p.map.start, p.map.end, [&](uint64_t s, uint64_t e) { resident += e - s; });
      st.excluded_bytes += resident;
    }
  }
  st.mappings = plan.size();
  out.write_at(ph_off, ph.data(), ph.size() * sizeof(Elf64_Phdr));
  uint64_t end = ph_off + ph.size() * sizeof(Elf64_Phdr);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_ident[EI_OSABI] = ELFOSABI_NONE;
  eh.e_type = ET_CORE;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_phoff = ph_off;
  eh.e_ehsize = sizeof eh;
  eh.e_phentsize = sizeof(Elf64_Phdr);
  if (ph.size() >= PN_XNUM) {  // the real count goes into section header 0's sh_info
    eh.e_phnum = PN_XNUM;
    Elf64_Shdr sh{};
    sh.sh_info = static_cast<uint32_t>(ph.size());
    eh.e_shoff = (end + 7) & ~uint64_t{7};
    eh.e_shentsize = sizeof sh;
    eh.e_shnum = 1;
    out.write_at(eh.e_shoff, &sh, sizeof sh);
    end = eh.e_shoff + sizeof sh;
  } else {
    eh.e_phnum = static_cast<uint16_t>(ph.size());
  }
  out.write_at(0, &eh, sizeof eh);
  out.map(end);                             // the headers too; the copied pages stay mapped (and their page tables)
  if (!opt.out.empty()) ::fsync(out.fd());  // a snapshot's blocks are allocated by now
  struct stat sb {};
  if (out.in_memory()) {
    st.file_bytes = end;
    st.file_allocated = st.copied_bytes + (end - notes_off);
  } else if (::fstat(out.fd(), &sb) == 0) {
    st.file_bytes = static_cast<uint64_t>(sb.st_size);
    st.file_allocated = static_cast<uint64_t>(sb.st_blocks) * 512;
  }
  st.store = out.in_memory() ? "memory" : "file";
  st.gcore_bytes = gcore_would_write(plan);
  st.path = opt.out;
  st.tmpdir = opt.out.empty() && !out.in_memory() ? out.dir() : "";

  auto cp = std::unique_ptr<CapturedProcess>(new CapturedProcess());
  std::string name = out.finish();
  auto [map, size] = out.hand_over();
  cp->core_ = std::make_unique<CoreFile>(name, map, size);
  // The process's own view of its mappings: names of anonymous ones kept, the Java heap split.
  for (const auto& p : plan) {
    Region r;
    r.start = p.map.start;
    r.end = p.map.end;
    r.read = p.map.r;
    r.write = p.map.w;
    r.exec = p.map.x;
    r.file_offset = p.map.offset;
    r.path = p.map.path;
    r.saved = p.mode != Mode::None && p.file_len > 0;
    r.saved_end = r.saved ? p.map.start + p.file_len : p.map.start;
    cp->regions_.push_back(std::move(r));
  }
  if (st.unreadable_bytes)
    st.notes.push_back(std::to_string(st.unreadable_bytes) + " bytes of " + pid_name(pid) +
                       " could not be read while it was stopped; they read as zeros in the copy");
  for (const auto& [range, why] : opt.exclude)
    st.notes.push_back("not copied: " + why + " " + hex(range.first) + "-" + hex(range.second));
  st.total_seconds = now() - t0;
  cp->stats_ = std::move(st);
  return cp;
}

}  // namespace heapwalk::memory
