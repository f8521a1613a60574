package io.weightloader.memory;

import io.weightloader.api.MemoryRegion;
import io.weightloader.api.WeightLoaderException;
import java.nio.ByteBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/** SHA-256 of memory regions, streamed in large pieces (regions may exceed 2 GiB). */
public final class Checksums {
    private static final int PIECE = 64 << 20;

    private Checksums() {
    }

    /** Lower-case hex SHA-256 of the first {@code length} bytes of a region (device memory is copied back). */
    public static String sha256(MemoryRegion region, long length) {
        if (!region.device().isHost()) {
            return io.weightloader.memory.cuda.DeviceCopies.sha256(region, length);
        }
        MessageDigest md = newSha256();
        for (long off = 0; off < length; off += PIECE) {
            int n = (int) Math.min(PIECE, length - off);
            ByteBuffer view = region.byteBuffer(off, n);
            md.update(view);
        }
        return HexFormat.of().formatHex(md.digest());
    }

    /** Staging buffer each hashing thread pins once for GPU regions. */
    private static final long DEVICE_STAGING = 8 << 20;

    /**
     * SHA-256 of every region's first {@code lengths[i]} bytes, on up to {@code threads} threads (largest first, so
     * the threads finish together); device regions are copied back through one pinned buffer per thread.
     *
     * @return the hex digests, in the order of {@code regions}
     */
    public static java.util.List<String> sha256All(java.util.List<MemoryRegion> regions, java.util.List<Long> lengths,
                                                   int threads) {
        int n = regions.size();
        String[] out = new String[n];
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) {
            order[i] = i;
        }
        java.util.Arrays.sort(order, (a, b) -> Long.compare(lengths.get(b), lengths.get(a)));
        java.util.concurrent.atomic.AtomicInteger next = new java.util.concurrent.atomic.AtomicInteger();
        Runnable worker = () -> {
            io.weightloader.memory.cuda.PinnedMemory staging = null;
            try {
                for (int k; (k = next.getAndIncrement()) < n; ) {
                    int i = order[k];
                    MemoryRegion r = regions.get(i);
                    if (r.device().isHost()) {
                        out[i] = sha256(r, lengths.get(i));
                    } else {
                        if (staging == null) {
                            staging = io.weightloader.memory.cuda.PinnedMemory.allocate(DEVICE_STAGING);
                        }
                        out[i] = io.weightloader.memory.cuda.DeviceCopies.sha256(r, lengths.get(i), staging);
                    }
                }
            } finally {
                if (staging != null) {
                    staging.close();
                }
            }
        };
        int t = Math.max(1, Math.min(threads, n));
        if (t == 1) {
            worker.run();
            return java.util.List.of(out);
        }
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(t,
                Threads.daemon("weightloader-sha256"));
        try {
            java.util.List<java.util.concurrent.Future<?>> futures = new java.util.ArrayList<>();
            for (int i = 0; i < t; i++) {
                futures.add(pool.submit(worker));
            }
            for (java.util.concurrent.Future<?> f : futures) {
                f.get();
            }
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof RuntimeException re) {
                throw re;
            }
            throw new WeightLoaderException("hashing failed: " + e.getCause(), e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new WeightLoaderException("interrupted while hashing", e);
        } finally {
            // after a failure the others stop at their next tensor; wait for them, so that no thread still reads
            // memory the caller may free once this returns or throws
            next.set(n);
            pool.shutdown();
            try {
                if (!pool.awaitTermination(10, java.util.concurrent.TimeUnit.MINUTES)) {
                    pool.shutdownNow();
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        return java.util.List.of(out);
    }

    /** Threads for hashing: the machine's cores, at most 16. */
    public static int defaultThreads() {
        return Math.min(16, Runtime.getRuntime().availableProcessors());
    }

    public static String sha256(MemoryRegion region) {
        return sha256(region, region.length());
    }

    public static String sha256(byte[] bytes) {
        return HexFormat.of().formatHex(newSha256().digest(bytes));
    }

    public static MessageDigest newSha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("the JDK lacks SHA-256", e);
        }
    }
}
