#include "util/demangle.h"

#include <cxxabi.h>
#include <llvm/Demangle/Demangle.h>

#include <cstdlib>
#include <mutex>
#include <unordered_map>

namespace heapwalk {

namespace {
std::mutex g_mu;
std::unordered_map<std::string, std::string> g_cache;
constexpr size_t kMaxCache = 1 << 16;
}  // namespace

std::string demangle(const std::string& mangled) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_cache.find(mangled);
    if (it != g_cache.end()) return it->second;
  }
  std::string out = mangled;
  int status = 0;
  char* s = llvm::itaniumDemangle(mangled.c_str(), nullptr, nullptr, &status);
  if (s && status == 0) out = s;
  std::free(s);
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_cache.size() < kMaxCache) g_cache.emplace(mangled, out);
  return out;
}

std::string demangle_gnu(const std::string& mangled) {
  int status = 0;
  char* s = abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status);
  std::string out = (s && status == 0) ? std::string(s) : demangle(mangled);
  std::free(s);
  return out;
}

std::string class_of_vtable(const std::string& mangled) {
  if (mangled.rfind("_ZTV", 0) != 0) return "";
  std::string d = demangle(mangled);
  const std::string prefix = "vtable for ";
  if (d.rfind(prefix, 0) != 0) return "";
  return d.substr(prefix.size());
}

std::string class_of_typeinfo_name(const std::string& name) {
  if (name.empty() || name.size() > 4096) return "";
  std::string d = demangle("_ZTS" + name);
  const std::string prefix = "typeinfo name for ";
  if (d.rfind(prefix, 0) != 0) return "";
  return d.substr(prefix.size());
}

}  // namespace heapwalk
