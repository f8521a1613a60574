package io.weightloader.backend.te;

import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.ProgressListener;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.backend.te.ReadPlan.Part;
import io.weightloader.backend.te.ReadPlan.Read;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.OneSidedEngine.ReadOp;
import io.weightloader.backend.te.engine.RegionMerger;
import io.weightloader.memory.Parallel;
import io.weightloader.memory.TensorArena;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.RemoteLoads;
import io.weightloader.seed.SeedClient;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.Map;

/**
 * Loads whose slices differ from the seed rank's: plans which parts of each slice come from which seed rank
 * ({@link Resharding}), reads from all the ranks at once (one thread per rank, each with its bounded batches, retries
 * and the load's deadline; short rows as whole spans through staging buffers where the engine reads each row as a
 * task), then checks every rank's generation and, with checksums, every block the client read against the seed's
 * block checksums.
 */
final class Resharder {
    /** Lanes of spans per seed rank, each with its own staging buffer. */
    static final int STAGING_LANES = 2;

    private final Transfers transfers;
    private final Peers peers;
    private final StagingPool staging;
    private final String stagingMode;
    private final Duration transferTimeout;
    private final String backend;
    private final String source;
    private final String seedPeer;
    private final int clientTp;

    /**
     * @param stagingMode {@code always}, {@code never}, or {@code auto} (when the engine reads each row as a task)
     * @param backend     the backend's name, for the report
     * @param source      the backend's seed rank, in messages
     * @param seedPeer    the seed's address, in messages
     */
    Resharder(Transfers transfers, Peers peers, StagingPool staging, String stagingMode, Duration transferTimeout,
              String backend, String source, String seedPeer, int clientTp) {
        this.transfers = transfers;
        this.peers = peers;
        this.staging = staging;
        this.stagingMode = stagingMode;
        this.transferTimeout = transferTimeout;
        this.backend = backend;
        this.source = source;
        this.seedPeer = seedPeer;
        this.clientTp = clientTp;
    }

    /**
     * Reads {@code request} from the seed ranks whose checked manifests are {@code ranks} (index = seed tp rank; they
     * agree on tp size, layout and engine), called {@code from} in messages.
     */
    LoadReport load(SeedClient bounded, Manifest ref, List<Manifest> ranks, String from, LoadRequest request,
                    OneSidedEngine engine, long sliceSize, long cap, long t0, long tPrepare,
                    Map<String, Double> phases) {
        int size = ranks.size();
        OneSidedEngine.Peer first = peers.get(engine, ranks.get(0).session());
        int maxRuns = first.maxRunsPerOp();
        // an engine that reads each row of a strided read as a task of its own (Mooncake) gets short rows as whole
        // spans through a staging buffer, placed row by row on this side (a 2-D copy)
        boolean staged = switch (stagingMode) {
            case "always" -> true;
            case "never" -> false;
            default -> first.cost(new ReadOp(0, 0, 1, 1, 1, 2)) > 1;
        };
        Resharding.Plan plan = Resharding.plan(request.tensors(), ranks, clientTp, sliceSize, maxRuns,
                staged ? StagingPool.STAGING_BYTES : 0, from);
        Progress progress = new Progress(request);
        List<MemoryRegion> local = RegionMerger.merge(request.tensors().stream().map(TensorDestination::bytes).toList());
        engine.registerLocal(local);
        long deadline = t0 + transferTimeout.toNanos();
        long tTransfer = System.nanoTime();
        phases.put("prepare", (tTransfer - tPrepare) / 1e9);
        List<Integer> used = new ArrayList<>();
        for (int k = 0; k < size; k++) {
            if (!plan.reads().get(k).isEmpty() || !plan.spans().get(k).isEmpty()) {
                used.add(k);
            }
        }
        // per seed rank at once: its strided or contiguous reads, and its spans in STAGING_LANES lanes, each lane
        // with a staging buffer of its own (one lane's read overlaps another's placement)
        int lanes = 1 + STAGING_LANES;
        long share = cap > 0 ? Math.max(1, cap / (used.size() * (long) lanes)) : 0;
        List<Runnable> work = new ArrayList<>();
        for (int k : used) {
            String session = ranks.get(k).session();
            List<Runnable> rankWork = new ArrayList<>();
            Deque<Read> queue = new ArrayDeque<>(plan.reads().get(k));
            rankWork.add(() -> transfers.run(engine, peers.get(engine, session), queue, progress, sliceSize, share,
                    deadline, "seed " + seedPeer + " rank tp" + k));
            List<List<Resharding.Span>> byLane = new ArrayList<>();
            for (int l = 0; l < STAGING_LANES; l++) {
                byLane.add(new ArrayList<>());
            }
            List<Resharding.Span> spans = plan.spans().get(k);
            for (int i = 0; i < spans.size(); i++) {
                byLane.get(i % STAGING_LANES).add(spans.get(i));
            }
            for (List<Resharding.Span> lane : byLane) {
                if (!lane.isEmpty()) {
                    rankWork.add(() -> staged(engine, peers.get(engine, session), lane, request, progress, sliceSize,
                            share, deadline));
                }
            }
            for (Runnable w : rankWork) {
                work.add(() -> {
                    try {
                        w.run();
                    } catch (WeightLoaderException e) {
                        peers.drop(session);
                        throw e;
                    } catch (RuntimeException e) {
                        peers.drop(session);
                        throw new WeightLoaderException("resharded load from " + from + " failed: " + e, e);
                    }
                });
            }
        }
        try {
            Parallel.of("weightloader-reshard", Math.max(1, used.size() * lanes),
                    "resharded load from " + from + " failed", "load from " + from + " interrupted").run(work);
        } finally {
            engine.unregisterLocal(local);
        }
        progress.report();
        long tVerify = System.nanoTime();
        phases.put("transfer", (tVerify - tTransfer) / 1e9);
        for (int k : used) {
            RemoteLoads.checkGeneration(bounded, new RankKey(k, ref.pp()), ranks.get(k).generation(),
                    from + " rank tp" + k);
        }
        List<TensorReport> reports = Resharding.verify(request, plan.checks(), from);
        long end = System.nanoTime();
        phases.put("verify", (end - tVerify) / 1e9);
        String device = request.tensors().isEmpty() ? "cpu" : request.tensors().get(0).region().device().toString();
        return LoadReport.builder(backend).engine(engine.name()).source(from + ", resharded into rank tp" + clientTp)
                .device(device).tensors(reports).totalBytes(request.totalBytes()).seconds((end - t0) / 1e9)
                .phases(phases).build();
    }

    /**
     * The spans of one seed rank: packed into a staging buffer on the destinations' device, read contiguously (bounded
     * batches, retries, the deadline), then placed row by row with a 2-D copy; the buffer is registered with the engine
     * for the duration.
     */
    private void staged(OneSidedEngine engine, OneSidedEngine.Peer peer, List<Resharding.Span> spans,
                        LoadRequest request, Progress progress, long sliceSize, long cap, long deadline) {
        if (spans.isEmpty()) {
            return;
        }
        Device device = spans.get(0).dest().region().device();
        TensorArena buffers = staging.take(engine, device);
        boolean ok = false;
        try {
            MemoryRegion buffer = buffers.destinations().get(0).region();
            long size = buffer.length();
            Progress wave = new Progress(request.withProgress(ProgressListener.NONE));
            int i = 0;
            while (i < spans.size()) {
                List<Read> reads = new ArrayList<>();
                List<long[]> placed = new ArrayList<>(); // span index, staging offset
                long off = 0;
                int j = i;
                while (j < spans.size() && (j == i || off + spans.get(j).bytes() <= size)) {
                    Resharding.Span sp = spans.get(j);
                    placed.add(new long[]{j, off});
                    for (long at = 0; at < sp.bytes(); at += sliceSize) {
                        long n = Math.min(sliceSize, sp.bytes() - at);
                        reads.add(new Read(buffer.address() + off + at, sp.remote() + at, n,
                                List.of(new Part(sp.dest(), sp.dstOffset(), 0)), 0));
                    }
                    off += (sp.bytes() + 255) / 256 * 256;
                    j++;
                }
                transfers.run(engine, peer, new ArrayDeque<>(reads), wave, sliceSize, cap, deadline, source);
                for (long[] p : placed) {
                    Resharding.Span sp = spans.get((int) p[0]);
                    DeviceCopies.copy2D(sp.dest().region(), sp.dstOffset(), sp.copy().dstStride(), buffer, p[1],
                            sp.copy().srcStride(), sp.copy().length(), sp.rows());
                    progress.staged(sp.dest(), sp.useful());
                }
                i = j;
            }
            ok = true;
        } finally {
            staging.giveBack(engine, device, buffers, ok);
        }
    }
}
