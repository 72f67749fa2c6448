// HotSpot's serviceability tables (vmStructs), exported by every libjvm.so: where the Java heap
// is, read the way the Serviceability Agent reads it, with no debug symbols.
//
// libjvm exports (JNIEXPORT, .dynsym) `gHotSpotVMStructs`, a pointer to an array of
// VMStructEntry {typeName, fieldName, typeString, isStatic, offset, address} ended by a null
// typeName, and the entry's layout as numbers (`gHotSpotVMStructEntryTypeNameOffset`, ...,
// `gHotSpotVMStructEntryArrayStride`): hotspot/share/runtime/vmStructs.{hpp,cpp} (jdk17u
// jdk-17.0.x, jdk21u, jdk11u alike). The Java heap is `Universe::_collectedHeap->_reserved`,
// a MemRegion {_start, _word_size}, each named by an entry.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "target/target.h"

namespace heapwalk::hotspot {

struct JavaHeap {
  uint64_t start = 0, end = 0;  ///< the reserved range (committed parts lie inside)
};

/// The Java heap of a JVM target, or nullopt (not a JVM, libjvm's file unreadable, tables not
/// found); `why` says which. Reads at most a few thousand small pieces of the image.
std::optional<JavaHeap> java_heap(target::Target& t, std::string* why = nullptr);

/// The code cache's CodeHeaps (`CodeCache::_heaps`, a GrowableArray<CodeHeap*>; each heap's
/// `_memory` VirtualSpace `[_low_boundary, _high_boundary)`, vmStructs entries in jdk17u and
/// jdk21u), reserved ranges in the array's order; empty when not found.
std::vector<JavaHeap> code_heaps(target::Target& t);

}  // namespace heapwalk::hotspot
