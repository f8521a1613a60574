package io.weightloader.benchmarks;

import com.sun.nio.file.ExtendedOpenOption;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.MemoryRegion;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.Threads;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.memory.cuda.PinnedMemory;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * The raw reads and copies {@code bench-local} holds the loader to, each doing the least the hardware needs: a
 * single-thread {@link FileChannel#read(ByteBuffer)}, parallel positional reads (buffered or {@code O_DIRECT}), a
 * pinned host-to-device copy, one read per page of a mapping; and dropping the page cache between them.
 */
final class LocalBaselines {
    private static final int PAGE = 4096;

    private LocalBaselines() {
    }

    static final Path DROP_CACHES = Path.of("/proc/sys/vm/drop_caches");

    /** {@code sync; echo 3 > /proc/sys/vm/drop_caches}: the next read of every file comes from the disk. */
    static void dropCaches() throws IOException {
        try {
            int rc = new ProcessBuilder("sync").inheritIO().start().waitFor();
            if (rc != 0) {
                throw new IOException("sync exited with " + rc);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while running sync", e);
        }
        Files.writeString(DROP_CACHES, "3");
    }

    private static final int DIRECT_ALIGN = 4096;

    /** Bytes of a buffer that holds every file, each starting at a multiple of 4 KiB and rounded up to one. */
    static long alignedTotal(List<Path> files) throws IOException {
        long total = 0;
        for (Path f : files) {
            total += (Files.size(f) + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN;
        }
        return Math.max(total, 1);
    }

    /**
     * The raw O_DIRECT read: every file opened with {@code O_DIRECT} and read in 16 MiB positional reads spread over
     * {@code threads} threads straight into one page-aligned host buffer (each file at a 4 KiB boundary, its last
     * read rounded up to whole blocks and returning short at the end of the file).
     */
    static void rawDirectRead(List<Path> files, HostMemory target, int threads) throws IOException {
        parallelRead(files, target, threads, true);
    }

    /** Every file read with positional reads of 16 MiB spread over {@code threads} threads into one host buffer. */
    static void rawParallelRead(List<Path> files, HostMemory target, int threads) throws IOException {
        parallelRead(files, target, threads, false);
    }

    /**
     * The two raw reads: 16 MiB positional reads of every file, back to back in {@code target}, on {@code threads}
     * threads; with {@code direct}, through {@code O_DIRECT}, each file's extent rounded up to whole 4 KiB blocks.
     */
    private static void parallelRead(List<Path> files, HostMemory target, int threads, boolean direct)
            throws IOException {
        final long piece = 16L << 20;
        List<Callable<Void>> tasks = new ArrayList<>();
        List<FileChannel> open = new ArrayList<>();
        try {
            long at = 0;
            for (Path f : files) {
                FileChannel ch = direct
                        ? FileChannel.open(f, StandardOpenOption.READ, ExtendedOpenOption.DIRECT)
                        : FileChannel.open(f, StandardOpenOption.READ);
                open.add(ch);
                long size = ch.size();
                long extent = direct ? (size + DIRECT_ALIGN - 1) / DIRECT_ALIGN * DIRECT_ALIGN : size;
                for (long off = 0; off < extent; off += piece) {
                    long fileOff = off;
                    long dst = at + off;
                    int len = (int) Math.min(piece, extent - off);
                    long want = Math.min(len, size - off); // an O_DIRECT read returns short at the end of the file
                    tasks.add(() -> {
                        ByteBuffer view = target.byteBuffer(dst, len);
                        long pos = fileOff;
                        while (pos - fileOff < want) {
                            int n = ch.read(view, pos);
                            if (n < 0 || direct && n == 0) {
                                throw new IOException(f + " ended early");
                            }
                            pos += n;
                        }
                        return null;
                    });
                }
                at += extent;
            }
            ExecutorService pool = Executors.newFixedThreadPool(Math.max(1, threads),
                    Threads.daemon(direct ? "bench-raw-direct" : "bench-raw"));
            try {
                for (Future<Void> f : pool.invokeAll(tasks)) {
                    f.get();
                }
            } catch (InterruptedException | ExecutionException e) {
                throw new IOException((direct ? "raw O_DIRECT read" : "raw parallel read") + " failed: " + e, e);
            } finally {
                pool.shutdownNow();
            }
        } finally {
            for (FileChannel ch : open) {
                ch.close();
            }
        }
    }

    /** Copies {@code bytes} to the device region, one pinned piece after another (each copy synchronous). */
    static void rawHostToDevice(PinnedMemory staging, MemoryRegion device, long bytes) {
        long piece = staging.length();
        for (long off = 0; off < bytes; off += piece) {
            DeviceCopies.copy(device, off, staging, 0, Math.min(piece, bytes - off));
        }
    }

    /** Reads every file front to back into {@code buffer}; returns the bytes read. */
    static long rawRead(List<Path> files, ByteBuffer buffer) throws IOException {
        long total = 0;
        for (Path f : files) {
            try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
                while (true) {
                    buffer.clear();
                    int n = ch.read(buffer);
                    if (n < 0) {
                        break;
                    }
                    total += n;
                }
            }
        }
        return total;
    }

    /** Reads one byte of every 4 KiB page of every mapped tensor. */
    static long touchEveryPage(MappedWeights mapped) {
        long sink = 0;
        for (MemoryRegion region : mapped.regions().values()) {
            long len = region.length();
            for (long off = 0; off < len; off += MemoryRegion.MAX_VIEW) {
                int n = (int) Math.min(MemoryRegion.MAX_VIEW, len - off);
                ByteBuffer view = region.byteBuffer(off, n);
                for (int i = 0; i < n; i += PAGE) {
                    sink += view.get(i);
                }
            }
        }
        return sink;
    }
}
