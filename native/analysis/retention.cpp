#include "analysis/retention.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "analysis/alloc_retention.h"
#include "hotspot/nmt.h"
#include "hotspot/vmstructs.h"
#include "memory/memory.h"
#include "ptmalloc/layout.h"

namespace heapwalk::analysis {

using ptmalloc::ChunkState;

namespace {

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
uint64_t align_down(uint64_t v, uint64_t a) { return v & ~(a - 1); }

bool binlike(ChunkState s) {
  return s == ChunkState::Fastbin || s == ChunkState::Unsorted || s == ChunkState::Small || s == ChunkState::Large;
}

// /proc/PID/pagemap (Documentation/admin-guide/mm/pagemap.rst): one u64 per page; bit 63
// present, 62 swapped, 61 file-page or shared-anon, 56 exclusively mapped, 0-54 PFN (zero
// without CAP_SYS_ADMIN). Reading a never-touched or released page through /proc/PID/mem (as
// the chunk walk does) maps the shared zero page there: present in pagemap but not in RSS. The
// zero page is recognised by its PFN (learned from one read-only page of our own) when PFNs are
// visible, else by the exclusive bit, which the zero page never has.
class Pagemap {
 public:
  explicit Pagemap(int pid) {
    std::string path = "/proc/" + std::to_string(pid) + "/pagemap";
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      why = path + ": " + std::strerror(errno);
      return;
    }
    learn_zero_pfn();
  }
  ~Pagemap() {
    if (fd_ >= 0) ::close(fd_);
  }
  Pagemap(const Pagemap&) = delete;
  Pagemap& operator=(const Pagemap&) = delete;
  bool ok() const { return fd_ >= 0; }
  std::string why;
  std::string method() const {
    return zero_pfn_ ? "pagemap (present or swapped; the shared zero page recognised by its PFN)"
                     : "pagemap (present or swapped; zero-page mappings recognised by the missing "
                       "exclusive bit, PFNs not visible)";
  }

  Residency query(uint64_t start, uint64_t len, uint64_t page) {
    Residency r;
    if (!ok() || len == 0) return r;
    uint64_t first = start / page, n = len / page;
    std::vector<uint64_t> buf;
    for (uint64_t done = 0; done < n;) {
      uint64_t k = std::min<uint64_t>(n - done, 1 << 16);
      buf.resize(k);
      ssize_t got = ::pread(fd_, buf.data(), k * 8, static_cast<off_t>((first + done) * 8));
      uint64_t m = got > 0 ? static_cast<uint64_t>(got) / 8 : 0;
      for (uint64_t i = 0; i < m; ++i) classify(buf[i], page, r);
      if (m < k) {  // unreadable tail: unknown, count as absent
        r.absent += (k - m) * page;
      }
      done += k;
    }
    return r;
  }

 private:
  void classify(uint64_t e, uint64_t page, Residency& r) const {
    bool present = e >> 63 & 1, swapped = e >> 62 & 1, file = e >> 61 & 1, excl = e >> 56 & 1;
    uint64_t pfn = e & ((uint64_t{1} << 55) - 1);
    if (present) {
      bool zero = zero_pfn_ ? pfn == *zero_pfn_ : (!excl && !file);
      (zero ? r.absent : r.resident) += page;
    } else if (swapped) {
      r.swapped += page;
    } else {
      r.absent += page;
    }
  }
  void learn_zero_pfn() {
    long ps = ::sysconf(_SC_PAGESIZE);
    void* p = ::mmap(nullptr, static_cast<size_t>(ps), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    volatile uint8_t v = *static_cast<volatile uint8_t*>(p);
    (void)v;
    int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      uint64_t e = 0;
      auto off = static_cast<off_t>(reinterpret_cast<uintptr_t>(p) / static_cast<uintptr_t>(ps) * 8);
      if (::pread(fd, &e, 8, off) == 8 && (e >> 63 & 1)) {
        uint64_t pfn = e & ((uint64_t{1} << 55) - 1);
        if (pfn) zero_pfn_ = pfn;
      }
      ::close(fd);
    }
    ::munmap(p, static_cast<size_t>(ps));
  }
  int fd_ = -1;
  std::optional<uint64_t> zero_pfn_;
};

// A core: pages not saved, and pages that read as all zero (released, never touched, or
// zero-filled data: a core cannot tell them apart).
Residency core_residency(memory::MemorySource& m, uint64_t start, uint64_t len, uint64_t page) {
  Residency r;
  std::vector<uint8_t> buf(page);
  for (uint64_t a = start; a < start + len; a += page) {
    const uint8_t* p = m.direct(a, page);
    if (!p) {
      if (m.read(a, buf.data(), page) != page) {
        r.unsaved += page;
        continue;
      }
      p = buf.data();
    }
    bool zero = true;
    for (uint64_t i = 0; i < page; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if (w) {
        zero = false;
        break;
      }
    }
    if (zero) r.zero += page;
  }
  return r;
}

}  // namespace

PageRange mtrim_range(uint64_t p, uint64_t size, uint64_t ps) {
  // malloc.c:5057-5082 (2.36): size > psm1 + sizeof (struct malloc_chunk); paligned_mem =
  // (p + sizeof (struct malloc_chunk) + psm1) & ~psm1; size -= paligned_mem - p; if (size > psm1)
  // madvise (paligned_mem, size & ~psm1, MADV_DONTNEED).
  const uint64_t psm1 = ps - 1;
  if (size <= psm1 + kMallocChunkStruct) return {};
  uint64_t pal = (p + kMallocChunkStruct + psm1) & ~psm1;
  uint64_t rest = size - (pal - p);
  if (rest <= psm1) return {};
  return {pal, rest & ~psm1};
}

uint64_t systrim_extra(uint64_t top_size, uint64_t pad, uint64_t ps, uint64_t minsize) {
  // malloc.c:2980-2993 (2.36): top_area = top_size - MINSIZE - 1; if (top_area <= pad) return 0;
  // extra = ALIGN_DOWN (top_area - pad, pagesize).
  if (top_size < minsize + 1) return 0;
  uint64_t top_area = top_size - minsize - 1;
  if (top_area <= pad) return 0;
  return align_down(top_area - pad, ps);
}

void Consolidator::feed(uint64_t address, uint64_t size, ChunkState st) {
  // malloc_consolidate (malloc.c:4710): each fastbin chunk merges backward when !prev_inuse and
  // forward when the next chunk is free, or into top when the next chunk is top. Free binned
  // chunks are never adjacent to each other, so a group grows along pairs of neighbours of which
  // at least one is a fastbin chunk; the order glibc takes the fastbins in does not matter.
  bool fast = st == ChunkState::Fastbin;
  if (binlike(st)) {
    if (open_ && address == start_ + size_ && (last_fast_ || fast)) {
      size_ += size;
    } else {
      flush();
      open_ = true;
      start_ = address;
      size_ = size;
    }
    last_fast_ = fast;
    return;
  }
  if (st == ChunkState::Top && open_ && last_fast_ && start_ + size_ == address && (!top_ || *top_ == address)) {
    into_top += size_;
    open_ = false;
    return;
  }
  flush();
}

void Consolidator::flush() {
  if (open_) emit_(start_, size_);
  open_ = false;
}

Consolidated consolidate(const std::vector<SimChunk>& c, std::optional<uint64_t> top) {
  Consolidated out;
  Consolidator k([&](uint64_t a, uint64_t s) { out.chunks.push_back({a, s}); }, top);
  for (const auto& x : c) k.feed(x.address, x.size, x.state);
  k.flush();
  out.into_top = k.into_top;
  return out;
}

void Figures::add(const Figures& o) {
  in_use += o.in_use;
  tcache += o.tcache;
  fast += o.fast;
  binned += o.binned;
  top += o.top;
  trim_chunks += o.trim_chunks;
  trim_top += o.trim_top;
  fragments += o.fragments;
  top_kept += o.top_kept;
  into_top += o.into_top;
  trim.add(o.trim);
  kept.add(o.kept);
}

namespace {

// glibc's `narenas` and `narenas_limit` (a static in arena_get2, `narenas_limit.N` in the symtab)
// from libc's debug file.
void read_arena_counters(ptmalloc::Heap& h, target::Target& t, Pressure& p) {
  const auto& g = h.glibc();
  if (g.build_id.empty() || t.overrides().no_files) return;
  std::unique_ptr<target::ElfFile> dbg;
  try {
    dbg = t.debug_file(g.build_id);
  } catch (const std::exception&) {
    return;
  }
  if (!dbg) return;
  auto ma = dbg->symbol("main_arena");
  if (!ma || ma->value > g.main_arena) return;
  uint64_t bias = g.main_arena - ma->value;
  memory::Reader r(t.memory());
  for (const auto& [name, s] : dbg->symbols()) {
    uint64_t v;
    if (name == "narenas" && s.size == 8 && r.try_u64(bias + s.value, v)) p.narenas = v;
    if (name.rfind("narenas_limit", 0) == 0 && s.size == 8 && r.try_u64(bias + s.value, v) && v)
      p.limit = v, p.limit_source = "glibc's narenas_limit";
  }
}

}  // namespace

Retention compute_retention(ptmalloc::Heap& h, target::Target& t, const RetentionOptions& o) {
  Retention res;
  const uint64_t page = res.page;
  const auto& P = h.params();
  const auto& L = h.layout();
  h.summarize();
  auto& mem = t.memory();

  std::unique_ptr<Pagemap> pm;
  if (o.residency && t.kind() == target::Target::Kind::Live && t.pid() > 0) {
    pm = std::make_unique<Pagemap>(t.pid());
    if (pm->ok()) {
      res.residency = "pagemap";
      res.residency_detail = pm->method();
    } else {
      res.residency_detail = "page residency unknown: " + pm->why;
      res.notes.note(res.residency_detail);
      pm.reset();
    }
  } else if (o.residency && t.kind() == target::Target::Kind::Core) {
    res.residency = "core";
    res.residency_detail =
        "a core does not record residency: pages the core did not save are counted as unsaved, "
        "all-zero pages as zero (released, never touched, or zero data: indistinguishable)";
  } else {
    res.residency_detail = "page residency unknown for this kind of target";
  }
  auto residency = [&](uint64_t start, uint64_t len) -> Residency {
    if (len == 0) return {};
    if (pm) return pm->query(start, len, page);
    if (res.residency == "core") return core_residency(mem, start, len, page);
    return {};
  };

  // Threads per arena.
  std::map<uint64_t, unsigned> threads_of;
  for (const auto& th : h.threads())
    if (th.arena) ++threads_of[*th.arena];

  for (const auto& a : h.arenas()) {
    ArenaRetention ar;
    ar.address = a.address;
    ar.index = a.index;
    ar.main = a.main;
    ar.system = a.system_mem;
    ar.attached_threads = a.attached_threads;
    ar.threads = threads_of.count(a.address) ? threads_of[a.address] : 0;
    // The main arena is contiguous when NONCONTIGUOUS_BIT is clear and the break is top's end.
    if (a.main) {
      uint32_t flags = 0;
      memory::Reader r(mem);
      if (r.try_u32(a.address + L.ms_flags, flags) && (flags & 2)) ar.contiguous = false;
      uint64_t top_end = a.top + a.top_size;
      if (!mem.regions().empty()) {
        bool at_end = false;
        for (const auto& reg : mem.regions())
          if (reg.contains(top_end - 1) && reg.end == align_up(top_end, page) &&
              (reg.path.empty() || reg.path == "[heap]"))
            at_end = true;
        if (!at_end) ar.contiguous = false;
      }
      if (!ar.contiguous)
        res.notes.note(
            "main arena's top does not end at the program break: systrim would not "
            "shrink it (counted as kept)");
    }
    ar.heaps.resize(a.heaps.size());
    for (size_t i = 0; i < a.heaps.size(); ++i) {
      ar.heaps[i].address = a.heaps[i].address;
      ar.heaps[i].size = a.heaps[i].size;
      ar.heaps[i].reserved = a.main ? a.heaps[i].size : P.heap_max;
    }
    // One pass: figures per heap, and malloc_consolidate simulated on the fly (chunks come in
    // address order, heap by heap).
    size_t cur = 0;
    std::vector<uint64_t> chunk_bytes(a.heaps.size(), 0);
    Consolidator k(
        [&](uint64_t addr, uint64_t size) {
          Figures& f = ar.heaps[cur].f;
          PageRange pr = mtrim_range(addr, size, page);
          f.trim_chunks += pr.length;
          chunk_bytes[cur] += size;
          if (pr.length) f.trim.add(residency(pr.start, pr.length));
        },
        a.top);
    std::vector<bool> has_top(a.heaps.size(), false);
    uint64_t into_top_seen = 0;
    h.walk(&a, [&](uint64_t addr, uint64_t size, ChunkState st, const ptmalloc::Arena*, size_t hi) {
      if (hi >= ar.heaps.size()) return true;
      if (hi != cur) {
        k.flush();
        cur = hi;
      }
      Figures& f = ar.heaps[hi].f;
      switch (st) {
        case ChunkState::Used: f.in_use += size; break;
        case ChunkState::Tcache: f.tcache += size; break;
        case ChunkState::Fastbin: f.fast += size; break;
        case ChunkState::Unsorted:
        case ChunkState::Small:
        case ChunkState::Large: f.binned += size; break;
        case ChunkState::Top:
          f.top += size;
          has_top[hi] = true;
          break;
        default: break;
      }
      k.feed(addr, size, st);
      if (st == ChunkState::Top) {
        f.into_top = k.into_top - into_top_seen;
        into_top_seen = k.into_top;
      }
      return true;
    });
    k.flush();
    for (size_t hi = 0; hi < ar.heaps.size(); ++hi) {
      Figures& f = ar.heaps[hi].f;
      f.fragments = chunk_bytes[hi] - f.trim_chunks;
      if (has_top[hi]) {
        uint64_t top_start = a.top - f.into_top, top_size = a.top_size + f.into_top;
        uint64_t top_end = top_start + top_size;
        uint64_t extra = 0;
        if (a.main && ar.contiguous) extra = systrim_extra(top_size, 0, page, L.minsize);
        f.trim_top = extra;
        f.top_kept = top_size - extra;
        if (extra) f.trim.add(residency(top_end - extra, extra));
        uint64_t kept_lo = align_up(top_start + kMallocChunkStruct, page), kept_hi = align_down(top_end - extra, page);
        if (kept_hi > kept_lo) f.kept.add(residency(kept_lo, kept_hi - kept_lo));
      }
      ar.f.add(f);
    }
    res.total.add(ar.f);
    Pressure& p = res.pressure;
    p.threads += ar.threads;
    p.max_threads_per_arena = std::max(p.max_threads_per_arena, ar.threads);
    if (!a.main) {
      p.heaps += static_cast<unsigned>(a.heaps.size());
      for (const auto& hr : a.heaps) p.heap_bytes += hr.size;
      p.heap_reserved += a.heaps.size() * P.heap_max;
    }
    res.arenas.push_back(std::move(ar));
  }

  // Arena pressure: glibc's limit (arena.c:924 arena_get2): mp_.arena_max when set, else
  // NARENAS_FROM_NCORES (__get_nprocs_sched ()) = 8 x cores on 64-bit, once narenas > arena_test.
  Pressure& p = res.pressure;
  p.arenas = static_cast<unsigned>(h.arenas().size());
  read_arena_counters(h, t, p);
  if (P.arena_max) {
    p.limit = P.arena_max;
    p.limit_source = "mp_.arena_max (MALLOC_ARENA_MAX / glibc.malloc.arena_max)";
  }
  if (t.kind() == target::Target::Kind::Live && t.pid() > 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(t.pid(), sizeof set, &set) == 0) {
      p.cores = static_cast<unsigned>(CPU_COUNT(&set));
      p.cores_source = "sched_getaffinity of the process (what glibc's __get_nprocs_sched counts)";
    }
  }
  if (!p.cores && p.limit && !P.arena_max && p.limit_source == "glibc's narenas_limit") {
    p.cores = static_cast<unsigned>(*p.limit / 8);
    p.cores_source = "narenas_limit / 8";
  }
  if (!p.limit && p.cores) {
    p.limit = uint64_t{8} * *p.cores;
    p.limit_source = "8 x cores (glibc computes it once more than arena_test arenas exist)";
  }
  if (!p.cores && !P.arena_max)
    res.notes.note(
        "the number of cores the target could use is unknown (a core does not record "
        "it, and glibc computed no narenas_limit yet)");
  return res;
}

// ---------------------------------------------------------------------------------------------
// mappings
// ---------------------------------------------------------------------------------------------

namespace {

struct Labelled {
  uint64_t start, end;
  size_t group;
};

std::map<uint64_t, uint64_t> smaps_rss(int pid) {
  std::map<uint64_t, uint64_t> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
  std::string line;
  uint64_t cur = 0;
  bool have = false;
  while (std::getline(in, line)) {
    unsigned long long s = 0, e = 0;
    if (line.size() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
        std::sscanf(line.c_str(), "%llx-%llx", &s, &e) == 2 && line.find(' ') != std::string::npos &&
        line.find(':') > line.find(' ')) {
      cur = s;
      have = true;
      continue;
    }
    if (have && line.rfind("Rss:", 0) == 0) {
      unsigned long long kb = 0;
      std::sscanf(line.c_str() + 4, "%llu", &kb);
      out[cur] = kb * 1024;
    }
  }
  return out;
}

std::string base_name(const std::string& p) {
  auto s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

/// The group an NMT category's reserved regions go to: the JVM's own names for the large
/// reservations (what `-XX:` flags size), "NMT <category>" for the rest.
std::pair<std::string, std::string> jvm_label(const std::string& cat) {
  static const std::map<std::string, std::string> names = {
      {"Java Heap", "Java heap"},
      {"Class", "class space (compressed class space)"},
      {"Metaspace", "metaspace"},
      {"Code", "code cache (CodeHeap)"},
      {"Shared class space", "CDS archive (shared class space)"},
      {"GC", "GC data (card table, bitmaps)"},
  };
  if (cat == "Thread Stack") return {"thread stacks", "stack"};
  auto it = names.find(cat);
  if (it != names.end()) return {it->second, "jvm"};
  return {"NMT " + cat, "nmt"};
}

}  // namespace

Mappings reconcile_mappings(ptmalloc::Heap* h, target::Target& t, const hotspot::Nmt* nmt,
                            const std::vector<OwnedRange>* owned) {
  Mappings m;
  auto& mem = t.memory();
  const auto& regions = mem.regions();
  if (regions.empty()) {
    m.notes.note("the target's mappings are unknown (memory read through a callback)");
    return m;
  }
  std::vector<MapGroup> groups;
  std::map<std::string, size_t> by_label;
  auto group = [&](const std::string& label, const std::string& kind, std::optional<uint64_t> arena = std::nullopt) {
    auto it = by_label.find(label);
    if (it != by_label.end()) return it->second;
    MapGroup g;
    g.label = label;
    g.kind = kind;
    g.arena = arena;
    groups.push_back(g);
    by_label[label] = groups.size() - 1;
    return groups.size() - 1;
  };
  std::vector<Labelled> iv;
  if (h) {
    const auto& P = h->params();
    for (const auto& a : h->arenas()) {
      if (a.main) {
        for (const auto& hr : a.heaps)
          iv.push_back({hr.address, hr.walk_end, group("glibc main arena heap (sbrk)", "glibc-main-heap", a.address)});
      } else {
        size_t g = group("glibc arena #" + std::to_string(a.index) + " heaps", "glibc-arena-heaps", a.address);
        for (const auto& hr : a.heaps) iv.push_back({hr.address, hr.address + P.heap_max, g});
      }
    }
    size_t g = group("glibc mmapped chunks", "glibc-mmapped");
    for (const auto& c : h->mmapped().chunks) {
      auto ext = ptmalloc::mmap_extent(h->layout(), c.address, c.prev_size, c.size | 2);
      iv.push_back({ext.base, ext.base + ext.size, g});
    }
  }
  // Thread stacks: the mapping holding each thread's stack pointer, with a PROT_NONE guard
  // mapping right below it.
  // The lowest stack pointer in each stack mapping: the pages below it count in no footprint.
  std::map<uint64_t, uint64_t> stack_sp;  // region start -> lowest sp
  {
    size_t g = group("thread stacks", "stack");
    for (const auto& th : t.threads()) {
      uint64_t sp = th.rsp ? th.rsp : (th.has_regs ? th.regs[19] : 0);
      if (!sp) continue;
      for (size_t i = 0; i < regions.size(); ++i) {
        if (!regions[i].contains(sp)) continue;
        auto [it, fresh] = stack_sp.emplace(regions[i].start, sp);
        if (!fresh) it->second = std::min(it->second, sp);
        uint64_t lo = regions[i].start;
        if (i > 0 && regions[i - 1].end == lo && !regions[i - 1].read && !regions[i - 1].write &&
            !regions[i - 1].exec && regions[i - 1].path.empty())
          lo = regions[i - 1].start;
        iv.push_back({lo, regions[i].end, g});
        break;
      }
    }
  }
  // JVM reservations, named by what the image tells: NMT's reserved regions (level summary or
  // detail) carry their category; without them the Java heap's bounds come from vmStructs.
  bool java_heap_known = false;
  if (nmt) {
    for (const auto& r : nmt->regions) {
      std::string cat = r.index < nmt->raw.size() ? nmt->raw[r.index].name : std::to_string(r.index);
      auto [label, kind] = jvm_label(cat);
      if (cat == "Java Heap") java_heap_known = true;
      iv.push_back({r.base, r.base + r.size, group(label, kind)});
    }
  }
  if (!java_heap_known && t.find_module([](const std::string& b) { return b == "libjvm.so"; })) {
    if (auto jh = hotspot::java_heap(t)) iv.push_back({jh->start, jh->end, group("Java heap", "jvm")});
    for (const auto& ch : hotspot::code_heaps(t))
      iv.push_back({ch.start, ch.end, group("code cache (CodeHeap)", "jvm")});
  }
  // Other allocators' memory (jemalloc, tcmalloc): after glibc's and the JVM's, which win where
  // they overlap (a smashed structure).
  std::set<size_t> uncommitted;
  if (owned)
    for (const auto& o : *owned) {
      size_t g = group(o.label, o.kind);
      if (!o.committed) uncommitted.insert(g);
      iv.push_back({o.start, o.end, g});
    }
  std::stable_sort(iv.begin(), iv.end(), [](const Labelled& a, const Labelled& b) { return a.start < b.start; });

  std::string exe;
  if (t.kind() == target::Target::Kind::Live && t.pid() > 0) {
    char buf[4096];
    ssize_t n = ::readlink(("/proc/" + std::to_string(t.pid()) + "/exe").c_str(), buf, sizeof buf - 1);
    if (n > 0) exe = std::string(buf, static_cast<size_t>(n));
  }
  if (exe.empty()) {
    uint64_t lowest = ~uint64_t{0};
    for (const auto& mod : t.modules())
      if (base_name(mod.path).find(".so") == std::string::npos && mod.base < lowest && !mod.path.empty() &&
          mod.path[0] == '/')
        lowest = mod.base, exe = mod.path;
  }
  auto default_group = [&](const memory::Region& r) -> size_t {
    if (r.path.empty()) return group("other anonymous", "anon");
    if (r.path == "[stack]") return group("thread stacks", "stack");
    if (r.path == "[heap]") return group("other anonymous", "anon");
    if (r.path[0] == '[') return group("kernel (vdso, vvar, vsyscall)", "special");
    std::string p = r.path;
    if (auto d = p.find(" (deleted)"); d != std::string::npos) p = p.substr(0, d);
    if (!exe.empty() && p == exe) return group("program image", "program");
    if (base_name(p).find(".so") != std::string::npos) return group("shared libraries", "library");
    return group("other mapped files", "file");
  };

  std::map<uint64_t, uint64_t> rss;
  std::unique_ptr<Pagemap> pm;
  bool live = t.kind() == target::Target::Kind::Live && t.pid() > 0;
  if (live) {
    rss = smaps_rss(t.pid());
    pm = std::make_unique<Pagemap>(t.pid());
    if (!pm->ok()) pm.reset();
    if (!rss.empty()) {
      m.resident = 0;
      m.resident_source = "/proc/PID/smaps Rss per mapping; mappings split between groups by pagemap";
    }
  }
  // A core: what it holds, the saved pages that are not all zero (a kernel core and heapwalk's
  // snapshot leave out the pages that were not resident, gcore writes them as zeros).
  bool held = !live && !regions.empty() && mem.held_bytes(regions.front().start, regions.front().end).has_value();
  if (held) {
    m.resident = 0;
    m.resident_source =
        "core: the pages it saved that are not all zero (pages that were not resident are holes in a kernel "
        "core or a heapwalk snapshot and zeros in a gcore core; a resident page of zeros is not counted)";
  }
  auto add = [&](size_t g, uint64_t lo, uint64_t hi, std::optional<uint64_t> resident, bool write) {
    if (hi <= lo) return;
    groups[g].mapped += hi - lo;
    if (write) groups[g].writable += hi - lo;
    if (resident) groups[g].resident = groups[g].resident.value_or(0) + *resident;
  };
  const uint64_t page = 4096;
  for (const auto& r : regions) {
    m.mapped += r.end - r.start;
    if (r.write) {
      m.writable += r.end - r.start;
      // A thread stack's pages below its stack pointer: reserved (8 MiB by default), touched only
      // by deeper calls than the thread makes now.
      auto sp = stack_sp.find(r.start);
      uint64_t lo = sp == stack_sp.end() ? r.start : std::max(r.start, align_down(sp->second, page));
      m.footprint += r.end - lo;
    }
    std::vector<std::tuple<uint64_t, uint64_t, size_t>> parts;
    std::set<size_t> counted;
    uint64_t cur = r.start;
    size_t dg = default_group(r);
    auto j = std::upper_bound(iv.begin(), iv.end(), r.start, [](uint64_t a, const Labelled& l) { return a < l.start; });
    while (j != iv.begin() && std::prev(j)->end > r.start) --j;  // intervals covering r.start
    for (; j != iv.end() && j->start < r.end && cur < r.end; ++j) {
      if (j->end <= cur) continue;
      uint64_t s = std::max(j->start, cur), e = std::min(j->end, r.end);
      if (s > cur) parts.emplace_back(cur, s, dg);
      parts.emplace_back(s, e, j->group);
      cur = e;
    }
    if (cur < r.end) parts.emplace_back(cur, r.end, dg);
    if (r.write)
      for (const auto& [s, e, g] : parts)
        if (uncommitted.count(g)) m.footprint -= std::min(m.footprint, e - s);
    std::optional<uint64_t> whole_rss;
    if (auto f = rss.find(r.start); f != rss.end()) whole_rss = f->second;
    if (held) whole_rss = mem.held_bytes(r.start, r.end);
    if (whole_rss && m.resident) *m.resident += *whole_rss;
    bool single = true;
    for (const auto& [s, e, g] : parts) {
      if (g != std::get<2>(parts.front())) single = false;
      if (counted.insert(g).second) ++groups[g].regions;
    }
    if (single) {
      add(std::get<2>(parts.front()), r.start, r.end, whole_rss, r.write);
      continue;
    }
    for (const auto& [s, e, g] : parts) {
      std::optional<uint64_t> res;
      if (whole_rss && pm) {
        uint64_t lo = align_down(s, page), hi = align_up(e, page);
        res = pm->query(lo, hi - lo, page).resident;
      } else if (held) {
        res = mem.held_bytes(s, e);
      }
      add(g, s, e, res, r.write);
    }
  }
  // Drop empty groups, keep the rest in first-seen order.
  for (auto& g : groups)
    if (g.mapped) m.groups.push_back(g);
  return m;
}

}  // namespace heapwalk::analysis
