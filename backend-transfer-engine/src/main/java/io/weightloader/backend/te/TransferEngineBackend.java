package io.weightloader.backend.te;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.seed.Manifest;
import io.weightloader.api.seed.RemoteLoads;
import io.weightloader.api.seed.SeedClient;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.OneSidedEngine.Batch;
import io.weightloader.backend.te.engine.OneSidedEngine.OpState;
import io.weightloader.backend.te.engine.OneSidedEngine.OpStatus;
import io.weightloader.backend.te.engine.OneSidedEngine.ReadOp;
import io.weightloader.backend.te.engine.RegionMerger;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.locks.LockSupport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The client of the non-disturbing path: fetches the seed's manifest, checks it against what the host expects
 * before any byte moves, then reads every tensor with one-sided reads in bounded batches (large tensors in
 * slices), polls each read to a final state under a deadline, retries failed slices a bounded number of
 * times, honours a bandwidth cap, and verifies checksums when asked. Any failure is an error.
 */
final class TransferEngineBackend implements WeightLoaderBackend {
    private static final Logger LOG = LoggerFactory.getLogger(TransferEngineBackend.class);

    private final SeedClient seed;
    private final RankKey rank;
    private final OneSidedEngine engine;
    private final TransferEngineSettings settings;
    private final Duration transferTimeout;
    private final int retries;
    private Manifest manifest;

    TransferEngineBackend(SeedClient seed, RankKey rank, OneSidedEngine engine, TransferEngineSettings settings,
                          Duration transferTimeout, int retries) {
        this.seed = seed;
        this.rank = rank;
        this.engine = engine;
        this.settings = settings;
        this.transferTimeout = transferTimeout;
        this.retries = retries;
    }

    @Override
    public String name() {
        return TransferEngineProvider.NAME;
    }

    @Override
    public String source() {
        return "seed " + seed.peer() + " rank " + rank;
    }

    @Override
    public String engine() {
        return engine.name();
    }

    @Override
    public synchronized List<TensorSpec> available() {
        if (manifest == null) {
            manifest = checkedManifest();
        }
        return manifest.specs();
    }

    private Manifest checkedManifest() {
        Manifest m = seed.manifest(rank);
        if (!m.engine().startsWith(settings.enginePrefix())) {
            throw new WeightLoaderException(source() + " serves its weights with engine " + m.engine()
                    + ", but this client uses " + engine.name() + " (" + TransferEngineSettings.PATH
                    + ".engine); set both sides to the same engine");
        }
        return m;
    }

    /** Part of one tensor covered by a read. */
    private record Part(TensorDestination dest, long offset, long length) {
    }

    /**
     * One read: a range contiguous on both sides, covering parts of one or more tensors (adjacent tensors of the
     * seed's and the host's arenas are read together, up to the slice size).
     */
    private record Read(long local, long remote, long length, List<Part> parts, int attempt) {
        ReadOp op() {
            return new ReadOp(local, remote, length);
        }

        Read retry() {
            return new Read(local, remote, length, parts, attempt + 1);
        }

        String describe() {
            Part p = parts.get(0);
            return "tensor '" + p.dest().spec().name() + "' bytes [" + p.offset() + ", " + (p.offset() + p.length())
                    + ")" + (parts.size() > 1 ? " and " + (parts.size() - 1) + " more tensor(s)" : "");
        }
    }

    /** Cuts the request into reads of at most {@code sliceSize}, joining tensors adjacent on both sides. */
    static List<Read> plan(List<TensorDestination> tensors, Manifest m, long sliceSize) {
        List<TensorDestination> order = new ArrayList<>();
        for (TensorDestination d : tensors) {
            if (d.spec().byteSize() > 0) {
                order.add(d);
            }
        }
        order.sort(java.util.Comparator.comparingLong(d -> m.entry(d.spec().name()).address()));
        List<Read> reads = new ArrayList<>();
        int i = 0;
        while (i < order.size()) {
            // a run of tensors contiguous in the seed's memory and in the host's
            int j = i + 1;
            long localEnd = order.get(i).region().address() + order.get(i).spec().byteSize();
            long remoteEnd = m.entry(order.get(i).spec().name()).address() + order.get(i).spec().byteSize();
            while (j < order.size() && order.get(j).region().address() == localEnd
                    && m.entry(order.get(j).spec().name()).address() == remoteEnd
                    && order.get(j).region().device().equals(order.get(i).region().device())) {
                localEnd += order.get(j).spec().byteSize();
                remoteEnd += order.get(j).spec().byteSize();
                j++;
            }
            long runLocal = order.get(i).region().address();
            long runRemote = m.entry(order.get(i).spec().name()).address();
            long runLength = localEnd - runLocal;
            int t = i;
            long tStart = 0; // offset of tensor t within the run
            for (long off = 0; off < runLength; off += sliceSize) {
                long len = Math.min(sliceSize, runLength - off);
                List<Part> parts = new ArrayList<>();
                long at = off;
                while (at < off + len) {
                    TensorDestination d = order.get(t);
                    long inTensor = at - tStart;
                    long partLen = Math.min(d.spec().byteSize() - inTensor, off + len - at);
                    parts.add(new Part(d, inTensor, partLen));
                    at += partLen;
                    if (inTensor + partLen == d.spec().byteSize()) {
                        tStart += d.spec().byteSize();
                        t++;
                    }
                }
                reads.add(new Read(runLocal + off, runRemote + off, len, List.copyOf(parts), 0));
            }
            i = j;
        }
        return reads;
    }

    @Override
    public LoadReport load(LoadRequest request) {
        long t0 = System.nanoTime();
        Manifest m = checkedManifest();
        synchronized (this) {
            manifest = m;
        }
        TensorMatcher.check(source(), m.specs(), request.specs(), request.ignoreExtraTensors());
        double manifestSeconds = (System.nanoTime() - t0) / 1e9;
        for (TensorDestination d : request.tensors()) {
            if (!d.region().device().isHost() && engine.name().startsWith("builtin")) {
                throw new WeightLoaderException("engine " + engine.name() + " fills host memory only; tensor '"
                        + d.spec().name() + "' has a " + d.region().device() + " destination");
            }
        }
        long sliceSize = settings.sliceSize();
        long cap = settings.bandwidthLimit();
        if (cap > 0) {
            sliceSize = Math.max(1 << 20, Math.min(sliceSize, cap / 20));
        }
        Deque<Read> queue = new ArrayDeque<>(plan(request.tensors(), m, sliceSize));
        Map<String, Long> remaining = new HashMap<>();
        for (TensorDestination d : request.tensors()) {
            remaining.put(d.spec().name(), d.spec().byteSize());
        }
        List<MemoryRegion> local = RegionMerger.merge(request.tensors().stream()
                .map(d -> d.region().slice(0, d.spec().byteSize())).toList());
        engine.registerLocal(local);
        long total = request.totalBytes();
        int tensorsTotal = request.tensors().size();
        int tensorsDone = (int) remaining.values().stream().filter(b -> b == 0).count();
        long done = 0;
        long deadline = t0 + transferTimeout.toNanos();
        long tTransfer = System.nanoTime();
        try {
            OneSidedEngine.Peer peer = peer(m.session());
            int maxBatch = Math.min(settings.batchSize(), peer.maxBatchSize());
            long maxBatchBytes = cap > 0 ? Math.max(sliceSize, cap / 10) : Long.MAX_VALUE;
            long submitted = 0;
            long tStart = System.nanoTime();
            while (!queue.isEmpty()) {
                List<Read> reads = new ArrayList<>();
                long batchBytes = 0;
                while (!queue.isEmpty() && reads.size() < maxBatch
                        && (reads.isEmpty() || batchBytes + queue.peek().length() <= maxBatchBytes)) {
                    Read r = queue.poll();
                    reads.add(r);
                    batchBytes += r.length();
                }
                if (cap > 0) {
                    throttle(tStart, submitted, cap, deadline);
                }
                submitted += batchBytes;
                Batch batch = peer.submit(reads.stream().map(Read::op).toList());
                List<OpStatus> statuses = new ArrayList<>(reads.size());
                try {
                    awaitFinal(batch, deadline, reads, done, total);
                    for (int i = 0; i < reads.size(); i++) {
                        statuses.add(batch.status(i));
                    }
                } finally {
                    if (!batch.release()) {
                        LOG.warn("engine {} could not release a batch with reads in flight", engine.name());
                    }
                }
                int retried = 0;
                String firstRetry = null;
                for (int i = 0; i < reads.size(); i++) {
                    Read r = reads.get(i);
                    OpStatus st = statuses.get(i);
                    if (st.state() == OpState.COMPLETED) {
                        done += r.length();
                        for (Part p : r.parts()) {
                            if (remaining.merge(p.dest().spec().name(), -p.length(), Long::sum) == 0) {
                                tensorsDone++;
                            }
                        }
                    } else if (r.attempt() >= retries) {
                        throw new WeightLoaderException("reading " + r.describe() + " from " + source() + " via "
                                + engine.name() + " failed after " + (r.attempt() + 1) + " attempt(s): " + st.detail());
                    } else {
                        if (retried++ == 0) {
                            firstRetry = r.describe() + ": " + st.detail();
                        }
                        // retry first, so a persistent failure exhausts its attempts quickly
                        queue.addFirst(r.retry());
                    }
                }
                if (retried > 0) {
                    LOG.warn("retrying {} failed read(s) from {}; first: {}", retried, source(), firstRetry);
                    LockSupport.parkNanos(Math.min(deadline - System.nanoTime(), 200_000_000L));
                }
                request.progress().onProgress(done, total, tensorsDone, tensorsTotal);
            }
            if (cap > 0) {
                // the last batch went at full speed: wait so that the whole load averages no more than the cap
                throttle(tStart, submitted, cap, deadline);
            }
        } catch (RuntimeException e) {
            dropPeer(m.session());
            throw e;
        } finally {
            engine.unregisterLocal(local);
        }
        request.progress().onProgress(done, total, tensorsDone, tensorsTotal);
        double transferSeconds = (System.nanoTime() - tTransfer) / 1e9;
        // the seed's weights must not have changed under us; checksums against the seed's
        List<TensorReport> reports = RemoteLoads.verify(seed, rank, m, request, source());
        double secs = (System.nanoTime() - t0) / 1e9;
        String device = request.tensors().isEmpty() ? "cpu" : request.tensors().get(0).region().device().toString();
        return new LoadReport(name(), engine.name(), source(), device, reports, total, secs, null,
                phases(manifestSeconds, transferSeconds));
    }

    /** Polls every read to a final state, in order (reads finish roughly in order), until the deadline. */
    private void awaitFinal(Batch batch, long deadline, List<Read> slices, long done, long total) {
        long pause = 20_000;
        int next = 0;
        while (next < batch.size()) {
            if (batch.status(next).isFinal()) {
                next++;
                pause = 20_000;
                continue;
            }
            if (System.nanoTime() > deadline) {
                int pending = 0;
                for (int i = next; i < batch.size(); i++) {
                    if (!batch.status(i).isFinal()) {
                        pending++;
                    }
                }
                throw new WeightLoaderException("transfer from " + source() + " via " + engine.name()
                        + " did not finish within " + transferTimeout
                        + " (weight-loader.remote-instance.transfer-timeout): " + done + " of " + total
                        + " bytes done, " + pending + " read(s) pending, e.g. " + slices.get(next).describe());
            }
            LockSupport.parkNanos(pause);
            pause = Math.min(pause * 2, 200_000);
        }
    }

    private static void throttle(long tStart, long submitted, long cap, long deadline) {
        long due = tStart + (long) (submitted * 1e9 / cap);
        long now = System.nanoTime();
        if (due > now) {
            LockSupport.parkNanos(Math.min(due, deadline) - now);
        }
    }

    private static Map<String, Double> phases(double manifest, double transfer) {
        Map<String, Double> m = new java.util.LinkedHashMap<>();
        m.put("manifest", manifest);
        m.put("transfer", transfer);
        return m;
    }

    /** Connections to seeds, kept for the backend's life (a host may load more than once). */
    private final Map<String, OneSidedEngine.Peer> peers = new HashMap<>();

    private synchronized OneSidedEngine.Peer peer(String session) {
        return peers.computeIfAbsent(session, engine::open);
    }

    private synchronized void dropPeer(String session) {
        OneSidedEngine.Peer p = peers.remove(session);
        if (p != null) {
            try {
                p.close();
            } catch (RuntimeException e) {
                LOG.debug("closing the connection to {} failed", session, e);
            }
        }
    }

    @Override
    public void close() {
        synchronized (this) {
            peers.values().forEach(OneSidedEngine.Peer::close);
            peers.clear();
        }
        engine.close();
    }
}
