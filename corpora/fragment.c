/* fragment: fragments glibc arenas so that malloc_trim(0) has something to return, then lets a
 * test compare heapwalk's prediction with what malloc_trim(0) really gives back.
 *
 *   fragment READY_FD NTHREADS [MODE]
 *
 * MODE "fragment" (default): every thread (the main thread too, in main_arena) allocates pairs
 * [big][small] and touches them, frees every even big; main calls malloc_trim(0) (those pages
 * are released); then every thread allocates mid-size chunks out of the holes (faulting part of
 * them back in), frees half of them and some odd bigs, grows its top by freeing a 100 KB chunk
 * at the end, and finally frees some smalls (tcache first, then fastbins, left unconsolidated).
 * So the free chunks hold resident and released pages, fastbin chunks sit between free chunks,
 * and every arena has a top that malloc_trim only shrinks for main_arena (M_TRIM_THRESHOLD is
 * raised so that free() itself never trims a top).
 *
 * MODE "burst": a burst of work in many threads, each allocating ~8 MB in 512..8192-byte chunks
 * and freeing all of it except one chunk pinned at the end of its heap: the memory stays free
 * in the arenas' bins (heap_trim cannot shrink a top that is not there), the pattern of the
 * seeds' "RSS far above what the program uses" incidents.
 *
 * After the heap is final the program writes one byte to READY_FD and waits on stdin. Each
 * byte read makes it measure Rss (/proc/self/smaps_rollup), call malloc_trim(0), measure again
 * and print "rss_before_kb rss_after_kb result\n" on stdout. EOF on stdin ends it. Nothing
 * between the ready byte and the measurement allocates (raw read/write on stack buffers).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAIRS 300
#define MIDS 120
#define BURST_CHUNKS 2000

static int nthreads;
static int burst;
static pthread_barrier_t phase;  /* nthreads workers + main */
static pthread_barrier_t forever;

/* gcc elides a memset before free() (and malloc/free pairs) when nothing reads the memory:
 * this makes every touched chunk look used, so its pages really are faulted in. */
static void use(void *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

static const size_t big_sizes[] = {5000, 9000, 13000, 20000, 30000, 45000, 7000, 16500};

static unsigned rng(unsigned *s) {
  *s = *s * 1103515245u + 12345u;
  return *s >> 8;
}

static void fragment_work(int id) {
  static __thread char *big[PAIRS], *small[PAIRS], *mid[MIDS];
  unsigned seed = 1234u + (unsigned)id * 77u;
  for (int i = 0; i < PAIRS; ++i) {
    size_t b = big_sizes[(i + id) % 8] + (rng(&seed) % 64) * 16;
    big[i] = malloc(b);
    memset(big[i], 0x5a, b);
    use(big[i]);
    small[i] = malloc(40);
    memset(small[i], 0x11, 40);
    use(small[i]);
  }
  for (int i = 0; i < PAIRS; i += 2) free(big[i]);
  pthread_barrier_wait(&phase); /* main trims */
  pthread_barrier_wait(&phase);
  for (int i = 0; i < MIDS; ++i) {
    size_t m = 3000 + (rng(&seed) % 600) * 16;
    mid[i] = malloc(m);
    memset(mid[i], 0x33, m);
    use(mid[i]);
  }
  for (int i = 0; i < MIDS; i += 2) free(mid[i]);
  for (int i = 1; i < PAIRS; i += 4) free(big[i]);
  char *tail = malloc(100000); /* carved from top, then given back to it */
  memset(tail, 0x44, 100000);
  use(tail);
  free(tail);
  for (int i = 0; i < PAIRS; i += 8) free(small[i]); /* 7 to tcache, the rest to fastbins */
}

static void burst_work(int id) {
  static __thread char *c[BURST_CHUNKS];
  unsigned seed = 99u + (unsigned)id * 31u;
  for (int i = 0; i < BURST_CHUNKS; ++i) {
    size_t n = 512 + (rng(&seed) % 480) * 16;
    c[i] = malloc(n);
    memset(c[i], 0x77, n);
    use(c[i]);
  }
  char *pin = malloc(64);
  memset(pin, 1, 64);
  use(pin);
  for (int i = 0; i < BURST_CHUNKS; ++i) free(c[i]);
  pthread_barrier_wait(&phase);
  pthread_barrier_wait(&phase);
}

static void *worker(void *arg) {
  int id = (int)(long)arg;
  if (burst)
    burst_work(id);
  else
    fragment_work(id);
  pthread_barrier_wait(&phase); /* heap final */
  pthread_barrier_wait(&forever);
  return NULL;
}

static long rss_kb(void) {
  static char buf[8192];
  int fd = open("/proc/self/smaps_rollup", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = 0, r;
  while ((r = read(fd, buf + n, sizeof buf - 1 - (size_t)n)) > 0) n += r;
  close(fd);
  buf[n > 0 ? n : 0] = 0;
  char *p = strstr(buf, "\nRss:");
  return p ? strtol(p + 5, NULL, 10) : -1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: fragment READY_FD NTHREADS [fragment|burst]\n");
    return 2;
  }
  int ready = atoi(argv[1]);
  nthreads = atoi(argv[2]);
  burst = argc > 3 && strcmp(argv[3], "burst") == 0;
  /* No automatic trimming of tops by free() (systrim/heap_trim): every arena keeps a top of
   * 100 KB or more, which malloc_trim(0) shrinks for main_arena only. */
  if (!burst) mallopt(M_TRIM_THRESHOLD, 256 << 20);
  pthread_barrier_init(&phase, NULL, (unsigned)nthreads + 1);
  pthread_barrier_init(&forever, NULL, (unsigned)nthreads + 1);
  pthread_t *t = calloc((size_t)nthreads, sizeof *t);
  for (int i = 0; i < nthreads; ++i) pthread_create(&t[i], NULL, worker, (void *)(long)(i + 1));
  if (burst) {
    pthread_barrier_wait(&phase);
    pthread_barrier_wait(&phase);
  } else {
    /* The main thread works in main_arena between the workers' phases. */
    static char *big[PAIRS], *small[PAIRS];
    unsigned seed = 42;
    for (int i = 0; i < PAIRS; ++i) {
      size_t b = big_sizes[i % 8] + (rng(&seed) % 64) * 16;
      big[i] = malloc(b);
      memset(big[i], 0x5a, b);
      use(big[i]);
      small[i] = malloc(40);
      memset(small[i], 0x11, 40);
      use(small[i]);
    }
    for (int i = 0; i < PAIRS; i += 2) free(big[i]);
    pthread_barrier_wait(&phase);
    malloc_trim(0);
    pthread_barrier_wait(&phase);
    for (int i = 0; i < MIDS; ++i) {
      size_t m = 3000 + (rng(&seed) % 600) * 16;
      char *x = malloc(m);
      memset(x, 0x33, m);
      use(x);
      if (i % 2 == 0) free(x);
    }
    for (int i = 1; i < PAIRS; i += 4) free(big[i]);
    char *tail = malloc(100000);
    memset(tail, 0x44, 100000);
    use(tail);
    free(tail);
    for (int i = 0; i < PAIRS; i += 8) free(small[i]);
  }
  pthread_barrier_wait(&phase); /* every heap is final */
  char one = 'r';
  if (write(ready, &one, 1) != 1) return 1;
  close(ready);
  char cmd;
  while (read(0, &cmd, 1) == 1) {
    long before = rss_kb();
    int result = malloc_trim(0);
    long after = rss_kb();
    char line[96];
    int n = snprintf(line, sizeof line, "%ld %ld %d\n", before, after, result);
    if (write(1, line, (size_t)n) != n) return 1;
  }
  return 0;
}
