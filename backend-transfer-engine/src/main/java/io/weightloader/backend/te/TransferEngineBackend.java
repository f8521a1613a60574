package io.weightloader.backend.te;

import io.weightloader.api.Checksums;
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

    private record Slice(TensorDestination dest, long offset, long length, long remote, int attempt) {
        ReadOp op() {
            return new ReadOp(dest.region().address() + offset, remote + offset, length);
        }

        String describe() {
            return "tensor '" + dest.spec().name() + "' bytes [" + offset + ", " + (offset + length) + ")";
        }
    }

    @Override
    public LoadReport load(LoadRequest request) {
        long t0 = System.nanoTime();
        Manifest m = checkedManifest();
        synchronized (this) {
            manifest = m;
        }
        TensorMatcher.check(source(), m.specs(), request.specs(), request.ignoreExtraTensors());
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
        Deque<Slice> queue = new ArrayDeque<>();
        Map<String, Long> remaining = new HashMap<>();
        for (TensorDestination d : request.tensors()) {
            long bytes = d.spec().byteSize();
            remaining.put(d.spec().name(), bytes);
            long remote = m.entry(d.spec().name()).address();
            for (long off = 0; off < bytes; off += sliceSize) {
                queue.add(new Slice(d, off, Math.min(sliceSize, bytes - off), remote, 0));
            }
        }
        List<MemoryRegion> local = RegionMerger.merge(request.tensors().stream()
                .map(d -> d.region().slice(0, d.spec().byteSize())).toList());
        engine.registerLocal(local);
        long total = request.totalBytes();
        int tensorsTotal = request.tensors().size();
        int tensorsDone = (int) remaining.values().stream().filter(b -> b == 0).count();
        long done = 0;
        long deadline = t0 + transferTimeout.toNanos();
        try (OneSidedEngine.Peer peer = engine.open(m.session())) {
            int maxBatch = Math.min(settings.batchSize(), peer.maxBatchSize());
            long maxBatchBytes = cap > 0 ? Math.max(sliceSize, cap / 10) : Long.MAX_VALUE;
            long submitted = 0;
            long tStart = System.nanoTime();
            while (!queue.isEmpty()) {
                List<Slice> slices = new ArrayList<>();
                long batchBytes = 0;
                while (!queue.isEmpty() && slices.size() < maxBatch
                        && (slices.isEmpty() || batchBytes + queue.peek().length() <= maxBatchBytes)) {
                    Slice s = queue.poll();
                    slices.add(s);
                    batchBytes += s.length();
                }
                if (cap > 0) {
                    throttle(tStart, submitted, cap, deadline);
                }
                submitted += batchBytes;
                Batch batch = peer.submit(slices.stream().map(Slice::op).toList());
                List<OpStatus> statuses = new ArrayList<>(slices.size());
                try {
                    awaitFinal(batch, deadline, slices, done, total);
                    for (int i = 0; i < slices.size(); i++) {
                        statuses.add(batch.status(i));
                    }
                } finally {
                    if (!batch.release()) {
                        LOG.warn("engine {} could not release a batch with reads in flight", engine.name());
                    }
                }
                int retried = 0;
                String firstRetry = null;
                for (int i = 0; i < slices.size(); i++) {
                    Slice s = slices.get(i);
                    OpStatus st = statuses.get(i);
                    if (st.state() == OpState.COMPLETED) {
                        done += s.length();
                        long left = remaining.merge(s.dest().spec().name(), -s.length(), Long::sum);
                        if (left == 0) {
                            tensorsDone++;
                        }
                    } else if (s.attempt() >= retries) {
                        throw new WeightLoaderException("reading " + s.describe() + " from " + source() + " via "
                                + engine.name() + " failed after " + (s.attempt() + 1) + " attempt(s): " + st.detail());
                    } else {
                        if (retried++ == 0) {
                            firstRetry = s.describe() + ": " + st.detail();
                        }
                        // retry first, so a persistent failure exhausts its attempts quickly
                        queue.addFirst(new Slice(s.dest(), s.offset(), s.length(), s.remote(), s.attempt() + 1));
                    }
                }
                if (retried > 0) {
                    LOG.warn("retrying {} failed read(s) from {}; first: {}", retried, source(), firstRetry);
                    LockSupport.parkNanos(Math.min(deadline - System.nanoTime(), 200_000_000L));
                }
                request.progress().onProgress(done, total, tensorsDone, tensorsTotal);
            }
        } finally {
            engine.unregisterLocal(local);
        }
        request.progress().onProgress(done, total, tensorsDone, tensorsTotal);
        // the seed's weights must not have changed under us
        String after = seed.generation(rank);
        if (!after.equals(m.generation())) {
            throw new WeightLoaderException(source() + " changed its weights during the load (generation "
                    + m.generation() + " -> " + after + "); nothing was loaded, load again");
        }
        List<TensorReport> reports = new ArrayList<>();
        for (TensorDestination d : request.tensors()) {
            String sha = null;
            if (request.checksum()) {
                sha = Checksums.sha256(d.region(), d.spec().byteSize());
                String theirs = m.entry(d.spec().name()).sha256();
                if (theirs != null && !theirs.equals(sha)) {
                    throw new WeightLoaderException("tensor '" + d.spec().name() + "' read from " + source()
                            + " has SHA-256 " + sha + " but the seed published " + theirs);
                }
            }
            reports.add(TensorReport.of(d.spec(), sha));
        }
        double secs = (System.nanoTime() - t0) / 1e9;
        String device = request.tensors().isEmpty() ? "cpu" : request.tensors().get(0).region().device().toString();
        return new LoadReport(name(), engine.name(), source(), device, reports, total, secs, null);
    }

    /** Polls every read to a final state, in order (reads finish roughly in order), until the deadline. */
    private void awaitFinal(Batch batch, long deadline, List<Slice> slices, long done, long total) {
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

    @Override
    public void close() {
        engine.close();
    }
}
