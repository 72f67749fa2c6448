// Chunk inspection and the free() simulation (see inspect.h). The free() checks follow glibc's
// malloc/malloc.c __libc_free, munmap_chunk, _int_free and unlink_chunk, read for glibc-2.36
// (bminor/glibc tag glibc-2.36); version differences are gated on the target's version and name
// the release that introduced them (2.26 tcache, 2.29 tcache key, 2.32 safe-linking, 2.33 the
// tcache length bound, 2.34 the random tcache_key, 2.43 no fastbins and the all-bins scan of
// tcache_double_free_verify).
#include "ptmalloc/inspect.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "memory/memory.h"
#include "target/elf_file.h"

namespace heapwalk::ptmalloc {

namespace {

std::string hex(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

bool at_least(const Heap& h, const char* v) {
  return h.glibc().version.empty() || compare_versions(h.glibc().version, v) >= 0;
}

uint64_t reveal(const Layout& l, uint64_t field, uint64_t stored) {
  return l.safe_linking ? ((field >> 12) ^ stored) : stored;
}

const ThreadCache* thread_cache(const Heap& h, std::optional<int> lwp) {
  for (const auto& tc : h.threads())
    if (!lwp || tc.lwp == *lwp) return &tc;
  return nullptr;
}

}  // namespace

ChunkFields chunk_fields(Heap& h, target::Target& t, uint64_t chunk, uint64_t size, ChunkState st, uint64_t dump) {
  const Layout& l = h.layout();
  memory::Reader r(t.memory());
  ChunkFields f;
  f.chunk = chunk;
  f.mem = chunk + 16;
  uint64_t w = 0;
  if (r.try_u64(chunk + 8, w)) {
    f.size_word = w;
    f.prev_inuse = w & 1;
    f.is_mmapped = w & 2;
    f.non_main_arena = w & 4;
  }
  // prev_size belongs to the previous chunk unless it is free (or this chunk is mmapped, where
  // it is the offset into the mapping).
  if ((!f.prev_inuse || f.is_mmapped) && r.try_u64(chunk, w)) f.prev_size = w;
  bool free_list = st == ChunkState::Tcache || st == ChunkState::Fastbin || st == ChunkState::Unsorted ||
                   st == ChunkState::Small || st == ChunkState::Large;
  if (free_list) {
    uint64_t fd = 0, bk = 0;
    if (r.try_u64(f.mem, fd)) {
      f.fd_raw = fd;
      f.fd_protected = l.safe_linking && (st == ChunkState::Tcache || st == ChunkState::Fastbin);
      f.fd = f.fd_protected ? reveal(l, f.mem, fd) : fd;
    }
    if (st != ChunkState::Tcache && st != ChunkState::Fastbin && r.try_u64(f.mem + 8, bk)) f.bk = bk;
    if (st == ChunkState::Large) {
      if (r.try_u64(f.mem + 16, w)) f.fd_nextsize = w;
      if (r.try_u64(f.mem + 24, w)) f.bk_nextsize = w;
    }
  }
  if (l.has_tcache && l.key_kind != TcacheKey::None && size >= 32 && r.try_u64(f.mem + l.te_key - l.te_next, w)) {
    f.key = w;
    if (l.key_kind == TcacheKey::Random && h.glibc().tcache_key && w == *h.glibc().tcache_key) {
      f.key_match = "tcache_key";
    } else if (l.key_kind == TcacheKey::OwnerPointer) {
      for (const auto& tc : h.threads())
        if (tc.address && *tc.address && *tc.address == w) {
          f.key_match = "tcache";
          f.key_owner_lwp = tc.lwp;
        }
    }
  }
  uint64_t avail = size > 16 ? size - 16 : 0;
  if (st == ChunkState::Used) avail += 8;  // the next chunk's prev_size word is this one's
  uint64_t n = std::min({dump, kMaxDumpBytes, avail});
  f.bytes.resize(n);
  size_t got = n ? t.memory().read(f.mem, f.bytes.data(), n) : 0;
  f.bytes.resize(got);
  return f;
}

AddressInfo describe_address(target::Target& t, uint64_t addr) {
  AddressInfo a;
  const memory::Region* reg = nullptr;
  for (const auto& rg : t.memory().regions())
    if (rg.contains(addr)) {
      reg = &rg;
      break;
    }
  if (!reg) {
    a.kind = "unmapped";
    return a;
  }
  a.kind = "mapping";
  a.start = reg->start;
  a.end = reg->end;
  a.read = reg->read;
  a.write = reg->write;
  a.exec = reg->exec;
  a.path = reg->path;
  for (const auto& th : t.threads())
    if (th.rsp && reg->contains(th.rsp)) {
      a.kind = "stack";
      a.lwp = th.lwp;
      return a;
    }
  for (const auto& m : t.modules()) {
    if (addr < m.base || addr >= m.end) continue;
    a.kind = "module";
    a.module = m.path;
    a.module_base = m.base;
    auto file = t.module_file(m, true);
    if (file) {
      // Symbols of a shared object (and of a PIE) are offsets from its base; a fixed-address
      // executable's are absolute.
      // The nearest symbol at or below addr (ties: the smallest name, for stable output).
      uint64_t best = 0;
      for (const auto& [name, sym] : file->symbols()) {
        if (!sym.value || name.empty()) continue;
        uint64_t at = sym.value >= m.base ? sym.value : m.base + sym.value;
        if (at > addr || at < best) continue;
        if (at == best && !a.symbol.empty() && name >= a.symbol) continue;
        best = at;
        a.symbol = name;
        a.symbol_offset = addr - at;
      }
    }
    break;
  }
  return a;
}

std::vector<VisChunk> vis_chunks(Heap& h, target::Target& t, std::optional<uint64_t> from, const Arena* arena,
                                 uint64_t count, uint64_t per_chunk) {
  std::vector<VisChunk> out;
  count = std::min<uint64_t>(count, 100000);
  if (count == 0) return out;
  per_chunk = std::min(per_chunk, kMaxDumpBytes);
  if (from) {  // an mmapped chunk is a run of one
    for (const auto& m : h.mmapped().chunks) {
      if (*from < m.address || *from - m.address >= m.size) continue;
      VisChunk v;
      v.address = m.address;
      v.size = m.size;
      v.state = ChunkState::Mmapped;
      v.bytes.resize(std::min(per_chunk, m.size));
      v.bytes.resize(t.memory().read(m.address, v.bytes.data(), v.bytes.size()));
      out.push_back(std::move(v));
      return out;
    }
  }
  const Arena* a = from ? h.arena_of(*from) : arena;
  if (!a && !from && !h.arenas().empty()) a = &h.arenas().front();
  if (!a) return out;
  bool started = !from;
  h.walk(a, [&](uint64_t c, uint64_t size, ChunkState st, const Arena*, size_t) {
    if (!started) {
      if (*from >= c && *from - c < size) {
        started = true;
      } else {
        return c <= *from;
      }
    }
    VisChunk v;
    v.address = c;
    v.size = size;
    v.state = st;
    uint64_t n = std::min(per_chunk, std::max<uint64_t>(size, 16));
    v.bytes.resize(n);
    v.bytes.resize(t.memory().read(c, v.bytes.data(), n));
    out.push_back(std::move(v));
    return out.size() < count;
  });
  return out;
}

namespace {

/// The free() simulation: reads the target, records each check; stop() ends it.
class FreeSim {
 public:
  FreeSim(Heap& h, target::Target& t, FreeVerdict& v) : h_(h), l_(h.layout()), r_(t.memory()), v_(v) {}

  /// Reads a word free() reads; false (and a "crash" verdict) when it is unreadable.
  bool word(uint64_t addr, uint64_t& out, const char* what) {
    if (r_.try_u64(addr, out)) return true;
    v_.action = "crash";
    v_.aborts = true;
    v_.message = std::string("SIGSEGV: free() reads ") + what + " at " + hex(addr) + ", which is not mapped";
    v_.checks.push_back({std::string("read ") + what, false, "unreadable at " + hex(addr)});
    return false;
  }
  /// Records a check; when it fails, glibc aborts with `message`.
  bool check(const std::string& name, bool ok, const std::string& detail, const char* message) {
    v_.checks.push_back({name, ok, detail});
    if (!ok) {
      v_.action = "abort";
      v_.aborts = true;
      v_.message = message;
    }
    return ok;
  }

  void run(uint64_t mem, std::optional<int> lwp) {
    v_.mem = mem;
    if (const ThreadCache* tc = thread_cache(h_, lwp)) v_.lwp = tc->lwp;
    if (mem == 0) {
      v_.action = "nothing";
      v_.notes.push_back("free(NULL) does nothing");
      return;
    }
    uint64_t p = mem - 16;
    v_.chunk = p;
    uint64_t sw = 0;
    if (!word(p + 8, sw, "the size field")) return;
    uint64_t size = sw & ~uint64_t{7};
    v_.size = size;
    if (sw & 2) return munmap_chunk(p, sw);
    // arena_for_chunk: NON_MAIN_ARENA -> heap_for_ptr(p)->ar_ptr.
    uint64_t av = h_.glibc().main_arena;
    if (sw & 4) {
      uint64_t heap = p & ~(h_.params().heap_max ? h_.params().heap_max - 1 : l_.heap_max - 1);
      if (!word(heap + l_.hi_ar_ptr, av, "heap_info.ar_ptr (NON_MAIN_ARENA is set)")) return;
    }
    v_.arena = av;
    const Arena* arena = nullptr;
    for (const auto& a : h_.arenas())
      if (a.address == av) arena = &a;
    int_free(p, sw, av, arena, lwp);
  }

 private:
  void munmap_chunk(uint64_t p, uint64_t sw) {
    uint64_t prev = 0;
    if (!word(p, prev, "prev_size (the offset into the mapping)")) return;
    auto ext = mmap_extent(l_, p, prev, sw);
    const uint64_t page = 4096;
    uint64_t mis = v_.mem & (l_.alignment - 1);
    bool pow2 = (mis & (mis - 1)) == 0;  // glibc's powerof2(): true for 0 too
    if (!check("munmap_chunk: mapping page-aligned and pointer aligned",
               ((ext.base | ext.size) & (page - 1)) == 0 && pow2,
               "mapping " + hex(ext.base) + " + " + hex(ext.size) + ", pointer & 15 = " + hex(mis),
               "munmap_chunk(): invalid pointer"))
      return;
    v_.action = "munmap";
    v_.notes.push_back("munmap(" + hex(ext.base) + ", " + hex(ext.size) + ")");
    if (!h_.params().no_dyn_threshold.value_or(0) && (sw & ~uint64_t{7}) > h_.params().mmap_threshold &&
        (sw & ~uint64_t{7}) <= (32ull << 20))
      v_.notes.push_back("the dynamic mmap threshold rises to this chunk's size (and trim_threshold to twice it)");
  }

  void int_free(uint64_t p, uint64_t sw, uint64_t av, const Arena* arena, std::optional<int> lwp) {
    uint64_t size = sw & ~uint64_t{7};
    if (!check("pointer in range and aligned (misaligned_chunk)", !(p > -size) && (p & (l_.alignment - 1)) == 0,
               "chunk " + hex(p) + ", size " + hex(size), "free(): invalid pointer"))
      return;
    if (!check("size >= MINSIZE and aligned", size >= l_.minsize && (size & (l_.alignment - 1)) == 0,
               "size " + hex(size), "free(): invalid size"))
      return;
    if (l_.has_tcache && at_least(h_, "2.26")) {
      bool done = false;
      if (!tcache(p, size, lwp, done) || done) return;
    }
    // get_max_fast(): global_max_fast when the symbols give it, else its default (set_max_fast
    // of DEFAULT_MXFAST = 64 * SIZE_SZ / 4: 0x80).
    max_fast_known_ = h_.glibc().global_max_fast.has_value();
    uint64_t max_fast = h_.glibc().global_max_fast.value_or(0x80);
    if (l_.has_fastbins && size <= max_fast) return fastbin(p, size, av, arena);
    consolidate(p, sw, av, arena);
  }

  /// The tcache part of _int_free; false when it ended the simulation (abort), `done` when the
  /// chunk went into the tcache.
  bool tcache(uint64_t p, uint64_t size, std::optional<int> lwp, bool& done) {
    uint64_t mem = p + 16;
    uint64_t idx = (size - l_.minsize + l_.alignment - 1) / l_.alignment;  // csize2tidx
    uint64_t nbins = h_.params().tcache_bins;
    const ThreadCache* tc = thread_cache(h_, lwp);
    v_.lwp = tc ? tc->lwp : 0;
    if (idx >= nbins || idx >= l_.tcache_bins) {
      v_.checks.push_back({"tcache bin (csize2tidx < mp_.tcache_bins)", true,
                           "index " + std::to_string(idx) + " >= " + std::to_string(nbins) + ": not cached"});
      return true;
    }
    uint64_t tcache = tc && tc->address ? *tc->address : 0;
    if (l_.tcache_dummy_symbol && h_.glibc().tcache_dummy && tcache &&
        (tcache == *h_.glibc().tcache_dummy || tcache == *h_.glibc().tcache_dummy + 1))
      tcache = 0;
    if (!tcache) {
      // MAYBE_INIT_TCACHE: the first free of the thread allocates its tcache (empty).
      v_.notes.push_back("the thread has no tcache yet: free() first allocates one (empty), then caches the chunk");
      v_.action = "tcache";
      done = true;
      return true;
    }
    if (l_.key_kind != TcacheKey::None) {
      uint64_t key = 0;
      if (!word(mem + (l_.te_key - l_.te_next), key, "tcache_entry.key")) return false;
      bool random = l_.key_kind == TcacheKey::Random;
      std::optional<uint64_t> expect = random ? h_.glibc().tcache_key : std::optional<uint64_t>(tcache);
      bool suspect = expect && key == *expect;
      v_.checks.push_back(
          {random ? "e->key == tcache_key (double-free suspect)" : "e->key == tcache (double-free suspect)", true,
           "key " + hex(key) +
               (expect ? (suspect ? " matches" : " differs from " + hex(*expect))
                       : std::string(" (tcache_key unknown: not checked)"))});
      if (suspect) {
        // 2.43 tcache_double_free_verify scans every bin; before, only this one.
        bool all = at_least(h_, "2.43");
        uint64_t scanned = 0;
        for (uint64_t b = all ? 0 : idx; b < (all ? l_.tcache_bins : idx + 1); ++b) {
          uint64_t tmp = 0, cnt = 0;
          if (!word(tcache + l_.tc_entries + 8 * b, tmp, "tcache->entries[]")) return false;
          std::string bin = "bin " + std::to_string(b);
          while (tmp) {
            // Only a failing check is recorded per entry; the scan is summarised below.
            if (at_least(h_, "2.33") && cnt >= h_.params().tcache_count)
              return (void)check("tcache bin length < mp_.tcache_count", false,
                                 bin + " holds more than " + std::to_string(h_.params().tcache_count) + " entries",
                                 "free(): too many chunks detected in tcache"),
                     false;
            if (at_least(h_, "2.32") && (tmp & (l_.alignment - 1)) != 0)
              return (void)check("tcache entry aligned", false, "entry " + hex(tmp) + " in " + bin,
                                 "free(): unaligned chunk detected in tcache 2"),
                     false;
            if (tmp == mem)
              return (void)check("chunk not already in the tcache", false,
                                 "found in " + bin + " at position " + std::to_string(cnt),
                                 "free(): double free detected in tcache 2"),
                     false;
            uint64_t next = 0;
            if (!word(tmp + l_.te_next, next, "tcache_entry.next")) return false;
            tmp = reveal(l_, tmp + l_.te_next, next);
            ++scanned;
            if (++cnt > 1u << 16) {
              v_.action = "crash";
              v_.aborts = true;
              v_.message = "free() would loop: the tcache list cycles (glibc before 2.33 has no bound)";
              return false;
            }
          }
        }
        v_.checks.push_back({"chunk not already in the tcache", true,
                             std::to_string(scanned) + " entries scanned, all aligned and different"});
        v_.checks.push_back({"double-free scan", true, "not in the tcache: the key matched by chance"});
        if (all) v_.notes.push_back("2.43: the key is cleared and free() runs again");
      }
    }
    uint64_t raw = 0;
    unsigned width = l_.tcache_count_width;
    uint8_t buf[8] = {};
    if (!r_.try_copy(tcache + l_.tc_counts + width * idx, buf, width)) {
      word(tcache + l_.tc_counts + width * idx, raw, "tcache->counts[]");
      return false;
    }
    std::memcpy(&raw, buf, width);
    uint64_t have = tcache_chunk_count(l_, raw, h_.params().tcache_count);
    bool room = have < h_.params().tcache_count;
    v_.checks.push_back({"tcache bin not full", true,
                         "bin " + std::to_string(idx) + " holds " + std::to_string(have) + " of " +
                             std::to_string(h_.params().tcache_count) + (room ? "" : ": full, falls through")});
    if (room) {
      v_.action = "tcache";
      done = true;
    }
    return true;
  }

  void fastbin(uint64_t p, uint64_t size, uint64_t av, const Arena* arena) {
    uint64_t next = p + size, nsw = 0;
    if (!word(next + 8, nsw, "the next chunk's size")) return;
    uint64_t system_mem = arena ? arena->system_mem : 0;
    if (!arena && !word(av + l_.ms_system_mem, system_mem, "av->system_mem")) return;
    if (!check("next chunk size sane (fast)", nsw > 16 && (nsw & ~uint64_t{7}) < system_mem,
               "next size " + hex(nsw) + ", system_mem " + hex(system_mem), "free(): invalid next size (fast)"))
      return;
    uint64_t idx = (size >> 4) - 2, old = 0;
    if (!word(av + l_.ms_fastbins + 8 * idx, old, "the fastbin head")) return;
    if (!check("chunk not at the top of its fastbin (fasttop)", old != p,
               "fastbin[" + std::to_string(idx) + "] = " + hex(old), "double free or corruption (fasttop)"))
      return;
    v_.action = "fastbin";
    v_.notes.push_back(
        "fastbin[" + std::to_string(idx) + "] (size " + hex(size) + ")" +
        (max_fast_known_ ? std::string() : "; global_max_fast assumed the default 0x80 (no symbol for it)"));
  }

  /// unlink_chunk(av, c); false when it aborts.
  bool unlink(uint64_t c, const char* which) {
    uint64_t csw = 0, nprev = 0, fd = 0, bk = 0, fdbk = 0, bkfd = 0;
    if (!word(c + 8, csw, "the size of the chunk to unlink")) return false;
    uint64_t cs = csw & ~uint64_t{7};
    if (!word(c + cs, nprev, "prev_size of the chunk after the one to unlink")) return false;
    if (at_least(h_, "2.26") && !check(std::string("unlink ") + which + ": size == next chunk's prev_size", cs == nprev,
                                       "size " + hex(cs) + ", prev_size " + hex(nprev), "corrupted size vs. prev_size"))
      return false;
    if (!word(c + 16, fd, "fd") || !word(c + 24, bk, "bk") || !word(fd + 24, fdbk, "fd->bk") ||
        !word(bk + 16, bkfd, "bk->fd"))
      return false;
    if (!check(std::string("unlink ") + which + ": fd->bk == p && bk->fd == p", fdbk == c && bkfd == c,
               "fd " + hex(fd) + " (->bk " + hex(fdbk) + "), bk " + hex(bk) + " (->fd " + hex(bkfd) + ")",
               "corrupted double-linked list"))
      return false;
    if (csw >= 1024) {  // !in_smallbin_range(chunksize_nomask(p))
      uint64_t fdn = 0, bkn = 0;
      if (!word(c + 32, fdn, "fd_nextsize")) return false;
      if (fdn) {
        uint64_t a = 0, b = 0;
        if (!word(c + 40, bkn, "bk_nextsize") || !word(fdn + 40, a, "fd_nextsize->bk_nextsize") ||
            !word(bkn + 32, b, "bk_nextsize->fd_nextsize"))
          return false;
        if (!check(std::string("unlink ") + which + ": nextsize links", a == c && b == c,
                   "fd_nextsize " + hex(fdn) + ", bk_nextsize " + hex(bkn), "corrupted double-linked list (not small)"))
          return false;
      }
    }
    return true;
  }

  void consolidate(uint64_t p, uint64_t sw, uint64_t av, const Arena* arena) {
    uint64_t size = sw & ~uint64_t{7};
    uint64_t top = 0, flags = 0, system_mem = 0, topsw = 0;
    if (!word(av + l_.ms_top, top, "av->top") || !word(av + l_.ms_system_mem, system_mem, "av->system_mem")) return;
    uint32_t fl = 0;
    if (!r_.try_u32(av + l_.ms_flags, fl)) {
      word(av + l_.ms_flags, flags, "av->flags");
      return;
    }
    (void)arena;
    if (!check("chunk is not the top chunk", p != top, "top " + hex(top), "double free or corruption (top)")) return;
    uint64_t next = p + size;
    if (!word(top + 8, topsw, "the top chunk's size")) return;
    bool contiguous = (fl & 2) == 0;  // NONCONTIGUOUS_BIT
    if (!check("next chunk inside the arena (contiguous arenas)", !contiguous || next < top + (topsw & ~uint64_t{7}),
               "next " + hex(next) + ", top end " + hex(top + (topsw & ~uint64_t{7})),
               "double free or corruption (out)"))
      return;
    uint64_t nsw = 0;
    if (!word(next + 8, nsw, "the next chunk's size")) return;
    if (!check("next chunk's PREV_INUSE set (chunk in use)", nsw & 1, "next size field " + hex(nsw),
               "double free or corruption (!prev)"))
      return;
    uint64_t nsize = nsw & ~uint64_t{7};
    if (!check("next chunk size sane (normal)", nsw > 16 && nsize < system_mem,
               "next size " + hex(nsw) + ", system_mem " + hex(system_mem), "free(): invalid next size (normal)"))
      return;
    uint64_t total = size;
    if (!(sw & 1)) {
      uint64_t prevsize = 0, psw = 0;
      if (!word(p, prevsize, "prev_size")) return;
      uint64_t prev = p - prevsize;
      if (!word(prev + 8, psw, "the previous chunk's size")) return;
      if (at_least(h_, "2.29") && !check("previous chunk's size == prev_size", (psw & ~uint64_t{7}) == prevsize,
                                         "prev_size " + hex(prevsize) + ", size " + hex(psw & ~uint64_t{7}),
                                         "corrupted size vs. prev_size while consolidating"))
        return;
      if (!unlink(prev, "previous chunk")) return;
      total += prevsize;
      v_.notes.push_back("merges with the free previous chunk at " + hex(prev));
    }
    if (next != top) {
      uint64_t nnsw = 0;
      if (!word(next + nsize + 8, nnsw, "the size after the next chunk")) return;
      if (!(nnsw & 1)) {
        if (!unlink(next, "next chunk")) return;
        total += nsize;
        v_.notes.push_back("merges with the free next chunk at " + hex(next));
      }
      uint64_t bck = av + l_.ms_bins - 16, fwd = 0, fwdbk = 0;
      if (!word(av + l_.ms_bins, fwd, "the unsorted bin's fd") || !word(fwd + 24, fwdbk, "unsorted fd->bk")) return;
      if (!check("unsorted bin intact (fwd->bk == bck)", fwdbk == bck, "fwd " + hex(fwd) + " ->bk " + hex(fwdbk),
                 "free(): corrupted unsorted chunks"))
        return;
      v_.action = "unsorted";
    } else {
      total += nsize;
      v_.action = "top";
      v_.notes.push_back("merges into the top chunk");
    }
    v_.notes.push_back("free chunk of " + hex(total) + " bytes");
    if (total >= 65536)
      v_.notes.push_back("size >= FASTBIN_CONSOLIDATION_THRESHOLD: malloc_consolidate and a trim may follow");
  }

  Heap& h_;
  const Layout& l_;
  memory::Reader r_;
  FreeVerdict& v_;
  bool max_fast_known_ = false;
};

}  // namespace

FreeVerdict try_free(Heap& h, target::Target& t, uint64_t mem, std::optional<int> lwp) {
  FreeVerdict v;
  FreeSim(h, t, v).run(mem, lwp);
  if (v.action.empty()) v.action = "abort";
  return v;
}

}  // namespace heapwalk::ptmalloc
