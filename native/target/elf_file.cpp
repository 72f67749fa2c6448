#include "target/elf_file.h"

#include <elf.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "util/sigbus_guard.h"

namespace heapwalk::target {

std::string build_id_from_notes(const uint8_t* p, size_t n) {
  size_t off = 0;
  while (off + sizeof(Elf64_Nhdr) <= n) {
    Elf64_Nhdr nh;
    std::memcpy(&nh, p + off, sizeof nh);
    size_t name_off = off + sizeof nh;
    size_t desc_off = name_off + ((nh.n_namesz + 3u) & ~3u);
    if (desc_off > n || nh.n_descsz > n - desc_off) return "";
    if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(p + name_off, "GNU", 4) == 0) {
      static const char* digits = "0123456789abcdef";
      std::string s;
      for (size_t i = 0; i < nh.n_descsz && i < 64; ++i) {
        s += digits[p[desc_off + i] >> 4];
        s += digits[p[desc_off + i] & 15];
      }
      return s;
    }
    off = desc_off + ((nh.n_descsz + 3u) & ~3u);
  }
  return "";
}

std::unique_ptr<ElfFile> ElfFile::open(const std::string& path, std::string* why) {
  static const Root host("");
  return open(host, path, why);
}

std::unique_ptr<ElfFile> ElfFile::open(const Root& root, const std::string& path, std::string* why) {
  if (path.empty()) {
    if (why) *why = "no file name";
    return nullptr;
  }
  Fd fd = root.open_regular(path, why);
  if (!fd) return nullptr;
  return from_fd(std::move(fd), root.display(path), why);
}

std::unique_ptr<ElfFile> ElfFile::from_fd(Fd fd, const std::string& name, std::string* why) {
  static const bool inited = elf_version(EV_CURRENT) != EV_NONE;
  auto fail = [&](const char* w) -> std::unique_ptr<ElfFile> {
    if (why) *why = w;
    return nullptr;
  };
  if (!inited || !fd) return fail("cannot open");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return fail("not a regular file");
  if (st.st_size < 64) return fail("not an ELF file");
  std::unique_ptr<ElfFile> f(new ElfFile());
  f->path_ = name;
  f->fd_ = fd.release();
  f->size_ = static_cast<size_t>(st.st_size);
  void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, f->fd_, 0);
  if (m == MAP_FAILED) return fail("cannot map");
  f->map_ = static_cast<const uint8_t*>(m);
  util::guard_mapping(f->map_, f->size_, name);  // a library replaced while mapped: zeros, not SIGBUS
  if (std::memcmp(f->map_, ELFMAG, SELFMAG) != 0) return fail("not an ELF file");
  Elf* e = elf_memory(reinterpret_cast<char*>(const_cast<uint8_t*>(f->map_)), f->size_);
  if (!e || elf_kind(e) != ELF_K_ELF || gelf_getclass(e) != ELFCLASS64) {
    if (e) elf_end(e);
    return fail("not a 64-bit ELF file");
  }
  f->elf_ = e;
  f->load();
  return f;
}

ElfFile::~ElfFile() {
  if (elf_) elf_end(static_cast<Elf*>(elf_));
  if (map_) {
    util::unguard_mapping(map_);
    ::munmap(const_cast<uint8_t*>(map_), size_);
  }
  if (fd_ >= 0) ::close(fd_);
}

void ElfFile::load() {
  Elf* e = static_cast<Elf*>(elf_);
  size_t phnum = 0;
  bool have_first = false;
  if (elf_getphdrnum(e, &phnum) == 0) {
    for (size_t i = 0; i < phnum; ++i) {
      GElf_Phdr ph;
      if (!gelf_getphdr(e, static_cast<int>(i), &ph)) continue;
      if (ph.p_type == PT_LOAD && !have_first) {
        first_load_ = ph.p_vaddr;
        have_first = true;
      }
      if (ph.p_type == PT_NOTE && build_id_.empty() && ph.p_offset < size_ && ph.p_filesz <= size_ - ph.p_offset) {
        build_id_ = build_id_from_notes(map_ + ph.p_offset, ph.p_filesz);
      }
    }
  }
  size_t shstrndx = 0;
  if (elf_getshdrstrndx(e, &shstrndx) != 0) return;
  Elf_Scn* scn = nullptr;
  // First pass: symbol tables (.dynsym then .symtab; .symtab wins for duplicates).
  std::vector<std::pair<Elf_Scn*, GElf_Shdr>> symtabs;
  while ((scn = elf_nextscn(e, scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) continue;
    if (sh.sh_type == SHT_DYNSYM || sh.sh_type == SHT_SYMTAB) symtabs.emplace_back(scn, sh);
    if (sh.sh_type == SHT_SYMTAB) has_symtab_ = true;
    if (sh.sh_type == SHT_NOTE && build_id_.empty() && sh.sh_offset < size_ && sh.sh_size <= size_ - sh.sh_offset)
      build_id_ = build_id_from_notes(map_ + sh.sh_offset, sh.sh_size);
  }
  std::vector<Symbol> dynsyms;  // by index, for relocations
  for (auto& [s, sh] : symtabs) {
    Elf_Data* data = elf_getdata(s, nullptr);
    if (!data || sh.sh_entsize == 0) continue;
    size_t n = sh.sh_size / sh.sh_entsize;
    if (sh.sh_type == SHT_DYNSYM) dynsyms.resize(n);
    for (size_t i = 0; i < n; ++i) {
      GElf_Sym sym;
      if (!gelf_getsym(data, static_cast<int>(i), &sym)) break;
      Symbol v{sym.st_value, sym.st_size, GELF_ST_TYPE(sym.st_info) == STT_TLS};
      if (sh.sh_type == SHT_DYNSYM) dynsyms[i] = v;
      if (sym.st_name == 0 || sym.st_shndx == SHN_UNDEF) continue;
      const char* name = elf_strptr(e, sh.sh_link, sym.st_name);
      if (!name) continue;
      std::string key(name);
      size_t at = key.find('@');
      if (at != std::string::npos) key.resize(at);
      if (sh.sh_type == SHT_SYMTAB || symbols_.find(key) == symbols_.end()) symbols_[key] = v;
    }
  }
  // Second pass: TPOFF64 relocations and version definitions.
  scn = nullptr;
  while ((scn = elf_nextscn(e, scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh)) continue;
    if (sh.sh_type == SHT_RELA) {
      Elf_Data* data = elf_getdata(scn, nullptr);
      if (!data || sh.sh_entsize == 0) continue;
      size_t n = sh.sh_size / sh.sh_entsize;
      for (size_t i = 0; i < n; ++i) {
        GElf_Rela r;
        if (!gelf_getrela(data, static_cast<int>(i), &r)) break;
        if (GELF_R_TYPE(r.r_info) != R_X86_64_TPOFF64) continue;
        size_t si = GELF_R_SYM(r.r_info);
        uint64_t v = static_cast<uint64_t>(r.r_addend);
        if (si != 0) {
          if (si >= dynsyms.size()) continue;
          v += dynsyms[si].value;
        }
        tls_relocs_.push_back({r.r_offset, v});
      }
    } else if (sh.sh_type == SHT_GNU_verdef) {
      Elf_Data* data = elf_getdata(scn, nullptr);
      if (!data) continue;
      size_t off = 0;
      int best_minor = -1;
      for (size_t k = 0; k < sh.sh_info && k < 4096; ++k) {
        GElf_Verdef vd;
        if (!gelf_getverdef(data, static_cast<int>(off), &vd)) break;
        GElf_Verdaux va;
        if (gelf_getverdaux(data, static_cast<int>(off + vd.vd_aux), &va)) {
          const char* name = elf_strptr(e, sh.sh_link, va.vda_name);
          int major = 0, minor = 0;
          if (name && std::sscanf(name, "GLIBC_%d.%d", &major, &minor) == 2 && major == 2 && minor > best_minor) {
            best_minor = minor;
            glibc_verdef_ = "2." + std::to_string(minor);
          }
        }
        if (vd.vd_next == 0) break;
        off += vd.vd_next;
      }
    }
  }
}

std::optional<Symbol> ElfFile::symbol(const std::string& name) const {
  auto it = symbols_.find(name);
  if (it == symbols_.end()) return std::nullopt;
  return it->second;
}

size_t ElfFile::read_at(uint64_t offset, void* out, size_t len) const {
  if (offset >= size_) return 0;
  size_t n = static_cast<size_t>(std::min<uint64_t>(len, size_ - offset));
  std::memcpy(out, map_ + offset, n);
  return n;
}

std::string ElfFile::find_text(const std::string& needle) const {
  if (needle.empty() || size_ < needle.size()) return "";
  const void* hit = ::memmem(map_, size_, needle.data(), needle.size());
  if (!hit) return "";
  const auto* p = static_cast<const uint8_t*>(hit);
  size_t rem = size_ - static_cast<size_t>(p - map_);
  size_t n = 0;
  while (n < rem && n < 256 && p[n] != 0 && p[n] != '\n') ++n;
  return std::string(reinterpret_cast<const char*>(p), n);
}

}  // namespace heapwalk::target
