package io.weightloader.memory;

import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.memory.cuda.PinnedMemory;
import java.nio.ByteBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * SHA-256 of memory regions, streamed in large pieces (regions may exceed 2 GiB); device memory is copied back
 * through pinned host memory first.
 */
public final class Checksums {
    private static final int PIECE = 64 << 20;

    private Checksums() {
    }

    /** Lower-case hex SHA-256 of the first {@code length} bytes of a region (device memory is copied back). */
    public static String sha256(MemoryRegion region, long length) {
        if (!region.device().isHost()) {
            try (PinnedMemory staging = PinnedMemory.allocate(Math.min(PIECE, Math.max(length, 1)))) {
                return sha256(region, length, staging);
            }
        }
        MessageDigest md = newSha256();
        for (long off = 0; off < length; off += PIECE) {
            int n = (int) Math.min(PIECE, length - off);
            ByteBuffer view = region.byteBuffer(off, n);
            md.update(view);
        }
        return HexFormat.of().formatHex(md.digest());
    }

    /**
     * Lower-case hex SHA-256 of the first {@code length} bytes of a device region, copied back through {@code staging}
     * (reused across calls: pinning host memory costs more than the copies it speeds up when done per tensor).
     */
    public static String sha256(MemoryRegion device, long length, PinnedMemory staging) {
        MessageDigest md = newSha256();
        long piece = staging.length();
        for (long off = 0; off < length; off += piece) {
            int n = (int) Math.min(piece, length - off);
            DeviceCopies.copy(staging, 0, device, off, n);
            md.update(staging.byteBuffer(0, n));
        }
        return HexFormat.of().formatHex(md.digest());
    }

    /** Staging buffer each hashing thread pins once for GPU regions. */
    private static final long DEVICE_STAGING = 8 << 20;

    /** SHA-256 of what each destination holds (its {@code byteSize()} bytes), as {@link #sha256All}. */
    public static List<String> sha256Held(List<TensorDestination> tensors, int threads) {
        return sha256All(tensors.stream().map(TensorDestination::region).toList(),
                tensors.stream().map(TensorDestination::byteSize).toList(), threads);
    }

    /**
     * SHA-256 of every region's first {@code lengths[i]} bytes, on up to {@code threads} threads (largest first, so
     * the threads finish together); device regions are copied back through one pinned buffer per thread.
     *
     * @return the hex digests, in the order of {@code regions}
     */
    public static List<String> sha256All(List<MemoryRegion> regions, List<Long> lengths, int threads) {
        int n = regions.size();
        String[] out = new String[n];
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> Long.compare(lengths.get(b), lengths.get(a)));
        AtomicInteger next = new AtomicInteger();
        int t = Math.max(1, Math.min(threads, n));
        boolean pooled = t > 1;
        Runnable worker = () -> {
            PinnedMemory staging = null;
            try {
                // a pool's worker stops at its next tensor once another failed (next) or the run was stopped
                for (int k; !(pooled && Thread.currentThread().isInterrupted()) && (k = next.getAndIncrement()) < n; ) {
                    int i = order[k];
                    MemoryRegion r = regions.get(i);
                    if (r.device().isHost()) {
                        out[i] = sha256(r, lengths.get(i));
                    } else {
                        if (staging == null) {
                            staging = PinnedMemory.allocate(DEVICE_STAGING);
                        }
                        out[i] = sha256(r, lengths.get(i), staging);
                    }
                }
            } catch (RuntimeException | Error e) {
                next.set(n);
                throw e;
            } finally {
                if (staging != null) {
                    staging.close();
                }
            }
        };
        List<Runnable> workers = new ArrayList<>(t);
        for (int i = 0; i < t; i++) {
            workers.add(worker);
        }
        Parallel.of("weightloader-sha256", t, "hashing failed", "interrupted while hashing").run(workers);
        return List.of(out);
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
