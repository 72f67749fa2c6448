// Paths named inside a core stay under the sysroot (resolve_under), and whatever they name is
// only ever parsed as ELF, without blocking (ElfFile::open).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "target/elf_file.h"

using heapwalk::target::ElfFile;
using heapwalk::target::resolve_under;

namespace {

struct TempRoot {
  std::string dir;
  TempRoot() {
    char tmpl[] = "/tmp/heapwalk-sysroot-XXXXXX";
    dir = ::mkdtemp(tmpl);
    ::mkdir((dir + "/root").c_str(), 0755);
    ::mkdir((dir + "/root/lib").c_str(), 0755);
    ::mkdir((dir + "/outside").c_str(), 0755);
    std::ofstream(dir + "/outside/secret") << "secret\n";
    std::ofstream(dir + "/root/lib/inside.so") << "not elf\n";
  }
  ~TempRoot() { std::system(("rm -rf '" + dir + "'").c_str()); }
  std::string root() const { return dir + "/root"; }
};

}  // namespace

TEST(Sysroot, DotDotCannotLeave) {
  TempRoot t;
  EXPECT_EQ(resolve_under(t.root(), "/../outside/secret"), "");
  EXPECT_EQ(resolve_under(t.root(), "/lib/../../outside/secret"), "");
  EXPECT_EQ(resolve_under(t.root(), "../outside/secret"), "");
  EXPECT_EQ(resolve_under(t.root(), "/../../../../../../etc/passwd"), "");
  // Spelling the sysroot itself and then climbing out is no way out either.
  EXPECT_EQ(resolve_under(t.root(), t.root() + "/../outside/secret"), "");
}

TEST(Sysroot, SymlinksCannotLeave) {
  TempRoot t;
  ASSERT_EQ(::symlink((t.dir + "/outside/secret").c_str(), (t.root() + "/lib/abs").c_str()), 0);
  ASSERT_EQ(::symlink("../../outside/secret", (t.root() + "/lib/rel").c_str()), 0);
  ASSERT_EQ(::symlink(t.dir.c_str(), (t.root() + "/up").c_str()), 0);
  EXPECT_EQ(resolve_under(t.root(), "/lib/abs"), "");
  EXPECT_EQ(resolve_under(t.root(), "/lib/rel"), "");
  EXPECT_EQ(resolve_under(t.root(), "/up/outside/secret"), "");
  // A sibling whose name starts with the sysroot's is outside too.
  ::mkdir((t.dir + "/root2").c_str(), 0755);
  std::ofstream(t.dir + "/root2/x") << "x\n";
  ASSERT_EQ(::symlink((t.dir + "/root2/x").c_str(), (t.root() + "/lib/sib").c_str()), 0);
  EXPECT_EQ(resolve_under(t.root(), "/lib/sib"), "");
}

TEST(Sysroot, InsideIsResolved) {
  TempRoot t;
  char real[4096];
  ASSERT_NE(::realpath(t.root().c_str(), real), nullptr);
  std::string r(real);
  EXPECT_EQ(resolve_under(t.root(), "/lib/inside.so"), r + "/lib/inside.so");
  EXPECT_EQ(resolve_under(t.root(), "/lib/../lib/inside.so"), r + "/lib/inside.so");
  ASSERT_EQ(::symlink("inside.so", (t.root() + "/lib/link.so").c_str()), 0);
  EXPECT_EQ(resolve_under(t.root(), "/lib/link.so"), r + "/lib/inside.so");
  EXPECT_EQ(resolve_under(t.root(), "/lib/missing.so"), "");
}

TEST(ElfFileOpen, OnlyRegularElfFiles) {
  TempRoot t;
  EXPECT_EQ(ElfFile::open(t.root() + "/lib/inside.so"), nullptr);  // text
  EXPECT_EQ(ElfFile::open(t.root() + "/lib"), nullptr);            // directory
  EXPECT_EQ(ElfFile::open("/dev/zero"), nullptr);                  // device
  EXPECT_EQ(ElfFile::open(""), nullptr);
  std::string fifo = t.root() + "/lib/fifo.so";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  EXPECT_EQ(ElfFile::open(fifo), nullptr);  // must not block waiting for a writer
  std::ofstream(t.root() + "/lib/short.so") << "\x7f"
                                               "ELF\x02\x01\x01";
  EXPECT_EQ(ElfFile::open(t.root() + "/lib/short.so"), nullptr);
}
