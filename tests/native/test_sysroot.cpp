// Paths named inside a core stay under the sysroot (resolve_under), and whatever they name is
// only ever parsed as ELF, without blocking (ElfFile::open).
// Paths named inside a core stay inside the sysroot (Root: openat2 RESOLVE_IN_ROOT, or the
// component-wise walk), only regular files are opened, and whatever they name is only ever parsed
// as ELF, without blocking (ElfFile::open). The layout cache's files are created without following
// anything planted (write_new_file).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "target/elf_file.h"
#include "target/safe_open.h"

using heapwalk::target::ElfFile;
using heapwalk::target::Root;

namespace {

struct TempRoot {
  std::string dir;
  TempRoot() {
    char tmpl[] = "/tmp/heapwalk-sysroot-XXXXXX";
    dir = ::mkdtemp(tmpl);
    ::mkdir((dir + "/root").c_str(), 0755);
    ::mkdir((dir + "/root/lib").c_str(), 0755);
    ::mkdir((dir + "/root/usr").c_str(), 0755);
    ::mkdir((dir + "/root/usr/lib").c_str(), 0755);
    ::mkdir((dir + "/outside").c_str(), 0755);
    std::ofstream(dir + "/outside/secret") << "secret\n";
    std::ofstream(dir + "/root/lib/inside.so") << "not elf\n";
    std::ofstream(dir + "/root/usr/lib/real.so") << "real\n";
  }
  ~TempRoot() { std::system(("rm -rf '" + dir + "'").c_str()); }
  std::string root() const { return dir + "/root"; }
};

// The contents of what `path` opens under `root`, or "" when refused.
std::string contents(const Root& root, const std::string& path) {
  auto fd = root.open_regular(path, nullptr);
  if (!fd) return "";
  std::string s(256, '\0');
  ssize_t n = ::pread(fd.get(), &s[0], s.size(), 0);
  s.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return s;
}

class Resolution : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { Root::force_walk(GetParam()); }
  void TearDown() override { Root::force_walk(false); }
};

}  // namespace

TEST_P(Resolution, DotDotCannotLeave) {
  TempRoot t;
  Root r(t.root());
  EXPECT_EQ(contents(r, "/../outside/secret"), "");
  EXPECT_EQ(contents(r, "/lib/../../outside/secret"), "");
  EXPECT_EQ(contents(r, "../outside/secret"), "");
  EXPECT_EQ(contents(r, "/../../../../../../etc/passwd"), "");
  // Spelling the sysroot itself and then climbing out is no way out either.
  EXPECT_EQ(contents(r, t.root() + "/../outside/secret"), "");
}

TEST_P(Resolution, SymlinksCannotLeave) {
  TempRoot t;
  Root r(t.root());
  ASSERT_EQ(::symlink((t.dir + "/outside/secret").c_str(), (t.root() + "/lib/abs").c_str()), 0);
  ASSERT_EQ(::symlink("../../outside/secret", (t.root() + "/lib/rel").c_str()), 0);
  ASSERT_EQ(::symlink(t.dir.c_str(), (t.root() + "/up").c_str()), 0);
  ASSERT_EQ(::symlink("/proc/self/root/etc/passwd", (t.root() + "/lib/magic").c_str()), 0);
  EXPECT_EQ(contents(r, "/lib/abs"), "");
  EXPECT_EQ(contents(r, "/lib/rel"), "");
  EXPECT_EQ(contents(r, "/up/outside/secret"), "");
  EXPECT_EQ(contents(r, "/lib/magic"), "");
  // A sibling whose name starts with the sysroot's is outside too.
  ::mkdir((t.dir + "/root2").c_str(), 0755);
  std::ofstream(t.dir + "/root2/x") << "x\n";
  ASSERT_EQ(::symlink((t.dir + "/root2/x").c_str(), (t.root() + "/lib/sib").c_str()), 0);
  EXPECT_EQ(contents(r, "/lib/sib"), "");
}

TEST_P(Resolution, InsideIsResolved) {
  TempRoot t;
  Root r(t.root());
  EXPECT_EQ(contents(r, "/lib/inside.so"), "not elf\n");
  EXPECT_EQ(contents(r, "/lib/../lib/inside.so"), "not elf\n");
  ASSERT_EQ(::symlink("inside.so", (t.root() + "/lib/link.so").c_str()), 0);
  EXPECT_EQ(contents(r, "/lib/link.so"), "not elf\n");
  // An absolute symlink inside the root means the root's file (libc.so.6 -> /usr/lib/...).
  ASSERT_EQ(::symlink("/usr/lib/real.so", (t.root() + "/lib/abs.so").c_str()), 0);
  EXPECT_EQ(contents(r, "/lib/abs.so"), "real\n");
  ASSERT_EQ(::symlink("/usr", (t.root() + "/u").c_str()), 0);
  EXPECT_EQ(contents(r, "/u/lib/../lib/real.so"), "real\n");
  EXPECT_EQ(contents(r, "/lib/missing.so"), "");
  // A core made on the host names the file by its host path under the sysroot.
  EXPECT_EQ(contents(r, t.root() + "/lib/inside.so"), "not elf\n");
  EXPECT_EQ(r.display("/lib/x.so"), t.root() + "/lib/x.so");
}

TEST_P(Resolution, DevicesAndFifosAreRefusedUnopened) {
  TempRoot t;
  Root r(t.root());
  ASSERT_EQ(::mkfifo((t.root() + "/lib/fifo.so").c_str(), 0644), 0);
  ASSERT_EQ(::symlink("/dev/zero", (t.root() + "/lib/zero.so").c_str()), 0);  // in-root: no /dev here
  std::string why;
  EXPECT_FALSE(r.open_regular("/lib/fifo.so", &why));
  EXPECT_NE(why.find("FIFO"), std::string::npos) << why;
  EXPECT_FALSE(r.open_regular("/lib", &why));
  EXPECT_NE(why.find("directory"), std::string::npos) << why;
  EXPECT_FALSE(r.open_regular("/lib/zero.so", &why));
  Root host("");
  EXPECT_FALSE(host.open_regular("/dev/zero", &why));
  EXPECT_NE(why.find("device"), std::string::npos) << why;
  EXPECT_FALSE(host.open_regular("/dev/ptmx", &why));  // O_PATH: no pty is allocated
  EXPECT_FALSE(host.open_regular(t.root() + "/lib/fifo.so", &why));
  EXPECT_FALSE(host.open_regular(t.root() + "/lib/inside.so", &why, 4));
  EXPECT_NE(why.find("larger"), std::string::npos) << why;
}

INSTANTIATE_TEST_SUITE_P(OpenatAndWalk, Resolution, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "walk" : "openat2"; });

TEST(Sysroot, MissingSysrootOpensNothing) {
  Root r("/nonexistent/heapwalk-sysroot");
  EXPECT_FALSE(r.error().empty());
  EXPECT_FALSE(r.open_regular("/lib/x.so", nullptr));
}

TEST(WriteNewFile, PlantedSymlinkIsNotFollowed) {
  TempRoot t;
  int dir = ::open(t.root().c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 0);
  std::string victim = t.dir + "/outside/secret";
  ASSERT_EQ(::symlink(victim.c_str(), (t.root() + "/entry.tmp1").c_str()), 0);
  EXPECT_FALSE(heapwalk::target::write_new_file_via(dir, "entry.tmp1", "entry", "poison\n"));
  std::ifstream in(victim);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "secret\n");  // untouched
  struct stat st {};
  EXPECT_NE(::stat((t.root() + "/entry").c_str(), &st), 0);
  EXPECT_TRUE(heapwalk::target::write_new_file(dir, "entry", "fresh\n"));
  std::ifstream e(t.root() + "/entry");
  std::stringstream es;
  es << e.rdbuf();
  EXPECT_EQ(es.str(), "fresh\n");
  ASSERT_EQ(::stat((t.root() + "/entry").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ::close(dir);
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
