package io.weightloader.seed;

import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.Threads;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * What a relay that serves while it loads (a pipelined relay) may already serve: its held memory cut into units, each
 * served once all its bytes have arrived and hashed to the root's published value. A unit is a block of a tensor when
 * the root's blocks are contiguous bytes (dim 0), else the whole tensor; without root checksums, a unit is served once
 * it arrived. The built-in engine asks {@link #awaitReady} before answering a read, so a client reading ahead of its
 * source waits for the bytes, up to a deadline. Bytes that arrive again (a load that moved to another source reads a
 * part again) count once: a unit is complete when every one of its bytes arrived at least once. Host memory only.
 * Thread-safe.
 */
public final class ReadyGate implements AutoCloseable {
    private final long[] start;
    private final long[] end;
    private final String[] expected;
    private final String[] tensor;
    /** Bytes of each unit arrived at least once. */
    private final long[] arrived;
    /** What arrived of each unit not yet complete, as disjoint offset ranges (start -> end); null before and after. */
    private final TreeMap<Long, Long>[] spans;
    /** Complete units (handed to the hashing pool): further arrivals are not counted. */
    private final boolean[] complete;
    private final boolean[] ready;
    private int readyCount;
    private String failure;
    private final ExecutorService hashing;

    private ReadyGate(List<long[]> ranges, List<String> sums, List<String> names) {
        int n = ranges.size();
        Integer[] order = new Integer[n];
        for (int i = 0; i < n; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> Long.compareUnsigned(ranges.get(a)[0], ranges.get(b)[0]));
        start = new long[n];
        end = new long[n];
        expected = new String[n];
        tensor = new String[n];
        for (int k = 0; k < n; k++) {
            int i = order[k];
            start[k] = ranges.get(i)[0];
            end[k] = ranges.get(i)[0] + ranges.get(i)[1];
            expected[k] = sums.get(i);
            tensor[k] = names.get(i);
        }
        arrived = new long[n];
        @SuppressWarnings("unchecked")
        TreeMap<Long, Long>[] m = new TreeMap[n];
        spans = m;
        complete = new boolean[n];
        ready = new boolean[n];
        hashing = Executors.newFixedThreadPool(Math.max(1, Math.min(4, Checksums.defaultThreads())),
                Threads.daemon("weightloader-relay-check"));
    }

    /** Units for what a relay holds, with the root's checksums ({@code root}: the root's entries by name). */
    public static ReadyGate of(List<TensorDestination> held, Map<String, Manifest.Entry> root) {
        List<long[]> ranges = new ArrayList<>();
        List<String> sums = new ArrayList<>();
        List<String> names = new ArrayList<>();
        for (TensorDestination d : held) {
            long bytes = d.byteSize();
            if (bytes == 0) {
                continue;
            }
            Manifest.Entry e = root.get(d.spec().name());
            long base = d.region().address();
            Manifest.Blocks b = e == null ? null : e.blocks();
            if (b != null && contiguous(d.held(), b.dim())) {
                long block = bytes / b.sha256().size();
                for (int j = 0; j < b.sha256().size(); j++) {
                    ranges.add(new long[]{base + j * block, block});
                    sums.add(b.sha256().get(j));
                    names.add(d.spec().name());
                }
            } else {
                ranges.add(new long[]{base, bytes});
                sums.add(e == null ? null : e.sha256());
                names.add(d.spec().name());
            }
        }
        return new ReadyGate(ranges, sums, names);
    }

    /** Blocks along {@code dim} are contiguous bytes when every dimension before it has extent 1. */
    private static boolean contiguous(TensorSpec held, int dim) {
        for (int j = 0; j < dim; j++) {
            if (held.shape().get(j) != 1) {
                return false;
            }
        }
        return true;
    }

    /** Bytes {@code [address, address + length)} of the held memory arrived; complete units are checked. */
    public void arrived(long address, long length) {
        List<Integer> done = new ArrayList<>();
        synchronized (this) {
            int k = first(address);
            for (; k < start.length && Long.compareUnsigned(start[k], address + length) < 0; k++) {
                long lo = Math.max(start[k], address);
                long hi = Math.min(end[k], address + length);
                if (hi > lo && !complete[k]) {
                    arrived[k] += cover(k, lo - start[k], hi - start[k]);
                    if (arrived[k] == end[k] - start[k]) {
                        complete[k] = true;
                        spans[k] = null;
                        done.add(k);
                    }
                }
            }
        }
        for (int k : done) {
            hashing.submit(() -> check(k));
        }
    }

    /** Adds offsets {@code [lo, hi)} to unit {@code k}'s ranges; returns how many of its bytes they add. */
    private long cover(int k, long lo, long hi) {
        TreeMap<Long, Long> m = spans[k];
        if (m == null) {
            m = spans[k] = new TreeMap<>();
        }
        long from = lo;
        long to = hi;
        long before = 0;
        Map.Entry<Long, Long> e = m.floorEntry(lo);
        if (e != null && e.getValue() >= lo) {
            from = e.getKey();
            to = Math.max(to, e.getValue());
            before += e.getValue() - e.getKey();
            m.remove(e.getKey());
        }
        for (Map.Entry<Long, Long> f = m.ceilingEntry(from); f != null && f.getKey() <= to; f = m.ceilingEntry(from)) {
            to = Math.max(to, f.getValue());
            before += f.getValue() - f.getKey();
            m.remove(f.getKey());
        }
        m.put(from, to);
        return to - from - before;
    }

    private void check(int k) {
        String want = expected[k];
        if (want != null) {
            MessageDigest md = Checksums.newSha256();
            MemoryRegion unit = MemoryRegion.of(start[k], end[k] - start[k], io.weightloader.api.Device.CPU);
            for (long off = 0; off < unit.length(); off += 64 << 20) {
                md.update(unit.byteBuffer(off, (int) Math.min(64 << 20, unit.length() - off)));
            }
            String got = HexFormat.of().formatHex(md.digest());
            if (!got.equals(want)) {
                fail("tensor '" + tensor[k] + "' bytes [0x" + Long.toHexString(start[k]) + ", 0x" + Long.toHexString(end[k])
                        + ") arrived with SHA-256 " + got + " but the root published " + want);
                return;
            }
        }
        synchronized (this) {
            if (!ready[k]) {
                ready[k] = true;
                readyCount++;
                notifyAll();
            }
        }
    }

    /** The load failed: readers waiting (and to come) are refused with the reason. */
    public synchronized void fail(String reason) {
        if (failure == null) {
            failure = reason;
        }
        notifyAll();
    }

    /** Waits until every unit has arrived and been checked. @throws WeightLoaderException if the gate failed */
    public synchronized void awaitAll(long deadlineNanos) throws InterruptedException {
        while (readyCount < start.length && failure == null) {
            long left = deadlineNanos - System.nanoTime();
            if (left <= 0) {
                throw new WeightLoaderException("the relay's bytes were not all checked in time: " + readyCount + " of "
                        + start.length + " units");
            }
            wait(Math.max(1, left / 1_000_000));
        }
        if (failure != null) {
            throw new WeightLoaderException(failure);
        }
    }

    /**
     * Waits until every unit overlapping {@code [address, address + length)} is ready.
     *
     * @return true when ready, false at the deadline
     * @throws WeightLoaderException when the relay's load failed
     */
    public synchronized boolean awaitReady(long address, long length, long deadlineNanos) throws InterruptedException {
        while (true) {
            if (failure != null) {
                throw new WeightLoaderException("this relay's own load failed: " + failure);
            }
            boolean all = true;
            for (int k = first(address); k < start.length && Long.compareUnsigned(start[k], address + length) < 0; k++) {
                if (Long.compareUnsigned(end[k], address) > 0 && !ready[k]) {
                    all = false;
                    break;
                }
            }
            if (all) {
                return true;
            }
            long left = deadlineNanos - System.nanoTime();
            if (left <= 0) {
                return false;
            }
            wait(Math.max(1, left / 1_000_000));
        }
    }

    /** Index of the first unit that may overlap {@code address} (the one containing it, or the next). */
    private int first(long address) {
        int lo = 0;
        int hi = start.length - 1;
        int ans = start.length;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            if (Long.compareUnsigned(end[mid], address) > 0) {
                ans = mid;
                hi = mid - 1;
            } else {
                lo = mid + 1;
            }
        }
        return ans;
    }

    /** Units ready and in all, for logs. */
    public synchronized String progress() {
        return readyCount + "/" + start.length;
    }

    @Override
    public void close() {
        hashing.shutdownNow();
    }
}
