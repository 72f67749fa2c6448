/* tryfree — heap states for `try_free`, `chunk` and `vis` (issue 15), with glibc's own verdict.
 *
 *   tryfree OUTDIR READY_FD
 *
 * Sets up, in main_arena and the main thread, one pointer per case:
 *   valid      a fresh malloc(0x28): free() caches it in the tcache
 *   tcache2    malloc(0x38) already freed once (in the tcache): a double free
 *   fasttop    malloc(0x48) freed once into the fastbin (its tcache bin filled first)
 *   prev       malloc(0x500) freed once into the unsorted bin (a guard chunk follows)
 *   misaligned a malloc(0x28) + 8 (its first word zeroed)
 *   fakesize   a malloc(0x28) whose size field was overwritten with 0x11
 *   nextfast   malloc(0x68) whose next chunk's size field was overwritten with 0x1 (tcache bin full)
 *   mmapped    a fresh malloc(1 MiB): munmap
 *   badmmap    a malloc(1 MiB) whose prev_size was overwritten with 8
 * For each case a forked child really calls free() on it; the parent records the child's stderr
 * (glibc's abort message) and how it ended. Also writes a text chunk (`text`: "hello
 * tryfree ..." in a malloc(0x40)) for `chunk`'s hexdump, below it a freed malloc(0x88) of 'D's
 * (`dtext`) for classify's samples. truth.json holds it all; then the
 * program signals READY_FD and sleeps until killed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wuse-after-free"

static char jbuf[8192];

struct kase {
    const char *name;
    void *ptr;
    char message[256];
    int status;
};

static void run_child(struct kase *k) {
    int fds[2];
    if (pipe(fds) != 0) _exit(3);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        free(k->ptr);
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(fds[0], k->message + n, sizeof k->message - 1 - n)) > 0) n += (size_t)r;
    k->message[n] = 0;
    char *nl = strchr(k->message, '\n');
    if (nl) *nl = 0;
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    k->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tryfree OUTDIR READY_FD\n");
        return 2;
    }
    /* First, a chunk of 'D's (freed below) under the used text chunks that follow (setenv's
     * copy of its string, the text case): `classify --free` must show each text row's own
     * example's text (issue 15: a text row once showed another chunk's text). */
    char *dtext = malloc(0x88);
    memset(dtext, 'D', 0x87);
    dtext[0x87] = 0;
    __asm__ volatile("" : : "r"(dtext) : "memory"); /* keep the 'D's: free() follows */
    setenv("LIBC_FATAL_STDERR_", "1", 1);
    char path[4096];
    snprintf(path, sizeof path, "%s/truth.json", argv[1]);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) return 3;
    /* Everything is allocated first, then freed and corrupted: no malloc after that (a later
     * malloc would take the freed chunks back, and a large one consolidates the fastbins);
     * truth.json is formatted into a static buffer and written with write(2). */
    struct kase ks[9];
    int nk = 0;
    void *valid = malloc(0x28);
    void *t2 = malloc(0x38);
    void *fill[7], *nfill[7];
    for (int i = 0; i < 7; i++) fill[i] = malloc(0x48);
    void *fast = malloc(0x48), *fastguard = malloc(0x48);
    void *big = malloc(0x500), *guard = malloc(0x18);
    char *mis = malloc(0x28);
    size_t *fake = malloc(0x28);
    for (int i = 0; i < 7; i++) nfill[i] = malloc(0x68);
    void *nf = malloc(0x68), *after = malloc(0x68);
    void *mm = malloc(1 << 20);
    size_t *bad = malloc(1 << 20);
    char *text = malloc(0x40);
    strcpy(text, "hello tryfree: the quick brown fox");

    free(t2);
    for (int i = 0; i < 7; i++) free(fill[i]);
    free(fast);
    free(big);
    free(dtext);
    for (int i = 0; i < 7; i++) free(nfill[i]);
    memset(mis, 0, 0x28);
    fake[-1] = 0x11;
    ((size_t *)after)[-1] = 0x1;
    bad[-2] = 8;

    ks[nk++] = (struct kase){"valid", valid, "", 0};
    ks[nk++] = (struct kase){"tcache2", t2, "", 0};
    ks[nk++] = (struct kase){"fasttop", fast, "", 0};
    ks[nk++] = (struct kase){"prev", big, "", 0};
    ks[nk++] = (struct kase){"misaligned", mis + 8, "", 0};
    ks[nk++] = (struct kase){"fakesize", fake, "", 0};
    ks[nk++] = (struct kase){"nextfast", nf, "", 0};
    ks[nk++] = (struct kase){"mmapped", mm, "", 0};
    ks[nk++] = (struct kase){"badmmap", bad, "", 0};

    for (int i = 0; i < nk; i++) run_child(&ks[i]);

    size_t n = 0;
#define PUT(...) n += (size_t)snprintf(jbuf + n, sizeof jbuf - n, __VA_ARGS__)
    PUT("{\"cases\": {");
    for (int i = 0; i < nk; i++) {
        PUT("%s\"%s\": {\"ptr\": %lu, \"message\": \"", i ? ", " : "", ks[i].name,
            (unsigned long)(uintptr_t)ks[i].ptr);
        for (const char *c = ks[i].message; *c; c++)
            if (*c == '"' || *c == '\\') PUT("\\%c", *c);
            else if ((unsigned char)*c >= 0x20) PUT("%c", *c);
        PUT("\", \"status\": %d}", ks[i].status);
    }
    size_t tsize = ((size_t *)text)[-1];
    PUT("}, \"text\": {\"ptr\": %lu, \"chunk\": %lu, \"size\": %lu, \"size_field\": %lu, "
        "\"content\": \"%s\"}, \"dtext\": %lu, \"guards\": [%lu, %lu]}\n",
        (unsigned long)(uintptr_t)text, (unsigned long)(uintptr_t)(text - 16),
        (unsigned long)(tsize & ~(size_t)7), (unsigned long)tsize, text,
        (unsigned long)(uintptr_t)dtext, (unsigned long)(uintptr_t)fastguard, (unsigned long)(uintptr_t)guard);
    if (write(out, jbuf, n) != (ssize_t)n) return 3;
    close(out);
    int ready = atoi(argv[2]);
    char one = 1;
    if (write(ready, &one, 1) != 1) return 1;
    close(ready);
    for (;;) pause();
}
