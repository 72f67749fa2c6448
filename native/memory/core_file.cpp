#include "memory/core_file.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "util/sigbus_guard.h"

namespace heapwalk::memory {

namespace {

// x86-64 struct elf_prstatus (linux/elfcore.h): pr_pid at 32, pr_reg (user_regs_struct) at 112.
constexpr size_t kPrstatusPid = 32;
constexpr size_t kPrstatusReg = 112;
constexpr size_t kPrstatusMin = kPrstatusReg + 27 * 8;
// user_regs_struct (sys/user.h) word indices.
constexpr size_t kRegRip = 16, kRegRsp = 19, kRegFsBase = 21;

template <typename T>
bool load(const uint8_t* base, size_t size, size_t off, T& out) {
  if (off > size || sizeof(T) > size - off) return false;
  std::memcpy(&out, base + off, sizeof(T));
  return true;
}

}  // namespace

CoreFile::CoreFile(const std::string& path) : path_(path) {
  // O_PATH first: a device named as the core (/dev/ptmx allocates a pty when opened) or a FIFO
  // is refused by fstat before anything opens it for reading.
  int probe = ::open(path.c_str(), O_PATH | O_CLOEXEC);
  if (probe < 0) throw FormatError(path, std::strerror(errno));
  struct stat st {};
  if (::fstat(probe, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(probe);
    throw FormatError(path, "not a regular file");
  }
  fd_ = ::open(("/proc/self/fd/" + std::to_string(probe)).c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd_ < 0) fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);  // no /proc
  ::close(probe);
  if (fd_ < 0) throw FormatError(path, std::strerror(errno));
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd_);
    throw FormatError(path, "not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ < sizeof(Elf64_Ehdr)) {
    ::close(fd_);
    throw FormatError(path, "not an ELF core file (too small)");
  }
  void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
  if (m == MAP_FAILED) {
    int e = errno;
    ::close(fd_);
    throw FormatError(path, std::string("cannot map: ") + std::strerror(e));
  }
  map_ = static_cast<const uint8_t*>(m);
  guarded_ = util::guard_mapping(map_, size_, path);  // a core cut short while mapped: zeros, not SIGBUS
  parse();
}

CoreFile::CoreFile(std::string name, const uint8_t* map, uint64_t size) : path_(std::move(name)) {
  map_ = map;
  size_ = size;
  if (size_ < sizeof(Elf64_Ehdr)) {
    ::munmap(const_cast<uint8_t*>(map_), size_);
    throw FormatError(path_, "not an ELF core file (too small)");
  }
  parse();
}

void CoreFile::parse() {
  const std::string& path = path_;
  try {
    Elf64_Ehdr eh;
    std::memcpy(&eh, map_, sizeof eh);
    if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) throw FormatError(path, "not an ELF file");
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
      throw FormatError(path, "not an x86-64 little-endian ELF file");
    if (eh.e_type != ET_CORE)
      throw FormatError(path, "ELF file but not a core dump (e_type " + std::to_string(eh.e_type) + ")");
    uint64_t phnum = eh.e_phnum;
    if (phnum == PN_XNUM) {
      // The real count lives in section header 0's sh_info.
      Elf64_Shdr sh0;
      if (eh.e_shoff == 0 || !load(map_, size_, eh.e_shoff, sh0))
        throw FormatError(path, "truncated: PN_XNUM without a readable section header");
      phnum = sh0.sh_info;
    }
    if (eh.e_phentsize != sizeof(Elf64_Phdr)) throw FormatError(path, "bad program header size");
    if (eh.e_phoff > size_ || phnum * sizeof(Elf64_Phdr) > size_ - eh.e_phoff)
      throw FormatError(path, "truncated: program headers lie beyond the end of the file");
    // Every program header, holes of the table skipped unread: a hole reads as zeros, which is
    // PT_NULL, and a PN_XNUM table of 16 M headers in an 8 KiB sparse file must not cost its
    // apparent size (issue 14, item 12).
    auto each_phdr = [&](auto&& f) {
      off_t data_end = 0;  // the table's bytes below this offset are data (or cannot be told apart)
      for (uint64_t i = 0; i < phnum; ++i) {
        auto off = static_cast<off_t>(eh.e_phoff + i * sizeof(Elf64_Phdr));
        if (fd_ >= 0 && off >= data_end) {
          off_t d = ::lseek(fd_, off, SEEK_DATA);
          if (d < 0 && errno == ENXIO) break;  // the rest of the file is a hole
          if (d < 0) {
            data_end = static_cast<off_t>(size_);  // no SEEK_DATA: read everything
          } else {
            if (d > off) {
              uint64_t j = (static_cast<uint64_t>(d) - eh.e_phoff) / sizeof(Elf64_Phdr);  // holds d
              if (j >= phnum) break;
              i = j;
              off = static_cast<off_t>(eh.e_phoff + i * sizeof(Elf64_Phdr));
            }
            off_t h = ::lseek(fd_, d, SEEK_HOLE);
            data_end = h < 0 ? static_cast<off_t>(size_) : h;
          }
        }
        Elf64_Phdr ph;
        std::memcpy(&ph, map_ + off, sizeof ph);
        f(ph);
      }
    };
    uint64_t need = 0;
    each_phdr([&](const Elf64_Phdr& ph) {
      if (ph.p_filesz && ph.p_offset + ph.p_filesz > need) need = ph.p_offset + ph.p_filesz;
    });
    if (need > size_)
      diags_.add("truncated", std::nullopt, std::nullopt,
                 "file has " + std::to_string(size_) + " bytes, its headers describe " + std::to_string(need));
    each_phdr([&](const Elf64_Phdr& ph) {
      if (ph.p_type == PT_NOTE) {
        if (ph.p_offset >= size_) {
          diags_.add("truncated", std::nullopt, std::nullopt, "note segment beyond end of file");
          return;
        }
        uint64_t n = std::min<uint64_t>(ph.p_filesz, size_ - ph.p_offset);
        if (n < ph.p_filesz) diags_.add("truncated", std::nullopt, std::nullopt, "note segment cut short");
        parse_notes(map_ + ph.p_offset, n);
      } else if (ph.p_type == PT_LOAD) {
        if (ph.p_vaddr + ph.p_memsz < ph.p_vaddr) return;  // wraps: ignore
        Segment s{ph.p_vaddr, ph.p_memsz, ph.p_offset, ph.p_filesz};
        if (s.filesz > s.memsz) s.filesz = s.memsz;
        if (s.filesz && (s.offset >= size_ || s.filesz > size_ - s.offset)) {
          uint64_t avail = s.offset >= size_ ? 0 : size_ - s.offset;
          diags_.add("truncated", s.vaddr, std::nullopt,
                     "core file truncated: segment " + hex(s.vaddr) + "-" + hex(s.vaddr + s.memsz) + " has " +
                         std::to_string(avail) + " of " + std::to_string(s.filesz) + " bytes");
          s.filesz = avail;
        }
        segs_.push_back(s);
        Region r;
        r.start = s.vaddr;
        r.end = s.vaddr + s.memsz;
        r.read = (ph.p_flags & PF_R) != 0;
        r.write = (ph.p_flags & PF_W) != 0;
        r.exec = (ph.p_flags & PF_X) != 0;
        r.saved = s.filesz > 0;
        r.saved_end = s.vaddr + s.filesz;
        regions_.push_back(r);
      }
    });
  } catch (...) {
    if (guarded_) util::unguard_mapping(map_);
    ::munmap(const_cast<uint8_t*>(map_), size_);
    if (fd_ >= 0) ::close(fd_);
    throw;
  }
  std::sort(segs_.begin(), segs_.end(), [](const Segment& a, const Segment& b) { return a.vaddr < b.vaddr; });
  std::sort(regions_.begin(), regions_.end(), [](const Region& a, const Region& b) { return a.start < b.start; });
  // File mappings the core did not save at all (read-only text and data) still belong to the
  // address space: NT_FILE lists them; their bytes can come from the file. Each file's range
  // minus the (merged) segments', found by binary search: no files x segments scan (a hostile
  // core may list 10^5 of each). Files stay separate: each mapping is its own region.
  std::vector<std::pair<uint64_t, uint64_t>> loadset;
  for (const auto& r : regions_)
    if (r.end > r.start) loadset.emplace_back(r.start, r.end);
  std::sort(loadset.begin(), loadset.end());
  {
    size_t k = 0;
    for (size_t i = 0; i < loadset.size(); ++i) {
      if (k && loadset[i].first <= loadset[k - 1].second)
        loadset[k - 1].second = std::max(loadset[k - 1].second, loadset[i].second);
      else
        loadset[k++] = loadset[i];
    }
    loadset.resize(k);
  }
  std::vector<Region> gaps;
  for (const auto& f : files_) {
    uint64_t cur = f.start;
    const uint64_t stop = f.end;
    auto it = std::upper_bound(loadset.begin(), loadset.end(), cur,
                               [](uint64_t a, const std::pair<uint64_t, uint64_t>& b) { return a < b.second; });
    for (size_t k = static_cast<size_t>(it - loadset.begin()); cur < stop; ++k) {
      uint64_t next = k < loadset.size() ? std::min(std::max(loadset[k].first, cur), stop) : stop;
      if (next > cur) {
        Region gap;
        gap.start = cur;
        gap.end = next;
        gap.read = true;
        gap.saved = false;
        gap.saved_end = cur;
        gaps.push_back(gap);
      }
      if (k >= loadset.size() || loadset[k].first >= stop) break;
      cur = std::max(cur, loadset[k].second);
    }
  }
  regions_.insert(regions_.end(), gaps.begin(), gaps.end());
  std::sort(regions_.begin(), regions_.end(), [](const Region& a, const Region& b) { return a.start < b.start; });
  // Name regions from NT_FILE: the file whose range holds the region's start (the first listed
  // wins where a hostile core lists overlapping ones), by binary search over the sorted starts.
  std::vector<size_t> order(files_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return files_[a].start < files_[b].start; });
  // best[i]: among order[0..i], the earliest-listed file reaching furthest is not needed; a
  // running maximum of ends lets the search stop: files before i cannot hold addresses >= it.
  std::vector<uint64_t> reach(order.size());
  for (size_t i = 0; i < order.size(); ++i) reach[i] = std::max(i ? reach[i - 1] : 0, files_[order[i]].end);
  for (auto& r : regions_) {
    auto it = std::upper_bound(order.begin(), order.end(), r.start,
                               [&](uint64_t a, size_t b) { return a < files_[b].start; });
    size_t hit = SIZE_MAX;
    for (size_t i = static_cast<size_t>(it - order.begin()); i-- > 0;) {
      if (reach[i] <= r.start) break;  // nothing at or before i reaches r.start
      const auto& f = files_[order[i]];
      if (r.start < f.end && (hit == SIZE_MAX || order[i] < hit)) hit = order[i];
    }
    if (hit != SIZE_MAX) {
      r.path = files_[hit].path;
      r.file_offset = files_[hit].file_offset + (r.start - files_[hit].start);
    }
  }
  if (segs_.empty()) throw FormatError(path, "core file has no PT_LOAD segments");
}

template <typename F>
bool CoreFile::for_nonzero(uint64_t start, uint64_t end, F&& f) {
  if (fd_ < 0) return false;
  constexpr uint64_t kPage = 4096;
  // The non-zero pages of the file range [lo, hi) that maps to vaddr `va`. Pages are the
  // target's (by address): gcore does not align segments' file offsets to pages.
  auto scan = [&](uint64_t lo, uint64_t hi, uint64_t va) {
    for (uint64_t a = lo; a < hi;) {
      uint64_t at = va + (a - lo);
      uint64_t pe = std::min(hi, a + ((at & ~(kPage - 1)) + kPage - at));
      const uint8_t* p = map_ + a;
      bool nonzero = false;
      for (uint64_t i = 0; i + 8 <= pe - a && !nonzero; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        nonzero = w != 0;
      }
      if (nonzero) f(at, pe - a);
      a = pe;
    }
  };
  // The first segment that may end above start (segments are sorted and do not overlap).
  auto it = std::upper_bound(segs_.begin(), segs_.end(), start,
                             [](uint64_t a, const Segment& s) { return a < s.vaddr + s.memsz; });
  for (; it != segs_.end() && it->vaddr < end; ++it) {
    uint64_t lo = std::max(start, it->vaddr), hi = std::min(end, it->vaddr + it->filesz);
    if (lo >= hi) continue;
    auto a = static_cast<off_t>(it->offset + (lo - it->vaddr)), b = static_cast<off_t>(it->offset + (hi - it->vaddr));
    auto va = [&](off_t off) { return it->vaddr + (static_cast<uint64_t>(off) - it->offset); };
    // Holes (SEEK_DATA / SEEK_HOLE) read as zeros: skip them unread (reading them through the
    // mapping would fill the page cache with zeros). File systems allocate in larger units than
    // pages, so what remains is scanned page by page.
    while (a < b) {
      off_t d = ::lseek(fd_, a, SEEK_DATA);
      if (d < 0) {
        if (errno != ENXIO) scan(static_cast<uint64_t>(a), static_cast<uint64_t>(b), va(a));  // no SEEK_DATA
        break;
      }
      if (d >= b) break;
      off_t h = ::lseek(fd_, d, SEEK_HOLE);
      if (h < 0 || h > b) h = b;
      scan(static_cast<uint64_t>(d), static_cast<uint64_t>(h), va(d));
      a = h;
    }
  }
  return true;
}

std::optional<uint64_t> CoreFile::held_bytes(uint64_t start, uint64_t end) {
  uint64_t total = 0;
  if (!for_nonzero(start, end, [&](uint64_t, uint64_t n) { total += n; })) return std::nullopt;
  return total;
}

bool CoreFile::nonzero_pages(uint64_t start, uint64_t end, std::vector<uint8_t>& out) {
  std::vector<uint8_t> flags((end - start) / 4096, 0);
  if (!for_nonzero(start, end, [&](uint64_t a, uint64_t) {
        uint64_t i = (a - start) / 4096;
        if (i < flags.size()) flags[i] = 1;
      }))
    return false;
  out = std::move(flags);
  return true;
}

CoreFile::~CoreFile() {
  if (guarded_) util::unguard_mapping(map_);
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
  if (fd_ >= 0) ::close(fd_);
}

void CoreFile::parse_notes(const uint8_t* p, size_t n) {
  size_t off = 0;
  while (off + sizeof(Elf64_Nhdr) <= n) {
    Elf64_Nhdr nh;
    std::memcpy(&nh, p + off, sizeof nh);
    size_t name_off = off + sizeof nh;
    size_t namesz = (nh.n_namesz + 3u) & ~3u;
    size_t desc_off = name_off + namesz;
    size_t descsz = (nh.n_descsz + 3u) & ~3u;
    if (namesz > n || desc_off > n || nh.n_descsz > n - desc_off) {
      diags_.add("truncated", std::nullopt, std::nullopt, "core note cut short");
      return;
    }
    const uint8_t* desc = p + desc_off;
    size_t dn = nh.n_descsz;
    bool is_core = nh.n_namesz >= 4 && std::memcmp(p + name_off, "CORE", 4) == 0;
    if (is_core && nh.n_type == NT_PRSTATUS && dn >= kPrstatusMin) {
      CoreThread t;
      int32_t pid;
      std::memcpy(&pid, desc + kPrstatusPid, 4);
      t.lwp = pid;
      std::memcpy(&t.fs_base, desc + kPrstatusReg + kRegFsBase * 8, 8);
      std::memcpy(&t.rsp, desc + kPrstatusReg + kRegRsp * 8, 8);
      std::memcpy(&t.rip, desc + kPrstatusReg + kRegRip * 8, 8);
      std::memcpy(t.regs.data(), desc + kPrstatusReg, t.regs.size() * 8);
      t.has_regs = true;
      threads_.push_back(t);
    } else if (is_core && nh.n_type == NT_PRPSINFO && dn >= 28) {
      // struct elf_prpsinfo: pr_pid at offset 24 on x86-64.
      int32_t pid;
      std::memcpy(&pid, desc + 24, 4);
      pid_ = pid;
    } else if (is_core && nh.n_type == NT_FILE && dn >= 16) {
      uint64_t count, page;
      std::memcpy(&count, desc, 8);
      std::memcpy(&page, desc + 8, 8);
      if (count > (dn - 16) / 24) {
        diags_.add("truncated", std::nullopt, std::nullopt, "NT_FILE note has a bad count");
      } else {
        size_t str = 16 + count * 24;
        for (uint64_t i = 0; i < count; ++i) {
          FileMapping f;
          std::memcpy(&f.start, desc + 16 + i * 24, 8);
          std::memcpy(&f.end, desc + 16 + i * 24 + 8, 8);
          uint64_t pgoff;
          std::memcpy(&pgoff, desc + 16 + i * 24 + 16, 8);
          f.file_offset = pgoff * page;
          size_t e = str;
          while (e < dn && desc[e] != 0) ++e;
          f.path.assign(reinterpret_cast<const char*>(desc + str), e - str);
          str = e + 1;
          files_.push_back(std::move(f));
          if (str > dn) break;
        }
      }
    }
    off = desc_off + descsz;
  }
  if (pid_ == 0 && !threads_.empty()) pid_ = threads_.front().lwp;
}

const CoreFile::Segment* CoreFile::find(uint64_t addr) const {
  auto it =
      std::upper_bound(segs_.begin(), segs_.end(), addr, [](uint64_t a, const Segment& s) { return a < s.vaddr; });
  if (it == segs_.begin()) return nullptr;
  --it;
  if (addr - it->vaddr >= it->memsz) return nullptr;
  return &*it;
}

std::pair<uint64_t, uint64_t> CoreFile::data_run(uint64_t addr, uint64_t end) {
  constexpr uint64_t kPage = 4096;
  const Segment* s = find(addr);
  if (fd_ < 0 || !s || addr >= end || addr - s->vaddr >= s->filesz) return {addr, end};
  uint64_t seg_end = s->vaddr + s->filesz;  // saved bytes end here
  auto off = static_cast<off_t>(s->offset + (addr - s->vaddr));
  auto off_end = static_cast<off_t>(s->offset + s->filesz);
  off_t d = ::lseek(fd_, off, SEEK_DATA);
  if (d < 0 && errno != ENXIO) return {addr, end};  // no SEEK_DATA here: everything may hold data
  if (d < 0 || d >= off_end) return {std::min(end, seg_end), std::min(end, seg_end)};  // a hole to the segment's end
  off_t h = ::lseek(fd_, d, SEEK_HOLE);
  if (h < 0 || h > off_end) h = off_end;
  auto va = [&](off_t o) { return s->vaddr + (static_cast<uint64_t>(o) - s->offset); };
  uint64_t first = va(d) & ~(kPage - 1), last = (va(h) + kPage - 1) & ~(kPage - 1);
  first = std::max(first, addr);
  if (last < va(h)) last = va(h);  // rounding wrapped near 2^64
  return {std::min(first, end), std::min(last, end)};
}

const uint8_t* CoreFile::direct(uint64_t addr, size_t len) {
  const Segment* s = find(addr);
  if (!s) return nullptr;
  uint64_t rel = addr - s->vaddr;
  if (rel >= s->filesz || len > s->filesz - rel) return nullptr;
  return map_ + s->offset + rel;
}

const uint8_t* CoreFile::direct_span(uint64_t addr, uint64_t& start, uint64_t& end) {
  const Segment* s = find(addr);
  if (!s || addr - s->vaddr >= s->filesz) return nullptr;
  start = s->vaddr;
  end = s->vaddr + s->filesz;
  return map_ + s->offset;
}

void CoreFile::prefetch(uint64_t addr, uint64_t len) {
  // One madvise populates the page tables for a whole heap instead of one fault per page.
  uint64_t end = addr + len;
  while (addr < end) {
    const Segment* s = find(addr);
    if (!s) return;
    uint64_t rel = addr - s->vaddr;
    if (rel >= s->filesz) return;
    uint64_t n = std::min(end - addr, s->filesz - rel);
    uint64_t off = s->offset + rel;
    uint64_t page_off = off & ~uint64_t{0xfff};
    ::madvise(const_cast<uint8_t*>(map_) + page_off, n + (off - page_off), MADV_POPULATE_READ);
    addr += n;
  }
}

size_t CoreFile::read(uint64_t addr, void* out, size_t len) {
  size_t done = 0;
  auto* dst = static_cast<uint8_t*>(out);
  while (done < len) {
    const Segment* s = find(addr + done);
    if (!s) break;
    uint64_t rel = addr + done - s->vaddr;
    if (rel >= s->filesz) break;
    size_t n = static_cast<size_t>(std::min<uint64_t>(len - done, s->filesz - rel));
    std::memcpy(dst + done, map_ + s->offset + rel, n);
    done += n;
  }
  return done;
}

}  // namespace heapwalk::memory
