#include "target/target.h"

#include <elf.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "memory/capture.h"
#include "memory/core_file.h"
#include "memory/live_process.h"

namespace heapwalk::target {

namespace {

std::string basename_of(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? p : p.substr(s + 1);
}

// Reads the build-id note of an ELF image mapped at `base` in the target, "" if unreadable.
std::string image_build_id(memory::MemorySource& mem, uint64_t base) {
  std::vector<Elf64_Phdr> ph = image_program_headers(mem, base);
  uint64_t first = 0;
  bool have = false;
  for (auto& p : ph)
    if (p.p_type == PT_LOAD && !have) {
      first = p.p_vaddr;
      have = true;
    }
  for (auto& p : ph) {
    if (p.p_type != PT_NOTE || p.p_memsz > 4096) continue;
    std::vector<uint8_t> buf(p.p_memsz);
    if (mem.read(base - first + p.p_vaddr, buf.data(), buf.size()) != buf.size()) continue;
    std::string id = build_id_from_notes(buf.data(), buf.size());
    if (!id.empty()) return id;
  }
  return "";
}

Thread from_core_thread(const memory::CoreThread& ct) {
  Thread th;
  th.lwp = ct.lwp;
  th.fs_base = ct.fs_base;
  th.rsp = ct.rsp;
  th.regs = ct.regs;
  th.has_regs = ct.has_regs;
  return th;
}

}  // namespace

std::vector<Elf64_Phdr> image_program_headers(memory::MemorySource& mem, uint64_t base) {
  Elf64_Ehdr eh;
  if (mem.read(base, &eh, sizeof eh) != sizeof eh || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum > 64)
    return {};
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  size_t n = ph.size() * sizeof(Elf64_Phdr);
  if (mem.read(base + eh.e_phoff, ph.data(), n) != n) return {};
  return ph;
}

std::unique_ptr<Target> Target::open_core(const std::string& path, const std::string& sysroot) {
  auto core = std::make_unique<memory::CoreFile>(path);
  auto t = std::unique_ptr<Target>(new Target());
  t->kind_ = Kind::Core;
  t->path_ = path;
  t->set_sysroot(sysroot);
  t->pid_ = core->pid();
  for (const auto& ct : core->threads()) t->threads_.push_back(from_core_thread(ct));
  t->diags_.append(core->diagnostics());
  t->mem_ = std::move(core);
  t->modules_from_regions();
  return t;
}

std::unique_ptr<Target> Target::attach(int pid, std::vector<Thread> threads, const std::string& sysroot) {
  bool freeze = threads.empty();
  auto live = std::make_unique<memory::LiveProcess>(pid, freeze);
  auto t = std::unique_ptr<Target>(new Target());
  t->kind_ = Kind::Live;
  t->pid_ = pid;
  t->set_sysroot(sysroot);
  t->path_ = "/proc/" + std::to_string(pid);
  if (freeze) {
    for (const auto& ct : live->threads()) t->threads_.push_back(from_core_thread(ct));
  } else {
    t->threads_ = std::move(threads);
  }
  t->mem_ = std::move(live);
  t->modules_from_regions();
  return t;
}

std::unique_ptr<Target> Target::open_live(int pid, const std::string& sysroot) {
  auto t = std::unique_ptr<Target>(new Target());
  t->kind_ = Kind::Live;
  t->pid_ = pid;
  t->set_sysroot(sysroot);
  t->path_ = "/proc/" + std::to_string(pid);
  t->mem_ = std::make_unique<memory::LiveProcess>(pid, false);
  t->modules_from_regions();
  return t;
}

std::unique_ptr<Target> Target::capture(int pid, std::vector<Thread> threads, const std::string& sysroot,
                                        memory::CaptureOptions opt) {
  opt.freeze = threads.empty();
  for (const auto& th : threads) {
    memory::CoreThread ct;
    ct.lwp = th.lwp;
    ct.fs_base = th.fs_base;
    ct.rsp = th.rsp;
    ct.regs = th.regs;
    ct.has_regs = th.has_regs;
    opt.threads.push_back(ct);
  }
  auto cap = memory::CapturedProcess::capture(pid, opt);
  auto t = std::unique_ptr<Target>(new Target());
  t->kind_ = Kind::Live;
  t->pid_ = pid;
  t->set_sysroot(sysroot);
  t->path_ = "/proc/" + std::to_string(pid);
  if (threads.empty()) {
    for (const auto& ct : cap->threads()) t->threads_.push_back(from_core_thread(ct));
  } else {
    t->threads_ = std::move(threads);
  }
  t->diags_.append(cap->core().diagnostics());
  for (const auto& n : cap->stats().notes) t->diags_.note(n);
  t->mem_ = std::move(cap);
  t->modules_from_regions();
  return t;
}

const memory::CaptureStats* Target::capture_stats() const {
  if (auto* c = dynamic_cast<const memory::CapturedProcess*>(mem_.get())) return &c->stats();
  return nullptr;
}

std::unique_ptr<Target> Target::from_callback(memory::CallbackSource::ReadFn fn, std::vector<Thread> threads) {
  auto t = std::unique_ptr<Target>(new Target());
  t->kind_ = Kind::Callback;
  t->threads_ = std::move(threads);
  t->mem_ = std::make_unique<memory::CallbackSource>(std::move(fn));
  return t;
}

std::unique_ptr<Target> Target::from_source(std::unique_ptr<memory::MemorySource> src, std::vector<Module> modules,
                                            std::vector<Thread> threads) {
  auto t = std::unique_ptr<Target>(new Target());
  t->kind_ = Kind::Buffer;
  t->mem_ = std::move(src);
  t->modules_ = std::move(modules);
  t->threads_ = std::move(threads);
  return t;
}

void Target::close() {
  if (auto* live = dynamic_cast<memory::LiveProcess*>(mem_.get())) live->release();
}

void Target::modules_from_regions() {
  std::map<std::string, Module> by_path;
  for (const auto& r : mem_->regions()) {
    if (r.path.empty() || r.path[0] != '/') continue;
    auto [it, fresh] = by_path.try_emplace(r.path);
    Module& m = it->second;
    if (fresh) {
      m.path = r.path;
      m.base = r.start - std::min(r.start, r.file_offset);
      m.end = r.end;
    } else {
      if (r.file_offset == 0 || r.start - std::min(r.start, r.file_offset) < m.base)
        m.base = std::min(m.base, r.start - std::min(r.start, r.file_offset));
      m.end = std::max(m.end, r.end);
    }
  }
  for (auto& [p, m] : by_path) {
    m.build_id = image_build_id(*mem_, m.base);
    modules_.push_back(std::move(m));
  }
  std::sort(modules_.begin(), modules_.end(), [](const Module& a, const Module& b) { return a.base < b.base; });
}

const Module* Target::find_module(const std::function<bool(const std::string&)>& match) const {
  for (const auto& m : modules_)
    if (match(basename_of(m.path))) return &m;
  return nullptr;
}

void Target::set_sysroot(const std::string& sysroot) {
  sysroot_ = sysroot;
  root_ = std::make_shared<Root>(sysroot);
  if (!root_->error().empty()) diags_.add("symbols", std::nullopt, std::nullopt, root_->error() + "; no file is used");
}

std::unique_ptr<ElfFile> Target::module_file(const Module& m, bool quiet) {
  if (overrides_.no_files) return nullptr;
  std::string why;
  auto f = ElfFile::open(*root_, m.path, &why);
  if (!f) {
    if (!quiet) {
      std::string where = root_->display(m.path);
      if (why == std::strerror(ENOENT))
        diags_.add("symbols", m.base, std::nullopt,
                   m.path + ": file not found" + (sysroot_.empty() ? "" : " under sysroot " + sysroot_));
      else
        diags_.note(where + ": " + why + "; not used");
    }
    return nullptr;
  }
  if (m.build_id.empty()) {
    if (!quiet)
      diags_.note(f->path() + ": the image shows no build-id for " + m.path +
                  " to check this file against; not using it");
    return nullptr;
  }
  if (f->build_id() != m.build_id) {
    if (!quiet)
      diags_.add("symbols", m.base, std::nullopt,
                 f->path() + ": build-id " + (f->build_id().empty() ? "(none)" : f->build_id()) +
                     " does not match the image's " + m.build_id + "; not using it");
    return nullptr;
  }
  return f;
}

std::unique_ptr<ElfFile> Target::debug_file(const std::string& build_id) {
  if (overrides_.no_files) return nullptr;
  if (build_id.size() < 4) return nullptr;
  for (char c : build_id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return nullptr;
  std::string rel = "/usr/lib/debug/.build-id/" + build_id.substr(0, 2) + "/" + build_id.substr(2) + ".debug";
  static const Root host("");
  std::vector<const Root*> roots;
  if (!root_->host()) roots.push_back(root_.get());
  roots.push_back(&host);
  for (const Root* r : roots) {
    std::string why;
    auto f = ElfFile::open(*r, rel, &why);
    auto note_once = [&](const std::string& text) {
      for (const auto& d : diags_.items())
        if (d.detail == text) return;
      diags_.note(text);
    };
    if (!f) {
      if (why != std::strerror(ENOENT)) note_once(r->display(rel) + ": " + why + "; not used");
      continue;
    }
    if (f->build_id() == build_id) return f;
    note_once(f->path() +
              (f->build_id().empty() ? ": debug file without a build-id note"
                                     : ": debug file with build-id " + f->build_id()) +
              ", not " + build_id + "; not using it");
  }
  return nullptr;
}

size_t Target::read_file_backed(uint64_t addr, void* out, size_t len) {
  if (overrides_.no_files || len == 0) return 0;
  const memory::Region* reg = nullptr;
  for (const auto& r : mem_->regions())
    if (r.contains(addr)) {
      reg = &r;
      break;
    }
  if (!reg || reg->path.empty() || reg->path[0] != '/') return 0;
  std::shared_ptr<ElfFile> f;
  {
    std::lock_guard<std::mutex> lock(files_mu_);
    auto it = verified_.find(reg->path);
    if (it == verified_.end()) {
      const Module* mod = nullptr;
      for (const auto& m : modules_)
        if (m.path == reg->path) mod = &m;
      std::unique_ptr<ElfFile> got;
      if (mod) got = module_file(*mod, /*quiet=*/true);
      if (!got) {
        std::string why = !mod                    ? "no module"
                          : mod->build_id.empty() ? "the image shows no build-id to check it against"
                                                  : "no file with build-id " + mod->build_id;
        diags_.note(reg->path + ": memory the core did not save is not read from the file (" + why +
                    "); those bytes are unavailable");
      }
      it = verified_.emplace(reg->path, std::shared_ptr<ElfFile>(std::move(got))).first;
    }
    f = it->second;
  }
  if (!f) return 0;
  size_t want = static_cast<size_t>(std::min<uint64_t>(len, reg->end - addr));
  return f->read_at(reg->file_offset + (addr - reg->start), out, want);
}

}  // namespace heapwalk::target
