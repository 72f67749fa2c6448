#include "ptmalloc/dwarf_layout.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "target/safe_open.h"
#include "util/sha256.h"

namespace heapwalk::ptmalloc {

namespace {

struct Member {
  uint64_t offset = 0;
  uint64_t elem_size = 0;  // for arrays: the element's size
};
struct Struct {
  uint64_t size = 0;
  std::map<std::string, Member> members;
};

Dwarf_Die peel(Dwarf_Die d) {
  // Follow typedefs and qualifiers to the underlying type.
  for (int i = 0; i < 16; ++i) {
    int tag = dwarf_tag(&d);
    if (tag != DW_TAG_typedef && tag != DW_TAG_const_type && tag != DW_TAG_volatile_type) break;
    Dwarf_Attribute a;
    Dwarf_Die next;
    if (!dwarf_attr_integrate(&d, DW_AT_type, &a) || !dwarf_formref_die(&a, &next)) break;
    d = next;
  }
  return d;
}

void read_struct(Dwarf_Die* s, Struct& out) {
  Dwarf_Word size = 0;
  Dwarf_Attribute a;
  if (dwarf_attr(s, DW_AT_byte_size, &a) && dwarf_formudata(&a, &size) == 0) out.size = size;
  Dwarf_Die m;
  if (dwarf_child(s, &m) != 0) return;
  do {
    if (dwarf_tag(&m) != DW_TAG_member) continue;
    const char* name = dwarf_diename(&m);
    Dwarf_Word off = 0;
    if (!name || !dwarf_attr(&m, DW_AT_data_member_location, &a) || dwarf_formudata(&a, &off) != 0) continue;
    Member mem;
    mem.offset = off;
    Dwarf_Die type;
    if (dwarf_attr_integrate(&m, DW_AT_type, &a) && dwarf_formref_die(&a, &type)) {
      type = peel(type);
      if (dwarf_tag(&type) == DW_TAG_array_type) {
        Dwarf_Die elem;
        if (dwarf_attr_integrate(&type, DW_AT_type, &a) && dwarf_formref_die(&a, &elem)) {
          elem = peel(elem);
          int bs = dwarf_bytesize(&elem);
          if (bs > 0) mem.elem_size = static_cast<uint64_t>(bs);
        }
      }
    }
    out.members[name] = mem;
  } while (dwarf_siblingof(&m, &m) == 0);
}

using Structs = std::map<std::string, Struct>;

/// Reads the wanted structures from malloc.c's compilation unit. dwarf_begin
/// decompresses every debug section, about 90 ms for Debian's libc6-dbg file:
/// the result is cached (below).
// libdw decompresses every debug section it knows at dwarf_begin. The structures need
// .debug_info, .debug_abbrev and the string sections only: the others (line tables, location
// and range lists, about a third of the decompression) are marked SHT_NOBITS in a private
// copy of the section headers, which libdw skips.
Elf* open_for_types(int fd) {
  Elf* elf = elf_begin(fd, ELF_C_READ_MMAP_PRIVATE, nullptr);
  if (!elf) return nullptr;
  size_t shstrndx = 0;
  if (elf_getshdrstrndx(elf, &shstrndx) != 0) return elf;
  const char* unneeded[] = {".debug_line", ".debug_loclists", ".debug_rnglists", ".debug_aranges",
                            ".debug_loc",  ".debug_ranges",   ".debug_frame",    ".debug_macro"};
  for (Elf_Scn* scn = nullptr; (scn = elf_nextscn(elf, scn)) != nullptr;) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) continue;
    const char* name = elf_strptr(elf, shstrndx, sh.sh_name);
    if (!name) continue;
    for (const char* u : unneeded) {
      if (std::strcmp(name, u) == 0) {
        sh.sh_type = SHT_NOBITS;
        gelf_update_shdr(scn, &sh);
      }
    }
  }
  return elf;
}

bool structs_from_dwarf(int debug_fd, Structs& found, bool all_sections = false) {
  // The descriptor of the file whose build-id was checked, never its name again (which may by now
  // name another file).
  int fd = ::dup(debug_fd);
  if (fd < 0) return false;
  if (elf_version(EV_CURRENT) == EV_NONE) {
    ::close(fd);
    return false;
  }
  Elf* elf = all_sections ? nullptr : open_for_types(fd);
  Dwarf* dw = elf ? dwarf_begin_elf(elf, DWARF_C_READ, nullptr) : dwarf_begin(fd, DWARF_C_READ);
  if (!dw) {
    if (elf) elf_end(elf);
    ::close(fd);
    // Whatever went wrong with the trimmed sections, the whole file is the reference.
    return all_sections ? false : structs_from_dwarf(debug_fd, found, true);
  }
  const char* wanted[] = {"malloc_state", "malloc_par", "_heap_info", "tcache_perthread_struct", "tcache_entry"};
  Dwarf_Off off = 0, next = 0;
  size_t hsize = 0;
  bool seen_malloc = false;
  while (!seen_malloc && dwarf_nextcu(dw, off, &next, &hsize, nullptr, nullptr, nullptr) == 0) {
    Dwarf_Die cu;
    if (dwarf_offdie(dw, off + hsize, &cu)) {
      const char* name = dwarf_diename(&cu);
      size_t n = name ? std::strlen(name) : 0;
      if (n >= 8 && std::strcmp(name + n - 8, "malloc.c") == 0) {
        seen_malloc = true;
        Dwarf_Die d;
        if (dwarf_child(&cu, &d) == 0) {
          do {
            if (dwarf_tag(&d) != DW_TAG_structure_type) continue;
            const char* sn = dwarf_diename(&d);
            if (!sn) continue;
            for (const char* w : wanted)
              if (std::strcmp(sn, w) == 0 && !found.count(sn)) read_struct(&d, found[sn]);
          } while (dwarf_siblingof(&d, &d) == 0);
        }
      }
    }
    off = next;
  }
  dwarf_end(dw);
  if (elf) elf_end(elf);
  ::close(fd);
  if (found.count("malloc_state") && found.count("malloc_par")) return true;
  if (all_sections) return false;
  found.clear();
  return structs_from_dwarf(debug_fd, found, true);
}

// The cache: one small text file per debug file, named after its build-id and the SHA-256 of
// its bytes (its content, never its size or mtime: a planted file with the same build-id note
// gets its own entry), holding the structures read from DWARF. Its first line names the format
// and the full hash; any mismatch or unparsable line makes it a miss. The directory is used only
// when it is owned by the effective user and not writable by group or others; every access is
// relative to its descriptor; entries are created O_EXCL|O_NOFOLLOW under a fresh name and
// renamed into place, and read only when they are regular files of ours of bounded size.
constexpr const char* kCacheMagic = "heapwalk-dwarf-structs 2";
constexpr off_t kMaxEntry = 64 * 1024;

std::string cache_dir() {
  if (const char* off = std::getenv("HEAPWALK_NO_CACHE"); off && *off && std::strcmp(off, "0") != 0) return {};
  if (const char* d = std::getenv("HEAPWALK_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/heapwalk";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/heapwalk";
  return {};
}

bool valid_build_id(const std::string& id) {
  if (id.size() < 8 || id.size() > 128) return false;
  for (char c : id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

struct Cache {
  target::Fd dir;
  std::string path, name, stamp;  // directory, entry name, expected first line
  std::string refused;            // why the directory is not used
};

Cache open_cache(const target::ElfFile& debug, const std::string& build_id) {
  Cache c;
  c.path = cache_dir();
  if (c.path.empty() || !valid_build_id(build_id)) return c;
  for (size_t i = 1; i <= c.path.size(); ++i)  // mkdir -p; what exists is checked below
    if (i == c.path.size() || c.path[i] == '/') ::mkdir(c.path.substr(0, i).c_str(), 0700);
  target::Fd d(::open(c.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  struct stat st {};
  if (!d || ::fstat(d.get(), &st) != 0) {
    c.refused = "cannot open it";
  } else if (st.st_uid != ::geteuid()) {
    c.refused = "owned by uid " + std::to_string(st.st_uid) + ", not by uid " + std::to_string(::geteuid());
  } else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    c.refused = "writable by group or others";
  }
  if (!c.refused.empty()) return c;
  c.dir = std::move(d);
  std::string hash = sha256_hex(debug.bytes(), debug.size());
  c.name = build_id + "-" + hash.substr(0, 32) + ".dwarf-structs";
  c.stamp = std::string(kCacheMagic) + " " + build_id + " " + hash;
  return c;
}

bool load_cache(const Cache& c, Structs& out) {
  target::Fd fd(::openat(c.dir.get(), c.name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || st.st_size > kMaxEntry)
    return false;
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    ssize_t n = ::read(fd.get(), &text[got], text.size() - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  text.resize(got);
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != c.stamp) return false;
  Struct* cur = nullptr;
  size_t lines = 0;
  while (std::getline(in, line)) {
    if (++lines > 4096) return false;
    std::istringstream ls(line);
    std::string kind, name;
    uint64_t a = 0, b = 0;
    if (!(ls >> kind >> name >> a) || a > (1u << 20)) return false;  // offsets and sizes of small structs
    if (kind == "struct") {
      cur = &out[name];
      cur->size = a;
    } else if (kind == "member" && cur && (ls >> b) && b <= 64) {
      cur->members[name] = Member{a, b};
    } else {
      return false;
    }
  }
  return out.count("malloc_state") && out.count("malloc_par");
}

bool store_cache(const Cache& c, const Structs& s) {
  std::ostringstream out;
  out << c.stamp << "\n";
  for (const auto& [name, st] : s) {
    out << "struct " << name << " " << st.size << "\n";
    for (const auto& [m, mem] : st.members) out << "member " << m << " " << mem.offset << " " << mem.elem_size << "\n";
  }
  return target::write_new_file(c.dir.get(), c.name, out.str());
}

}  // namespace

bool layout_from_dwarf(const target::ElfFile& debug, const std::string& build_id, Layout& l,
                       std::vector<std::string>& changed, std::string* cache_state, std::vector<std::string>* notes,
                       bool read_cache) {
  Structs found;
  Cache c = open_cache(debug, build_id);
  if (!c.refused.empty() && notes)
    notes->push_back("layout cache directory " + c.path + " " + c.refused + "; not using the cache");
  if (cache_state) *cache_state = c.dir ? "miss" : "off";
  if (c.dir && read_cache && load_cache(c, found)) {
    if (cache_state) *cache_state = "hit " + c.path + "/" + c.name;
  } else {
    found.clear();
    if (!structs_from_dwarf(debug.fd(), found)) return false;
    if (c.dir && store_cache(c, found) && cache_state) *cache_state = "stored " + c.path + "/" + c.name;
  }

  auto set = [&](uint64_t& field, const char* label, const Struct& s, const char* member) {
    auto it = s.members.find(member);
    if (it == s.members.end()) return;
    if (field != it->second.offset) changed.push_back(label);
    field = it->second.offset;
  };
  auto set_size = [&](uint64_t& field, const char* label, const Struct& s) {
    if (!s.size) return;
    if (field != s.size) changed.push_back(label);
    field = s.size;
  };
  const Struct& ms = found["malloc_state"];
  set_size(l.ms_size, "malloc_state size", ms);
  set(l.ms_fastbins, "malloc_state.fastbinsY", ms, "fastbinsY");
  set(l.ms_top, "malloc_state.top", ms, "top");
  set(l.ms_last_remainder, "malloc_state.last_remainder", ms, "last_remainder");
  set(l.ms_bins, "malloc_state.bins", ms, "bins");
  set(l.ms_next, "malloc_state.next", ms, "next");
  set(l.ms_next_free, "malloc_state.next_free", ms, "next_free");
  set(l.ms_attached_threads, "malloc_state.attached_threads", ms, "attached_threads");
  set(l.ms_system_mem, "malloc_state.system_mem", ms, "system_mem");
  set(l.ms_max_system_mem, "malloc_state.max_system_mem", ms, "max_system_mem");
  const Struct& mp = found["malloc_par"];
  set_size(l.mp_size, "malloc_par size", mp);
  set(l.mp_trim_threshold, "malloc_par.trim_threshold", mp, "trim_threshold");
  set(l.mp_top_pad, "malloc_par.top_pad", mp, "top_pad");
  set(l.mp_mmap_threshold, "malloc_par.mmap_threshold", mp, "mmap_threshold");
  set(l.mp_arena_test, "malloc_par.arena_test", mp, "arena_test");
  set(l.mp_arena_max, "malloc_par.arena_max", mp, "arena_max");
  set(l.mp_n_mmaps, "malloc_par.n_mmaps", mp, "n_mmaps");
  set(l.mp_n_mmaps_max, "malloc_par.n_mmaps_max", mp, "n_mmaps_max");
  set(l.mp_max_n_mmaps, "malloc_par.max_n_mmaps", mp, "max_n_mmaps");
  set(l.mp_no_dyn_threshold, "malloc_par.no_dyn_threshold", mp, "no_dyn_threshold");
  set(l.mp_mmapped_mem, "malloc_par.mmapped_mem", mp, "mmapped_mem");
  set(l.mp_max_mmapped_mem, "malloc_par.max_mmapped_mem", mp, "max_mmapped_mem");
  set(l.mp_sbrk_base, "malloc_par.sbrk_base", mp, "sbrk_base");
  set(l.mp_tcache_bins, "malloc_par.tcache_bins", mp, "tcache_bins");
  set(l.mp_tcache_bins, "malloc_par.tcache_small_bins", mp,
      "tcache_small_bins");  // 2.42+
  set(l.mp_tcache_max_bytes, "malloc_par.tcache_max_bytes", mp, "tcache_max_bytes");
  set(l.mp_tcache_count, "malloc_par.tcache_count", mp, "tcache_count");
  if (found.count("_heap_info")) {
    const Struct& hi = found["_heap_info"];
    set_size(l.hi_size, "heap_info size", hi);
    set(l.hi_ar_ptr, "heap_info.ar_ptr", hi, "ar_ptr");
    set(l.hi_prev, "heap_info.prev", hi, "prev");
    set(l.hi_heap_size, "heap_info.size", hi, "size");
    set(l.hi_mprotect_size, "heap_info.mprotect_size", hi, "mprotect_size");
  }
  if (found.count("tcache_perthread_struct")) {
    const Struct& tc = found["tcache_perthread_struct"];
    set_size(l.tc_size, "tcache_perthread_struct size", tc);
    l.tc_chunk_size = (l.tc_size + l.size_sz + l.alignment - 1) & ~(l.alignment - 1);
    set(l.tc_entries, "tcache_perthread_struct.entries", tc, "entries");
    auto c = tc.members.find("counts");
    if (c == tc.members.end()) c = tc.members.find("num_slots");  // 2.42+
    if (c != tc.members.end()) {
      if (l.tc_counts != c->second.offset) changed.push_back("tcache_perthread_struct.counts");
      l.tc_counts = c->second.offset;
      if (c->second.elem_size && c->second.elem_size != l.tcache_count_width) {
        changed.push_back("tcache counts width");
        l.tcache_count_width = static_cast<unsigned>(c->second.elem_size);
      }
    }
  }
  if (found.count("tcache_entry")) {
    const Struct& te = found["tcache_entry"];
    set(l.te_next, "tcache_entry.next", te, "next");
    set(l.te_key, "tcache_entry.key", te, "key");
  }
  return true;
}

void drop_cached_layout(const target::ElfFile& debug, const std::string& build_id) {
  Cache c = open_cache(debug, build_id);
  if (c.dir) ::unlinkat(c.dir.get(), c.name.c_str(), 0);
}

}  // namespace heapwalk::ptmalloc
