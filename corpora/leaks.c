/* leaks — blocks whose last pointer is dropped, and blocks kept reachable in different ways,
 * for the leak pass (`heapwalk leaks`).
 *
 *   leaks OUTDIR READY_FD
 *
 * Writes OUTDIR/truth.json:
 *   {"leaked":    [{"mem", "size", "what", "unreferenced"}],   the blocks nothing live points to
 *    "reachable": [{"mem", "size", "what"}],                   kept by a global, main's stack,
 *                  a register (r12), a block, an interior pointer, TLS, a thread's stack,
 *    "freed":     [{"mem", "what"}], "main_lwp", "thread_lwp"}
 * then writes one byte to READY_FD and waits forever.  `mem` is malloc's pointer (the chunk
 * header is 16 bytes below); "unreferenced": no word of a root or of any in-use chunk points
 * into the block.
 *
 * No stale copy of a leaked pointer may survive, or the pass would rightly find it:
 *  - blocks are made in noinline functions that record their addresses only in the global
 *    truth arrays, which are zeroed (explicit_bzero) once truth.json is written;
 *  - the truth is formatted with snprintf into a static buffer (text, not pointers) and
 *    written with write(2): no stdio buffer, no malloc after the blocks are made;
 *  - the dead stack below each thread's frame is overwritten (scrub) before it waits;
 *  - both threads wait in an asm loop that zeroes every general register except r12 (main:
 *    the "register" block, loaded from a global that the same asm then clears).
 *
 * libc's own chunks, all reachable: each thread's tcache_perthread_struct (the `tcache` TLS
 * variable, in static TLS), the second thread's dtv (calloc'd by pthread_create, pointed at
 * from its TCB at the top of its stack mapping), the stdout buffer (printf below; pointed at
 * from _IO_2_1_stdout_ in libc's .data) and a FILE kept open with its buffer (on
 * _IO_list_all).  Dead-stack pointers are below rsp - 128 and not roots.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAXB 64

struct block {
    uintptr_t mem;
    size_t size;
    const char *what;
    int unreferenced;
};

static struct block leaked[MAXB], reachable[MAXB], freed[MAXB];
static int nleaked, nreachable, nfreed;
static pid_t main_lwp, thread_lwp;
static pthread_barrier_t made;

/* The roots of the reachable blocks. */
void *g_global;               /* module data (.bss) */
void *g_interior;             /* an interior pointer */
void *g_big;                  /* an mmapped chunk */
void *g_aligned;              /* an mmapped chunk from posix_memalign */
void *g_dangling;             /* points at a freed (tcache) chunk */
__thread void *t_block;        /* TLS */
void *g_reg_tmp __attribute__((used)); /* moved into r12 by main's final asm, then cleared */

static void die(const char *msg) {
    dprintf(2, "leaks: %s: %s\n", msg, strerror(errno));
    _exit(3);
}

static void *block(size_t n, int fill) {
    void *p = malloc(n);
    if (!p) die("malloc");
    memset(p, fill, n);
    return p;
}

static void *aligned(size_t alignment, size_t n, int fill) {
    void *p = NULL;
    if (posix_memalign(&p, alignment, n) != 0) die("posix_memalign");
    memset(p, fill, n);
    return p;
}

static void note(struct block *set, int *count, void *p, size_t size, const char *what, int unref) {
    if (*count >= MAXB) die("too many blocks");
    set[*count] = (struct block){(uintptr_t)p, size, what, unref};
    (*count)++;
}

/* Leaked: the only pointers to these live in the truth arrays (zeroed before the wait). */
__attribute__((noinline)) static void make_leaks(void) {
    static const size_t sizes[] = {24, 100, 256, 1000, 5000, 40};
    static const char *const names[] = {"plain 24", "plain 100", "plain 256", "plain 1000",
                                        "plain 5000", "plain 40"};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        note(leaked, &nleaked, block(sizes[i], 0x5a), sizes[i], names[i], 1);
    /* an mmapped chunk */
    note(leaked, &nleaked, block(600 * 1024, 0x5a), 600 * 1024, "mmapped 600K", 1);
    /* an mmapped chunk moved up inside its mapping by posix_memalign (a stale header stays at
       the mapping's start) */
    note(leaked, &nleaked, aligned(4096, 300 * 1024, 0x5a), 300 * 1024, "mmapped, 4096-aligned", 1);
    /* a cycle: each is referenced, neither reachable */
    void **a = block(48, 0x5a), **b = block(48, 0x5a);
    a[0] = b;
    b[0] = a;
    note(leaked, &nleaked, a, 48, "cycle a", 0);
    note(leaked, &nleaked, b, 48, "cycle b", 0);
    /* a list: head is unreferenced, tail is pointed at (interior) by head only */
    void **tail = block(72, 0x5a), **head = block(64, 0x5a);
    head[2] = (char *)tail + 16;
    note(leaked, &nleaked, head, 64, "list head", 1);
    note(leaked, &nleaked, tail, 72, "list tail", 0);
    /* pointed at only from the stale contents of a free (tcache) chunk */
    void **stale = block(88, 0x5a);
    void **gone = block(56, 0);
    gone[3] = stale;
    note(leaked, &nleaked, stale, 88, "only in a freed chunk", 1);
    note(freed, &nfreed, gone, 56, "freed, dangling global", 0);
    g_dangling = gone;
    free(gone);
}

/* Reachable from the main thread's roots. */
__attribute__((noinline)) static void make_reachable(void) {
    void **g = block(72, 0);
    g_global = g;
    note(reachable, &nreachable, g, 72, "global", 0);
    void **in = block(136, 0);
    g[1] = in;
    note(reachable, &nreachable, in, 136, "inside a block", 0);
    char *deep = block(40, 0);
    in[5] = deep + 39; /* interior pointer to its last byte, from inside a block */
    note(reachable, &nreachable, deep, 40, "interior, inside a block", 0);
    char *inner = block(200, 0x11);
    g_interior = inner + 72;
    note(reachable, &nreachable, inner, 200, "interior pointer (global)", 0);
    void *tls = block(120, 0x22);
    t_block = tls;
    note(reachable, &nreachable, tls, 120, "TLS", 0);
    g_big = block(1 << 20, 0x33);
    note(reachable, &nreachable, g_big, 1 << 20, "mmapped, global", 0);
    g_aligned = aligned(64, 400 * 1024, 0x33);
    note(reachable, &nreachable, g_aligned, 400 * 1024, "mmapped, 64-aligned, global", 0);
    void *reg = block(152, 0x44);
    g_reg_tmp = reg;
    note(reachable, &nreachable, reg, 152, "register r12", 0);
}

__attribute__((noinline)) static void *make_on_stack(size_t n) {
    void *p = block(n, 0x55);
    note(reachable, &nreachable, p, n, "main's stack", 0);
    return p;
}

/* Overwrites the dead stack below the caller (where malloc, snprintf... left copies). */
__attribute__((noinline)) static void scrub(void) {
    char buf[64 * 1024];
    explicit_bzero(buf, sizeof buf);
    __asm__ volatile("" : : "r"(buf) : "memory");
}

/* Zeroes every general register but r12 (and rsp) and pauses forever. */
#define ZERO_AND_PAUSE                                                                             \
    "xor %%ebx, %%ebx\n\txor %%ebp, %%ebp\n\txor %%edx, %%edx\n\txor %%esi, %%esi\n\t"              \
    "xor %%edi, %%edi\n\txor %%r8d, %%r8d\n\txor %%r9d, %%r9d\n\txor %%r10d, %%r10d\n\t"            \
    "xor %%r11d, %%r11d\n\txor %%r13d, %%r13d\n\txor %%r14d, %%r14d\n\txor %%r15d, %%r15d\n\t"      \
    "1: mov %0, %%eax\n\txor %%ecx, %%ecx\n\tsyscall\n\tjmp 1b\n\t"

__attribute__((noreturn, noinline)) static void wait_forever(int keep_r12) {
    if (keep_r12)
        __asm__ volatile("mov g_reg_tmp(%%rip), %%r12\n\t"
                         "movq $0, g_reg_tmp(%%rip)\n\t" ZERO_AND_PAUSE : : "i"(SYS_pause) : "memory");
    else
        __asm__ volatile("xor %%r12d, %%r12d\n\t" ZERO_AND_PAUSE : : "i"(SYS_pause) : "memory");
    __builtin_unreachable();
}

/* The second thread: its blocks live in its own arena. */
__attribute__((noinline)) static void *thread_blocks(void) {
    note(leaked, &nleaked, block(300, 0x5a), 300, "thread arena 300", 1);
    void *kept = block(176, 0x66);
    note(reachable, &nreachable, kept, 176, "second thread's stack", 0);
    return kept;
}

static void *thread_main(void *arg) {
    (void)arg;
    thread_lwp = (pid_t)syscall(SYS_gettid);
    void *volatile kept = thread_blocks();
    scrub();
    pthread_barrier_wait(&made);
    (void)kept;
    wait_forever(0);
}

static char text[64 * 1024];

static size_t put_set(size_t o, const char *name, const struct block *set, int n, int with_size) {
    o += (size_t)snprintf(text + o, sizeof text - o, "%s\"%s\": [", o > 1 ? ",\n " : "", name);
    for (int i = 0; i < n; i++) {
        o += (size_t)snprintf(text + o, sizeof text - o, "%s{\"mem\": %lu, \"what\": \"%s\"", i ? ",\n   " : "",
                              (unsigned long)set[i].mem, set[i].what);
        if (with_size)
            o += (size_t)snprintf(text + o, sizeof text - o, ", \"size\": %zu, \"unreferenced\": %s", set[i].size,
                                  set[i].unreferenced ? "true" : "false");
        o += (size_t)snprintf(text + o, sizeof text - o, "}");
    }
    return o + (size_t)snprintf(text + o, sizeof text - o, "]");
}

__attribute__((noinline)) static void write_truth(const char *outdir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/truth.json", outdir);
    size_t o = (size_t)snprintf(text, sizeof text, "{");
    o = put_set(o, "leaked", leaked, nleaked, 1);
    o = put_set(o, "reachable", reachable, nreachable, 1);
    o = put_set(o, "freed", freed, nfreed, 0);
    o += (size_t)snprintf(text + o, sizeof text - o, ",\n \"main_lwp\": %d, \"thread_lwp\": %d}\n", (int)main_lwp,
                          (int)thread_lwp);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, text, o) != (ssize_t)o || close(fd) != 0) die("truth.json");
    explicit_bzero(text, sizeof text);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        dprintf(2, "usage: leaks OUTDIR READY_FD\n");
        return 2;
    }
    int ready = atoi(argv[2]);
    main_lwp = (pid_t)syscall(SYS_gettid);
    /* libc's own chunks: the stdout buffer and an open FILE with its buffer */
    printf("leaks: building\n");
    FILE *keep = fopen("/proc/self/stat", "r");
    if (!keep || fgetc(keep) == EOF) die("fopen");
    if (pthread_barrier_init(&made, NULL, 2) != 0) die("barrier");

    make_leaks();
    make_reachable();
    void *volatile on_stack = make_on_stack(208);
    pthread_t th;
    if (pthread_create(&th, NULL, thread_main, NULL) != 0) die("pthread_create");
    pthread_barrier_wait(&made);

    write_truth(argv[1]);
    explicit_bzero(leaked, sizeof leaked);
    explicit_bzero(reachable, sizeof reachable);
    explicit_bzero(freed, sizeof freed);
    scrub();
    if (write(ready, "x", 1) != 1) die("ready");
    (void)on_stack;
    wait_forever(1);
}
