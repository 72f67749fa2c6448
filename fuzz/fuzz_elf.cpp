// libFuzzer target: ELF files read from disk (ElfFile: program headers, notes, symbol tables,
// TPOFF64 relocations, version definitions) and the note parser on its own.
#include <cstdint>

#include "fuzz_common.h"
#include "target/elf_file.h"

using namespace heapwalk;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint64_t sum = target::build_id_from_notes(data, size).size();
  auto f = target::ElfFile::open(fuzz::as_file(data, size));
  if (!f) return 0;
  sum += f->build_id().size() + f->first_load_vaddr() + f->has_symtab();
  for (const char* s : {"main_arena", "mp_", "tcache", "__libc_version", "_dl_phdr"})
    if (auto sym = f->symbol(s)) sum += sym->value + sym->size;
  for (const auto& r : f->tls_relocs()) sum += r.offset + r.tls_value;
  sum += f->symbols().size() + f->glibc_verdef().size();
  sum += f->find_text("GNU C Library").size();
  uint8_t buf[32];
  sum += f->read_at(0, buf, sizeof buf) + f->read_at(size - 1, buf, sizeof buf);
  return sum == 1 ? 1 : 0;
}
