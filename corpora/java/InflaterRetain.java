// Verdict corpus (issue 12): zlib Inflaters over several threads, either leaked or freed by the
// GC, in a JVM of a given size; then it holds still.
//
//   java --add-opens java.base/java.util.zip=ALL-UNNAMED -XX:NativeMemoryTracking=summary \
//        -cp DIR InflaterRetain OUTDIR READY_FIFO mode=leak|freed [inflaters=N] [threads=T] [then=free]
//
// Every Inflater inflates half of a 64 KiB stream, so zlib has allocated its state and its
// 32 KiB window (z_stream 112 B + inflate_state 7160 B + window 32 KiB: ~40 KiB of malloc per
// Inflater, none of it tracked by NMT). mode=leak keeps them all reachable and never end()s
// them (the Spring Boot ZipInflaterInputStream bug of ../shared/seeds/000). mode=freed drops
// them and runs the GC until the JDK's Cleaner has end()ed every one (each Inflater's
// zsRef.address is 0 and its synchronized run() has returned): zlib has free()d everything,
// and glibc keeps it (the first incident's real story: each thread also holds a 256-byte
// Unsafe block allocated after its streams, so the free space lies below a chunk in use). The JVM's size comes from the flags
// (-Xms/-Xmx with -XX:+AlwaysPreTouch). Then OUTDIR/truth.json is written (what was done, the
// process's VmRSS from /proc/self/status) and one byte goes to READY_FIFO; every thread parks.
// With then=free (mode=leak), a line on stdin makes the leaked Inflaters garbage; once the
// Cleaner has end()ed them all, OUTDIR/truth-2.json and a second byte follow (two snapshots of
// one process: a leak that becomes retention).
import java.io.BufferedReader;
import java.io.File;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.zip.Deflater;
import java.util.zip.Inflater;

public class InflaterRetain {
    static final List<Object> KEEP = Collections.synchronizedList(new ArrayList<>());
    static final List<Object> REFS = Collections.synchronizedList(new ArrayList<>());
    static final CountDownLatch NEVER = new CountDownLatch(1);

    static int arg(String[] args, String key, int dflt) {
        for (String a : args) if (a.startsWith(key + "=")) return Integer.parseInt(a.substring(key.length() + 1));
        return dflt;
    }

    static String sarg(String[] args, String key, String dflt) {
        for (String a : args) if (a.startsWith(key + "=")) return a.substring(key.length() + 1);
        return dflt;
    }

    static Field field(Class<?> c, String name) throws Exception {
        Field f = c.getDeclaredField(name);
        f.setAccessible(true);
        return f;
    }

    /** Inflates half of a 64 KiB stream with each of `n` Inflaters; keeps them (leak) or only
     *  their zsRef (freed: the Inflater itself becomes garbage). */
    static void inflaters(int n, boolean keep) throws Exception {
        byte[] input = new byte[64 * 1024];
        for (int i = 0; i < input.length; i++) input[i] = (byte) ((i * 31) ^ (i >> 7));
        byte[] packed = new byte[input.length + 1024];
        Deflater once = new Deflater();
        once.setInput(input);
        once.finish();
        int plen = once.deflate(packed);
        once.end();
        byte[] out = new byte[input.length];
        Field zsRef = field(Inflater.class, "zsRef");
        for (int i = 0; i < n; i++) {
            Inflater inf = new Inflater();
            inf.setInput(packed, 0, plen);
            inf.inflate(out, 0, out.length / 2);  // the stream stays open: window allocated
            if (keep) KEEP.add(inf);
            else REFS.add(zsRef.get(inf));
        }
    }

    static sun.misc.Unsafe unsafe() throws Exception {
        return (sun.misc.Unsafe) field(sun.misc.Unsafe.class, "theUnsafe").get(null);
    }

    /** Runs the GC until the Cleaner has end()ed every Inflater in REFS; how many it did. */
    static int awaitFreed() throws Exception {
        Field address = null;
        long deadline = System.nanoTime() + 120_000_000_000L;
        int freed;
        while (true) {
            System.gc();
            Thread.sleep(50);
            freed = 0;
            for (Object r : REFS) {
                if (address == null) address = field(r.getClass(), "address");
                // run() is synchronized: holding the monitor means end() has returned.
                synchronized (r) {
                    if (address.getLong(r) == 0) freed++;
                }
            }
            if (freed == REFS.size() || System.nanoTime() > deadline) return freed;
        }
    }

    static void ready(File outdir, String fifo, String name, String mode, int n, int threads, int freed)
            throws Exception {
        long pid = ProcessHandle.current().pid();
        String truth = String.format(
            "{\"pid\": %d, \"mode\": \"%s\", \"inflaters\": %d, \"threads\": %d, \"freed\": %d, \"vm_rss\": %d}\n",
            pid, mode, n, threads, freed, vmRss());
        Files.write(new File(outdir, name).toPath(), truth.getBytes(StandardCharsets.UTF_8));
        try (OutputStream o = new FileOutputStream(fifo)) {
            o.write('R');
        }
    }

    static long vmRss() throws Exception {
        for (String l : Files.readAllLines(new File("/proc/self/status").toPath())) {
            if (l.startsWith("VmRSS:")) return Long.parseLong(l.replaceAll("[^0-9]", "")) * 1024;
        }
        return -1;
    }

    public static void main(String[] args) throws Exception {
        File outdir = new File(args[0]);
        String fifo = args[1];
        String mode = sarg(args, "mode", "leak");
        String then = sarg(args, "then", "");
        boolean keep = mode.equals("leak");
        int n = arg(args, "inflaters", 0);
        int threads = Math.max(1, arg(args, "threads", 1));

        CountDownLatch done = new CountDownLatch(threads);
        Throwable[] failure = new Throwable[1];
        for (int t = 0; t < threads; t++) {
            final int k = n / threads + (t < n % threads ? 1 : 0);
            Thread th = new Thread(() -> {
                try {
                    inflaters(k, keep);
                    // A long-lived block above the streams in this thread's arena (NMT Other):
                    // the free space below it cannot go back with the top.
                    KEEP.add(unsafe().allocateMemory(256));
                } catch (Throwable e) {
                    failure[0] = e;
                }
                done.countDown();
                try {
                    NEVER.await();
                } catch (InterruptedException e) {
                    // exit
                }
            }, "inflater-" + t);
            th.setDaemon(true);
            th.start();
        }
        done.await();
        if (failure[0] != null) throw new RuntimeException(failure[0]);

        int freed = keep ? 0 : awaitFreed();
        ready(outdir, fifo, "truth.json", mode, n, threads, freed);
        if (!then.equals("free")) {
            NEVER.await();
            return;
        }
        // Phase 2 (then=free, after a line on stdin): the leaked Inflaters become garbage.
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        if (in.readLine() == null) return;
        Field zsRef = field(Inflater.class, "zsRef");
        synchronized (KEEP) {
            for (java.util.Iterator<Object> it = KEEP.iterator(); it.hasNext();) {
                Object o = it.next();
                if (o instanceof Inflater) {
                    REFS.add(zsRef.get(o));
                    it.remove();
                }
            }
        }
        ready(outdir, fifo, "truth-2.json", mode + "+free", n, threads, awaitFreed());
        NEVER.await();
    }
}
