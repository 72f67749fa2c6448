// NMT corpus: leaks what the JVM incidents of ../shared/seeds/ leaked, then holds still.
//
//   java [-XX:NativeMemoryTracking=off|summary|detail] -cp DIR NmtLoad OUTDIR READY_FIFO
//        [inflaters=N] [deflaters=N] [idle=N] [threads=T] [direct=N] [unsafe=N] [classes=N]
//
// Every Inflater/Deflater is used (so zlib has allocated its window and buffers) and never
// end()ed; all of them stay reachable from a static list, so no Cleaner frees them.  Direct
// ByteBuffers and Unsafe.allocateMemory blocks are likewise kept.  Then the program writes
// OUTDIR/truth.json (what it leaked, for the tests' checks), writes one byte to READY_FIFO and
// parks every thread for good: nothing allocates afterwards (the tests run it with -Xint and
// SerialGC so no compiler or concurrent GC thread moves the figures either).
import java.io.File;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.zip.Deflater;
import java.util.zip.Inflater;

public class NmtLoad {
    static final List<Object> KEEP = Collections.synchronizedList(new ArrayList<>());
    static final CountDownLatch NEVER = new CountDownLatch(1);

    /** A class loaded once per class loader for the class-loading part of the corpus. */
    public static class Payload {
        public int value() { return 42; }
    }

    static int arg(String[] args, String key, int dflt) {
        for (String a : args) if (a.startsWith(key + "=")) return Integer.parseInt(a.substring(key.length() + 1));
        return dflt;
    }

    static byte[] sample() {
        byte[] b = new byte[64 * 1024];
        for (int i = 0; i < b.length; i++) b[i] = (byte) ((i * 31) ^ (i >> 7));
        return b;
    }

    /** Leak `n` inflaters and `m` deflaters, each having (de)compressed a 64 KiB buffer, and
     *  `k` inflaters that never saw data (zlib has not allocated their window). */
    static void leakZlib(int n, int m, int k) throws Exception {
        for (int i = 0; i < k; i++) KEEP.add(new Inflater());
        byte[] input = sample();
        byte[] packed = new byte[input.length + 1024];
        Deflater once = new Deflater();
        once.setInput(input);
        once.finish();
        int plen = once.deflate(packed);
        once.end();
        byte[] out = new byte[input.length];
        for (int i = 0; i < m; i++) {
            Deflater d = new Deflater();
            d.setInput(input);
            d.finish();
            d.deflate(out);
            KEEP.add(d);
        }
        for (int i = 0; i < n; i++) {
            Inflater inf = new Inflater();
            inf.setInput(packed, 0, plen);
            // Half the output only: the stream stays open, so zlib has allocated its 32 KiB
            // window (it does so only when a call ends before the stream does).
            inf.inflate(out, 0, out.length / 2);
            KEEP.add(inf);
        }
    }

    static sun.misc.Unsafe unsafe() throws Exception {
        Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        return (sun.misc.Unsafe) f.get(null);
    }

    public static void main(String[] args) throws Exception {
        File outdir = new File(args[0]);
        String fifo = args[1];
        int inflaters = arg(args, "inflaters", 0);
        int deflaters = arg(args, "deflaters", 0);
        int idle = arg(args, "idle", 0);
        int threads = Math.max(1, arg(args, "threads", 1));
        int direct = arg(args, "direct", 0);
        int unsafeBlocks = arg(args, "unsafe", 0);
        int classes = arg(args, "classes", 0);

        // zlib streams, spread over `threads` threads (each ends up in its own glibc arena).
        List<Thread> workers = new ArrayList<>();
        CountDownLatch done = new CountDownLatch(threads);
        Throwable[] failure = new Throwable[1];
        for (int t = 0; t < threads; t++) {
            final int ni = inflaters / threads + (t < inflaters % threads ? 1 : 0);
            final int nd = deflaters / threads + (t < deflaters % threads ? 1 : 0);
            final int nk = idle / threads + (t < idle % threads ? 1 : 0);
            Thread th = new Thread(() -> {
                try {
                    leakZlib(ni, nd, nk);
                } catch (Throwable e) {
                    failure[0] = e;
                }
                done.countDown();
                try {
                    NEVER.await();
                } catch (InterruptedException e) {
                    // exit
                }
            }, "leaker-" + t);
            th.setDaemon(true);
            th.start();
            workers.add(th);
        }
        done.await();
        if (failure[0] != null) throw new RuntimeException(failure[0]);

        // Direct buffers (Unsafe.allocateMemory underneath: NMT category "Other").
        long directBytes = 0;
        for (int i = 0; i < direct; i++) {
            int size = 4096 * (1 + i % 8);
            KEEP.add(ByteBuffer.allocateDirect(size));
            directBytes += size;
        }
        // Raw Unsafe blocks, never freed.
        sun.misc.Unsafe u = unsafe();
        long unsafeBytes = 0;
        for (int i = 0; i < unsafeBlocks; i++) {
            long size = 1000 + 24L * i;
            long p = u.allocateMemory(size);
            u.setMemory(p, size, (byte) 0x5a);
            KEEP.add(p);
            unsafeBytes += size;
        }
        // Classes: the same class file defined by `classes` distinct loaders.
        URL here = NmtLoad.class.getProtectionDomain().getCodeSource().getLocation();
        for (int i = 0; i < classes; i++) {
            URLClassLoader l = new URLClassLoader(new URL[] {here}, null);
            Class<?> c = l.loadClass("NmtLoad$Payload");
            KEEP.add(c.getDeclaredConstructor().newInstance());
            KEEP.add(l);
        }

        long pid = ProcessHandle.current().pid();
        String truth = String.format(
            "{\"pid\": %d, \"idle_inflaters\": " + idle + ", \"inflaters\": %d, \"deflaters\": %d, \"threads\": %d, "
                + "\"direct\": {\"count\": %d, \"bytes\": %d}, \"unsafe\": {\"count\": %d, \"bytes\": %d}, "
                + "\"classes\": %d}\n",
            pid, inflaters, deflaters, threads, direct, directBytes, unsafeBlocks, unsafeBytes, classes);
        Files.write(new File(outdir, "truth.json").toPath(), truth.getBytes(StandardCharsets.UTF_8));
        try (OutputStream o = new FileOutputStream(fifo)) {
            o.write('R');
        }
        NEVER.await();
    }
}
