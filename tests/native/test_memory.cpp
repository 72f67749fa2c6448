#include <gtest/gtest.h>

#include "memory/memory.h"

using heapwalk::memory::BufferSource;
using heapwalk::memory::Reader;

TEST(BufferSource, ReadsAcrossAdjacentSegmentsAndStopsAtHoles) {
  BufferSource src;
  src.add(0x1000, std::vector<uint8_t>(0x1000, 0xaa));
  src.add(0x2000, std::vector<uint8_t>(0x1000, 0xbb));
  uint8_t buf[32];
  EXPECT_EQ(src.read(0x1ff0, buf, 32), 32u);
  EXPECT_EQ(buf[0], 0xaa);
  EXPECT_EQ(buf[16], 0xbb);
  EXPECT_EQ(src.read(0x2ff0, buf, 32), 16u);
  EXPECT_EQ(src.read(0x5000, buf, 8), 0u);
}

TEST(Reader, CheckedReadRaisesFaultWithAddress) {
  BufferSource src;
  src.add(0x1000, std::vector<uint8_t>(64, 1));
  Reader r(src);
  uint64_t v = 0;
  EXPECT_TRUE(r.try_u64(0x1000, v));
  EXPECT_EQ(v, 0x0101010101010101ull);
  EXPECT_FALSE(r.try_u64(0x1040, v));
  try {
    r.u64(0x9000, "thing");
    FAIL();
  } catch (const heapwalk::Fault& f) {
    EXPECT_EQ(f.address, 0x9000u);
    EXPECT_NE(std::string(f.what()).find("0x9000"), std::string::npos);
  }
}
