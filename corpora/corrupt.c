/* corrupt — a heap deliberately corrupted in two ways, for the bad-input tests.
 *
 *   corrupt OUTDIR READY_FD
 *
 * (a) the size field of an in-use chunk is smashed with garbage;
 * (b) the 0x30 fastbin is made cyclic: B -> A -> B.  glibc 2.36 protects fastbin and tcache
 *     links with safe-linking: the stored fd is ((address of the fd field) >> 12) ^ target,
 *     and fastbin links point at chunk headers (tcache links point at user memory).
 *
 * All of it happens in main_arena, in the main thread.  After corrupting, nothing calls
 * malloc, free or malloc_info (malloc_info would loop forever on the cycle): truth.json is
 * formatted into a static buffer and written with write(2) to a file opened beforehand.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SMASH 0x4141414141414141UL

static void die(const char *msg) {
    dprintf(2, "corrupt: %s: %s\n", msg, strerror(errno));
    _exit(3);
}

static char jbuf[4096];

int main(int argc, char **argv) {
    if (argc < 3) {
        dprintf(2, "usage: corrupt OUTDIR READY_FD\n");
        return 2;
    }
    int ready_fd = atoi(argv[2]);
    char path[4096];
    snprintf(path, sizeof path, "%s/truth.json", argv[1]);
    int truth_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (truth_fd < 0) die(path);

    /* Some ordinary heap first. */
    void *keep[32];
    for (int k = 0; k < 32; k++) {
        keep[k] = malloc(0x18 + 0x10 * (size_t)(k % 8));
        if (!keep[k]) die("malloc");
        memset(keep[k], 0x11, 0x18);
    }
    /* 7 chunks of 0x30 to fill the tcache bin, then A and B for the fastbin. */
    void *fill[7];
    for (int k = 0; k < 7; k++) fill[k] = malloc(0x28);
    void *a = malloc(0x28);
    void *g1 = malloc(0x18);
    void *b = malloc(0x28);
    void *g2 = malloc(0x18);
    /* The victim of the smashed size, after the fastbin chunks in address order. */
    void *victim = malloc(0x100 - 8);
    void *g3 = malloc(0x200 - 8);
    if (!a || !b || !victim || !g1 || !g2 || !g3) die("malloc");
    memset(victim, 0x22, 0x100 - 8);
    uintptr_t a_chunk = (uintptr_t)a - 16, b_chunk = (uintptr_t)b - 16;
    uintptr_t *a_fd = (uintptr_t *)a;
    __asm__("" : "+r"(a_fd)); /* launder: writing through it after free() is the point */
    for (int k = 0; k < 7; k++) free(fill[k]);
    free(a); /* fastbin: A */
    free(b); /* fastbin: B -> A */

    /* ---- corrupt; no allocator calls from here on ---- */
    *a_fd = ((uintptr_t)a_fd >> 12) ^ b_chunk; /* A -> B: closes the cycle B -> A -> B */
    uintptr_t victim_chunk = (uintptr_t)victim - 16;
    size_t old_size = ((size_t *)victim)[-1];
    ((volatile size_t *)victim)[-1] = SMASH;

    int n = snprintf(jbuf, sizeof jbuf,
                     "{\"program\": \"corrupt\", \"pid\": %d,\n"
                     " \"smashed\": {\"address\": %lu, \"old_size_field\": %zu, \"new_size_field\": %lu},\n"
                     " \"cycle\": {\"chunk_size\": 48, \"addresses\": [%lu, %lu]}}\n",
                     (int)getpid(), (unsigned long)victim_chunk, old_size, SMASH,
                     (unsigned long)b_chunk, (unsigned long)a_chunk);
    if (write(truth_fd, jbuf, (size_t)n) != n) die("write truth");
    fsync(truth_fd);
    char one = 'R';
    if (write(ready_fd, &one, 1) != 1) die("write ready");
    for (;;) pause();
}
