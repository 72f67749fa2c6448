/* floor — the time to read given byte ranges of a file once through a fresh mmap: one load per
 * 64-byte cache line (every byte is brought into the CPU once), the lower bound for any walk of
 * those bytes.  Usage: floor FILE OFFSET:LENGTH...   Prints seconds and a checksum. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  int fd = open(argv[1], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return 1;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  const volatile uint8_t* m = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (m == MAP_FAILED) return 1;
  uint64_t sum = 0, bytes = 0;
  for (int i = 2; i < argc; ++i) {
    unsigned long long off = 0, len = 0;
    if (sscanf(argv[i], "%llu:%llu", &off, &len) != 2 || off + len > (unsigned long long)st.st_size) continue;
    madvise((void*)((uintptr_t)(m + off) & ~(uintptr_t)4095), len + ((uintptr_t)(m + off) & 4095),
            22 /* MADV_POPULATE_READ */);
    for (unsigned long long k = 0; k < len; k += 64) sum += m[off + k];
    bytes += len;
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.6f %llu %llu\n", (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9, (unsigned long long)bytes,
         (unsigned long long)sum);
  return 0;
}
