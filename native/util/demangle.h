// The one place names are demangled: a wrapper over LLVM's Demangle that never fails.
#pragma once

#include <string>

namespace heapwalk {

/// Demangles an Itanium C++ name ("_ZTVN3foo3BarE" -> "vtable for foo::Bar"). Returns the input
/// unchanged when it cannot be demangled. Results are cached; thread-safe.
std::string demangle(const std::string& mangled);

/// Demangles as libstdc++'s abi::__cxa_demangle does (the text HotSpot's jcmd prints, e.g.
/// "[clone .constprop.0]" suffixes), falling back to demangle(). For comparing with jcmd output.
std::string demangle_gnu(const std::string& mangled);

/// The class name of a vtable symbol ("_ZTVN3foo3BarE" -> "foo::Bar"), or "" if not a vtable.
std::string class_of_vtable(const std::string& mangled);

/// The type name of an RTTI type-name string as stored in a typeinfo ("N3foo3BarE" -> "foo::Bar").
std::string class_of_typeinfo_name(const std::string& name);

}  // namespace heapwalk
