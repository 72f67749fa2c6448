// classes — C++ objects of known classes on the heap, for the classifier's oracle.
//
//   classes OUTDIR READY_FD
//
// Creates known numbers of objects of nine polymorphic classes (namespaces, templates, multiple
// and virtual inheritance, objects held in STL containers), frees some, writes truth.json with
// the number of live objects per demangled class name, signals READY_FD and pauses.
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace app {
struct Base {
  virtual ~Base() = default;
  long id = 0;
};
struct Leaf : Base {
  char payload[40] = {};
};
namespace net {
struct Connection : Base {
  int fd = -1;
  char buf[200] = {};
};
}  // namespace net
template <typename T>
struct Box : Base {
  T value{};
};
struct Left {
  virtual ~Left() = default;
  long l = 1;
};
struct Right {
  virtual ~Right() = default;
  long r = 2;
};
struct Both : Left, Right {  // multiple inheritance: two vptrs, the first is Both's
  long b = 3;
};
struct VBase {
  virtual ~VBase() = default;
  long v = 4;
};
struct VMid1 : virtual VBase {
  long m1 = 5;
};
struct VMid2 : virtual VBase {
  long m2 = 6;
};
struct Diamond : VMid1, VMid2 {  // virtual inheritance
  long d = 7;
};
}  // namespace app

// Kept reachable so nothing is optimised away.
std::vector<app::Base*> g_bases;
std::vector<app::Left*> g_lefts;
std::vector<app::VBase*> g_vbases;
std::list<std::unique_ptr<app::net::Connection>> g_conns;
std::map<int, app::Box<std::pair<int, int>>*> g_pairs;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: classes OUTDIR READY_FD\n");
    return 2;
  }
  std::map<std::string, long> truth;
  auto keep = [&](app::Base* b, const char* name) {
    g_bases.push_back(b);
    ++truth[name];
  };
  g_bases.reserve(4096);
  g_lefts.reserve(512);
  g_vbases.reserve(512);
  for (int i = 0; i < 1000; ++i) keep(new app::Leaf, "app::Leaf");
  for (int i = 0; i < 300; ++i) keep(new app::Box<int>, "app::Box<int>");
  for (int i = 0; i < 200; ++i) keep(new app::Box<double>, "app::Box<double>");
  for (int i = 0; i < 120; ++i) {
    g_lefts.push_back(new app::Both);
    ++truth["app::Both"];
  }
  for (int i = 0; i < 80; ++i) {
    g_vbases.push_back(new app::Diamond);
    ++truth["app::Diamond"];
  }
  for (int i = 0; i < 50; ++i) {
    g_vbases.push_back(new app::VMid1);
    ++truth["app::VMid1"];
  }
  for (int i = 0; i < 250; ++i) {
    g_conns.push_back(std::make_unique<app::net::Connection>());
    ++truth["app::net::Connection"];
  }
  for (int i = 0; i < 70; ++i) {
    g_pairs[i] = new app::Box<std::pair<int, int>>;
    ++truth["app::Box<std::pair<int, int> >"];
  }
  // Free some: every third Leaf, and the first 100 connections.
  for (size_t i = 0; i < g_bases.size(); i += 3) {
    if (dynamic_cast<app::Leaf*>(g_bases[i])) {
      delete g_bases[i];
      g_bases[i] = nullptr;
      --truth["app::Leaf"];
    }
  }
  for (int i = 0; i < 100; ++i) {
    g_conns.pop_front();
    --truth["app::net::Connection"];
  }
  char path[4096];
  std::snprintf(path, sizeof path, "%s/truth.json", argv[1]);
  FILE* f = std::fopen(path, "w");
  if (!f) return 1;
  std::fprintf(f, "{\"classes\": {");
  bool first = true;
  for (const auto& [name, n] : truth) {
    std::fprintf(f, "%s\"%s\": %ld", first ? "" : ", ", name.c_str(), n);
    first = false;
  }
  std::fprintf(f, "}}\n");
  std::fclose(f);
  int fd = std::atoi(argv[2]);
  if (write(fd, "R", 1) != 1) return 1;
  for (;;) pause();
}
