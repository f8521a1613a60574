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
import io.weightloader.seed.Manifest;
import io.weightloader.seed.RemoteLoads;
import io.weightloader.seed.SeedChangedException;
import io.weightloader.seed.SeedClient;
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
import java.util.HashSet;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Function;
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
    private final Function<String, OneSidedEngine> engines;
    private final TransferEngineSettings settings;
    private final Duration transferTimeout;
    private final int retries;
    private final boolean seedOnThisHost;
    private Manifest manifest;
    /** Started for the transport of the first manifest checked; one transport for the backend's life. */
    private OneSidedEngine engine;

    /**
     * @param engines        starts this client's engine for a transport (what the seed serves)
     * @param seedOnThisHost whether the seed is on this machine (nvlink_intra reaches only such seeds)
     */
    TransferEngineBackend(SeedClient seed, RankKey rank, Function<String, OneSidedEngine> engines,
                          TransferEngineSettings settings, Duration transferTimeout, int retries,
                          boolean seedOnThisHost) {
        this.seed = seed;
        this.rank = rank;
        this.engines = engines;
        this.settings = settings;
        this.transferTimeout = transferTimeout;
        this.retries = retries;
        this.seedOnThisHost = seedOnThisHost;
    }

    @Override
    public String name() {
        return TransferEngineProvider.NAME;
    }

    /** Slices of any tp size: rank to rank when they match the seed's, resharded otherwise. */
    @Override
    public boolean loadsSlices() {
        return true;
    }

    @Override
    public String source() {
        return "seed " + seed.peer() + " rank " + rank;
    }

    /** Keeps {@code m} for the next load (see {@link #load}). */
    synchronized void remember(Manifest m) {
        manifest = m;
    }

    Duration transferTimeout() {
        return transferTimeout;
    }

    @Override
    public synchronized String engine() {
        if (engine != null) {
            return engine.name();
        }
        return settings.engine().equals("builtin") ? "builtin-tcp"
                : settings.protocol().map(p -> settings.engine() + "-" + p)
                        .orElse(settings.engine() + " (with the seed's transport)");
    }

    /** The engine for {@code transport}, started on first use. */
    synchronized OneSidedEngine engineFor(String transport) {
        if (engine == null) {
            engine = engines.apply(transport);
        } else if (!engine.name().equals(settings.enginePrefix() + transport)) {
            throw new WeightLoaderException(source() + " now serves transport " + transport + ", but this client's"
                    + " engine was started for " + engine.name() + "; open a new loader");
        }
        return engine;
    }

    @Override
    public synchronized List<TensorSpec> available() {
        if (manifest == null) {
            manifest = checkedManifest(seed);
        }
        return manifest.specs();
    }

    /**
     * The manifest of this client's rank; when the seed has no such rank (a seed of a smaller tp size), that of its
     * rank tp0 of the same pp stage, whose tp size and slices the load then reshards from.
     */
    Manifest checkedManifest(SeedClient seed) {
        Manifest m;
        try {
            m = seed.manifest(rank);
        } catch (io.weightloader.seed.SeedRefusedException e) {
            if (e.status() != 404 || rank.tp() == 0) {
                throw e;
            }
            m = seed.manifest(new RankKey(0, rank.pp()));
            if (m.tpSize() == null || m.tpSizeOrOne() > rank.tp()) {
                throw e; // not a smaller seed: a rank is missing
            }
        }
        return checkManifest(m);
    }

    Manifest checkManifest(Manifest m) {
        if (m.serves() != null && !m.serves().containsKey(TransferEngineProvider.NAME)) {
            throw new WeightLoaderException(source() + " does not serve transfer_engine clients; it serves "
                    + m.serves().keySet() + ". Load with weight-loader.remote-instance.backend = "
                    + m.serves().keySet().iterator().next() + " (--remote-instance-weight-loader-backend), or start the"
                    + " seed with transfer_engine in weight-loader.seed.serve");
        }
        String served = servedEngine(m);
        if (!served.startsWith(settings.enginePrefix())) {
            throw new WeightLoaderException(source() + " serves its weights with engine " + served
                    + ", but this client uses " + engine() + " (" + TransferEngineSettings.PATH
                    + ".engine); set both sides to the same engine");
        }
        String transport = transport(m);
        if (settings.protocol().isPresent() && !settings.protocol().get().equals(transport)) {
            throw new WeightLoaderException(source() + " serves transport " + transport + ", but this client is"
                    + " configured for " + settings.protocol().get() + " (" + TransferEngineSettings.PATH
                    + ".protocol, load --protocol). Leave the protocol unset to use the seed's, or set it to "
                    + transport);
        }
        if (transport.equals("nvlink_intra") && !seedOnThisHost) {
            throw new WeightLoaderException(source() + " serves transport nvlink_intra, which reaches GPUs of one host"
                    + " only, and this seed is on another host. Start the seed with a transport that crosses hosts"
                    + " (rdma, or tcp)");
        }
        return m;
    }

    /** The engine a manifest serves transfer_engine clients with (older seeds name only one engine). */
    static String servedEngine(Manifest m) {
        return m.serves() != null ? m.serves().get(TransferEngineProvider.NAME) : m.engine();
    }

    /** The transport of a checked manifest. */
    String transport(Manifest m) {
        return servedEngine(m).substring(settings.enginePrefix().length());
    }

    /** Reads of at most this many bytes over {@code transport}: the setting, smaller under a bandwidth cap. */
    long sliceSize(String transport) {
        long slice = settings.sliceSizeFor(transport);
        long cap = settings.bandwidthLimit();
        return cap > 0 ? Math.max(1 << 20, Math.min(slice, cap / 20)) : slice;
    }

    /** Destinations this engine and transport can fill, or an error naming what to change. */
    void checkDestinations(LoadRequest request, String transport) {
        for (TensorDestination d : request.tensors()) {
            if (!d.region().device().isHost() && settings.engine().equals("builtin")) {
                throw new WeightLoaderException("engine builtin-tcp fills host memory only; tensor '"
                        + d.spec().name() + "' has a " + d.region().device() + " destination (load into cpu, or use"
                        + " engine = mooncake on both sides)");
            }
            if (d.region().device().isHost() && d.byteSize() > 0 && transport.equals("nvlink_intra")) {
                throw new WeightLoaderException(source() + " serves transport nvlink_intra, which copies GPU memory"
                        + " into GPU memory only, but tensor '" + d.spec().name() + "' has a host destination. Load"
                        + " into cuda:N (weight-loader.device), or load from a seed that serves tcp or rdma");
            }
        }
    }

    /** Part of one tensor covered by a read. */
    record Part(TensorDestination dest, long offset, long length) {
    }

    /**
     * One read: a range contiguous on both sides, covering parts of one or more tensors (adjacent tensors of the
     * seed's and the host's arenas are read together, up to the slice size); or, resharding, {@code count} runs of
     * {@code length} bytes (a slice's rows) at strides {@code localStride} and {@code remoteStride}, of one tensor.
     */
    record Read(long local, long remote, long length, List<Part> parts, int attempt, long localStride,
                long remoteStride, int count) {
        Read(long local, long remote, long length, List<Part> parts, int attempt) {
            this(local, remote, length, parts, attempt, length, length, 1);
        }

        ReadOp op() {
            return new ReadOp(local, remote, length, localStride, remoteStride, count);
        }

        Read retry() {
            return new Read(local, remote, length, parts, attempt + 1, localStride, remoteStride, count);
        }

        long bytes() {
            return length * count;
        }

        String describe() {
            Part p = parts.get(0);
            return "tensor '" + p.dest().spec().name() + "' bytes [" + p.offset() + ", " + (p.offset() + p.length())
                    + ")" + (count > 1 ? " (" + count + " runs of " + length + ")" : "")
                    + (parts.size() > 1 ? " and " + (parts.size() - 1) + " more tensor(s)" : "");
        }
    }

    /** Cuts the request into reads of at most {@code sliceSize}, joining tensors adjacent on both sides. */
    static List<Read> plan(List<TensorDestination> tensors, Manifest m, long sliceSize) {
        List<TensorDestination> order = new ArrayList<>();
        for (TensorDestination d : tensors) {
            if (d.byteSize() > 0) {
                order.add(d);
            }
        }
        Map<String, Manifest.Entry> published = m.entriesByName();
        Map<TensorDestination, Long> remote = new IdentityHashMap<>(order.size() * 2);
        for (TensorDestination d : order) {
            remote.put(d, published.get(d.spec().name()).address());
        }
        order.sort(java.util.Comparator.comparingLong(remote::get));
        List<Read> reads = new ArrayList<>();
        int i = 0;
        while (i < order.size()) {
            // a run of tensors contiguous in the seed's memory and in the host's
            int j = i + 1;
            long localEnd = order.get(i).region().address() + order.get(i).byteSize();
            long remoteEnd = remote.get(order.get(i)) + order.get(i).byteSize();
            while (j < order.size() && order.get(j).region().address() == localEnd
                    && remote.get(order.get(j)) == remoteEnd
                    && order.get(j).region().device().equals(order.get(i).region().device())) {
                localEnd += order.get(j).byteSize();
                remoteEnd += order.get(j).byteSize();
                j++;
            }
            long runLocal = order.get(i).region().address();
            long runRemote = remote.get(order.get(i));
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
                    long partLen = Math.min(d.byteSize() - inTensor, off + len - at);
                    parts.add(new Part(d, inTensor, partLen));
                    at += partLen;
                    if (inTensor + partLen == d.byteSize()) {
                        tStart += d.byteSize();
                        t++;
                    }
                }
                reads.add(new Read(runLocal + off, runRemote + off, len, List.copyOf(parts), 0));
            }
            i = j;
        }
        return reads;
    }

    /**
     * Loads with the manifest this backend already holds (from {@link #available()} or the last load) when it has
     * one, so a load costs no manifest round trip: the generation check at the end proves the seed did not change
     * between that manifest and the last byte. Should it have changed (or the reads fail and it has changed), the
     * manifest is fetched again and the load done once more, with a warning. With no manifest held, it is fetched
     * first.
     */
    @Override
    public LoadReport load(LoadRequest request) {
        long t0 = System.nanoTime();
        String strategy = settings.sourceStrategy();
        if (!strategy.equals("star")) {
            return new DirectoryLoad(this, settings, seed, request, strategy, t0, transferTimeout.toNanos()).run();
        }
        // the whole load, control-plane requests included, ends within transfer-timeout plus one request-timeout
        SeedClient bounded = seed.until(t0 + transferTimeout.toNanos() + seed.requestTimeout().toNanos());
        Manifest held;
        synchronized (this) {
            held = manifest;
        }
        Map<String, Double> phases = new LinkedHashMap<>();
        if (held != null) {
            try {
                return loadWith(bounded, held, request, t0, phases);
            } catch (WeightLoaderException e) {
                // the final check already knows the seed's generation; other failures ask for it
                String now = e instanceof SeedChangedException changed ? changed.after() : currentGeneration(bounded, e);
                if (now.equals(held.generation())) {
                    throw e;
                }
                LOG.warn("{} changed its weights since this client fetched its manifest (generation {} -> {}); "
                        + "fetching the manifest again and loading again", source(), held.generation(), now);
                phases.clear();
                phases.put("stale-manifest", (System.nanoTime() - t0) / 1e9);
            }
        }
        long tManifest = System.nanoTime();
        Manifest m = checkedManifest(bounded);
        synchronized (this) {
            manifest = m;
        }
        phases.put("manifest", (System.nanoTime() - tManifest) / 1e9);
        return loadWith(bounded, m, request, t0, phases);
    }

    /** The seed's generation now; a failure to ask is added to {@code failure}, which is then thrown. */
    private String currentGeneration(SeedClient seed, WeightLoaderException failure) {
        try {
            return seed.generation(manifest != null ? new RankKey(manifest.tp(), manifest.pp()) : rank);
        } catch (RuntimeException e) {
            failure.addSuppressed(e);
            throw failure;
        }
    }

    LoadReport loadWith(SeedClient bounded, Manifest m, LoadRequest request, long t0,
                                Map<String, Double> phases) {
        long tPrepare = System.nanoTime();
        TensorMatcher.check(source(), m.specs(), request.specs(), request.ignoreExtraTensors());
        String transport = transport(m);
        checkDestinations(request, transport);
        OneSidedEngine engine = engineFor(transport);

        long cap = settings.bandwidthLimit();
        long sliceSize = sliceSize(transport);
        Map<String, Manifest.Entry> published = m.entriesByName();
        for (TensorDestination d : request.tensors()) {
            if (!d.holdsSameAs(published.get(d.spec().name()).slice())) {
                // another tp size or layout: read each slice's parts from the seed ranks that hold them
                return loadResharded(bounded, m, request, t0, phases, tPrepare, engine, sliceSize, cap);
            }
        }
        Deque<Read> queue = new ArrayDeque<>(plan(request.tensors(), m, sliceSize));
        Progress progress = new Progress(request);
        List<MemoryRegion> local = RegionMerger.merge(request.tensors().stream()
                .map(d -> d.region().slice(0, d.byteSize())).toList());
        engine.registerLocal(local);
        long deadline = t0 + transferTimeout.toNanos();
        long tTransfer = System.nanoTime();
        phases.put("prepare", (tTransfer - tPrepare) / 1e9);
        try {
            transfer(engine, peer(engine, m.session()), queue, progress, sliceSize, cap, deadline);
        } catch (RuntimeException e) {
            dropPeer(m.session());
            throw e;
        } finally {
            engine.unregisterLocal(local);
        }
        progress.report();
        long tVerify = System.nanoTime();
        phases.put("transfer", (tVerify - tTransfer) / 1e9);
        // the seed's weights must not have changed under us; checksums against the seed's
        List<TensorReport> reports = RemoteLoads.verify(bounded, new RankKey(m.tp(), m.pp()), m, request, source());
        long end = System.nanoTime();
        phases.put("verify", (end - tVerify) / 1e9);
        String device = request.tensors().isEmpty() ? "cpu" : request.tensors().get(0).region().device().toString();
        return new LoadReport(name(), engine.name(), source(), device, reports, request.totalBytes(),
                (end - t0) / 1e9, null, phases);
    }

    /**
     * A load whose slices differ from the seed rank's: fetches every seed rank's manifest, plans which parts of each
     * slice come from which rank ({@link Resharding}), reads from all the ranks at once (one thread per rank, each
     * with its bounded batches, retries and the load's deadline), then checks every rank's generation and, with
     * checksums, every block the client read against the seed's block checksums.
     */
    private LoadReport loadResharded(SeedClient bounded, Manifest ref, LoadRequest request, long t0,
                                     Map<String, Double> phases, long tPrepare, OneSidedEngine engine, long sliceSize,
                                     long cap) {
        if (ref.tpSize() == null) {
            throw new WeightLoaderException(source() + " does not say how its weights are split (an older seed), and"
                    + " this client asks for other slices than it holds; load with the seed's tp size and layout");
        }
        int size = ref.tpSize();
        List<Manifest> ranks = new ArrayList<>();
        for (int k = 0; k < size; k++) {
            Manifest mk = k == ref.tp() ? ref : checkManifest(bounded.manifest(new RankKey(k, ref.pp())));
            if (mk.tpSizeOrOne() != size || !java.util.Objects.equals(mk.layout(), ref.layout())
                    || !servedEngine(mk).equals(servedEngine(ref))) {
                throw new WeightLoaderException(source() + ": seed rank tp" + k + " publishes tp size "
                        + mk.tpSize() + ", layout " + mk.layout() + ", engine " + servedEngine(mk) + ", rank tp"
                        + ref.tp() + " " + size + ", " + ref.layout() + ", " + servedEngine(ref)
                        + "; one seed's ranks must agree");
            }
            TensorMatcher.check(source() + " rank tp" + k, mk.specs(), request.specs(), request.ignoreExtraTensors());
            ranks.add(mk);
        }
        String from = "seed " + seed.peer() + " tp size " + size + " (" + ref.layout() + ")";
        OneSidedEngine.Peer first = peer(engine, ranks.get(0).session());
        int maxRuns = first.maxRunsPerOp();
        // an engine that reads each row of a strided read as a task of its own (Mooncake) gets short rows as whole
        // spans through a staging buffer, placed row by row on this side (a 2-D copy)
        boolean staged = switch (settings.reshardStaging()) {
            case "always" -> true;
            case "never" -> false;
            default -> first.cost(new ReadOp(0, 0, 1, 1, 1, 2)) > 1;
        };
        Resharding.Plan plan = Resharding.plan(request.tensors(), ranks, rank.tp(), sliceSize, maxRuns,
                staged ? STAGING_BYTES : 0, from);
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
        java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(
                Math.max(1, used.size() * (1 + STAGING_LANES)), io.weightloader.memory.Threads.daemon("weightloader-reshard"));
        try {
            List<java.util.concurrent.Future<?>> futures = new ArrayList<>();
            // per seed rank at once: its strided or contiguous reads, and its spans in STAGING_LANES lanes, each lane
            // with a staging buffer of its own (one lane's read overlaps another's placement)
            int lanes = 1 + STAGING_LANES;
            long share = cap > 0 ? Math.max(1, cap / (used.size() * (long) lanes)) : 0;
            for (int k : used) {
                String session = ranks.get(k).session();
                List<Runnable> work = new ArrayList<>();
                Deque<Read> queue = new ArrayDeque<>(plan.reads().get(k));
                work.add(() -> transfer(engine, peer(engine, session), queue, progress, sliceSize, share, deadline,
                        "seed " + seed.peer() + " rank tp" + k));
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
                        work.add(() -> staged(engine, peer(engine, session), lane, request, progress, sliceSize, share,
                                deadline));
                    }
                }
                for (Runnable w : work) {
                    futures.add(pool.submit(() -> {
                        try {
                            w.run();
                        } catch (RuntimeException e) {
                            dropPeer(session);
                            throw e;
                        }
                        return null;
                    }));
                }
            }
            WeightLoaderException failure = null;
            for (java.util.concurrent.Future<?> f : futures) {
                try {
                    f.get();
                } catch (java.util.concurrent.ExecutionException e) {
                    if (failure == null) {
                        failure = e.getCause() instanceof WeightLoaderException w ? w
                                : new WeightLoaderException("resharded load from " + from + " failed: " + e.getCause(),
                                e.getCause());
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    futures.forEach(x -> x.cancel(true));
                    throw new WeightLoaderException("load from " + from + " interrupted", e);
                }
            }
            if (failure != null) {
                throw failure;
            }
        } finally {
            pool.shutdownNow();
            engine.unregisterLocal(local);
        }
        progress.report();
        long tVerify = System.nanoTime();
        phases.put("transfer", (tVerify - tTransfer) / 1e9);
        for (int k : used) {
            String now = bounded.generation(new RankKey(k, ref.pp()));
            if (!now.equals(ranks.get(k).generation())) {
                throw new SeedChangedException(from + " rank tp" + k + " changed its weights during the load (generation "
                        + ranks.get(k).generation() + " -> " + now + "); nothing was loaded, load again",
                        ranks.get(k).generation(), now);
            }
        }
        List<TensorReport> reports = Resharding.verify(request, plan.checks(), from);
        long end = System.nanoTime();
        phases.put("verify", (end - tVerify) / 1e9);
        String device = request.tensors().isEmpty() ? "cpu" : request.tensors().get(0).region().device().toString();
        return new LoadReport(name(), engine.name(), from + ", resharded into rank tp" + rank.tp(), device, reports,
                request.totalBytes(), (end - t0) / 1e9, null, phases);
    }

    /** Staging buffer per lane for the spans of a resharded load (Mooncake reads each row as a task). */
    static final long STAGING_BYTES = 256L << 20;
    /** Lanes of spans per seed rank, each with its own staging buffer. */
    static final int STAGING_LANES = 2;

    /**
     * The spans of one seed rank: packed into a staging buffer on the destinations' device, read contiguously (bounded
     * batches, retries, the deadline), then placed row by row with a 2-D copy; the buffer is registered with the engine
     * for the duration.
     */
    private void staged(OneSidedEngine engine, OneSidedEngine.Peer peer, List<Resharding.Span> spans, LoadRequest request,
                        Progress progress, long sliceSize, long cap, long deadline) {
        if (spans.isEmpty()) {
            return;
        }
        io.weightloader.api.Device device = spans.get(0).dest().region().device();
        io.weightloader.memory.TensorArena staging = takeStaging(engine, device);
        boolean ok = false;
        try {
            MemoryRegion buffer = staging.destinations().get(0).region();
            long size = buffer.length();
            Progress wave = new Progress(request.withProgress(io.weightloader.api.ProgressListener.NONE));
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
                transfer(engine, peer, new ArrayDeque<>(reads), wave, sliceSize, cap, deadline);
                for (long[] p : placed) {
                    Resharding.Span sp = spans.get((int) p[0]);
                    io.weightloader.memory.cuda.DeviceCopies.copy2D(sp.dest().region(), sp.dstOffset(),
                            sp.copy().dstStride(), buffer, p[1], sp.copy().srcStride(), sp.copy().length(), sp.rows());
                    progress.staged(sp.dest(), sp.useful());
                }
                i = j;
            }
            ok = true;
        } finally {
            returnStaging(engine, device, staging, ok);
        }
    }

    /**
     * Staging buffers kept for the backend's life, registered once (allocating and registering 256 MiB of GPU memory
     * per load cost more than a 4 GiB load over NVLink): one per seed rank being read at once.
     */
    private final Map<io.weightloader.api.Device, Deque<io.weightloader.memory.TensorArena>> stagingCache = new HashMap<>();

    private io.weightloader.memory.TensorArena takeStaging(OneSidedEngine engine, io.weightloader.api.Device device) {
        synchronized (stagingCache) {
            Deque<io.weightloader.memory.TensorArena> q = stagingCache.get(device);
            if (q != null && !q.isEmpty()) {
                return q.poll();
            }
        }
        io.weightloader.memory.TensorArena a = io.weightloader.memory.TensorArena.allocate(device,
                List.of(TensorSpec.of("staging", io.weightloader.api.DType.U8, STAGING_BYTES)));
        try {
            engine.registerLocal(List.of(a.destinations().get(0).region()));
        } catch (RuntimeException e) {
            a.close();
            throw e;
        }
        return a;
    }

    /** Back to the cache after a good load; after a failure its state is unknown, so it is freed. */
    private void returnStaging(OneSidedEngine engine, io.weightloader.api.Device device,
                               io.weightloader.memory.TensorArena staging, boolean ok) {
        if (ok) {
            synchronized (stagingCache) {
                stagingCache.computeIfAbsent(device, d -> new ArrayDeque<>()).add(staging);
            }
            return;
        }
        freeStaging(engine, staging);
    }

    private static void freeStaging(OneSidedEngine engine, io.weightloader.memory.TensorArena staging) {
        try {
            engine.unregisterLocal(List.of(staging.destinations().get(0).region()));
        } catch (RuntimeException e) {
            LOG.debug("unregistering a staging buffer failed", e);
        }
        staging.close();
    }

    /** Bytes and whole tensors done, reported to the request's listener. */
    static final class Progress {
        private final LoadRequest request;
        private final Map<String, Long> remaining = new HashMap<>();
        private final long total;
        private long done;
        private int tensorsDone;

        Progress(LoadRequest request) {
            this.request = request;
            this.total = request.totalBytes();
            for (TensorDestination d : request.tensors()) {
                remaining.put(d.spec().name(), d.byteSize());
                if (d.byteSize() == 0) {
                    tensorsDone++;
                }
            }
        }

        synchronized void completed(Read r) {
            done += r.bytes();
            for (Part p : r.parts()) {
                if (r.count() == 1) {
                    request.progress().onArrived(p.dest(), p.offset(), p.length());
                }
                if (remaining.merge(p.dest().spec().name(), -p.length(), Long::sum) == 0) {
                    tensorsDone++;
                }
            }
        }

        /**
         * The tensors not yet complete, in request order; one that was partly read is reset, to be read again whole
         * (after its source died).
         */
        synchronized List<TensorDestination> incomplete() {
            List<TensorDestination> out = new ArrayList<>();
            for (TensorDestination d : request.tensors()) {
                long left = remaining.get(d.spec().name());
                if (left > 0) {
                    done -= d.byteSize() - left;
                    remaining.put(d.spec().name(), d.byteSize());
                    out.add(d);
                }
            }
            return out;
        }

        /** The names of the tensors with bytes that are complete. */
        synchronized Set<String> complete() {
            Set<String> out = new HashSet<>();
            for (TensorDestination d : request.tensors()) {
                if (d.byteSize() > 0 && remaining.get(d.spec().name()) == 0) {
                    out.add(d.spec().name());
                }
            }
            return out;
        }

        /** {@code tensors} are to be read again whole (their bytes were wrong). */
        synchronized void reset(List<TensorDestination> tensors) {
            for (TensorDestination d : tensors) {
                long left = remaining.get(d.spec().name());
                if (left == 0 && d.byteSize() > 0) {
                    tensorsDone--;
                }
                done -= d.byteSize() - left;
                remaining.put(d.spec().name(), d.byteSize());
            }
        }

        /** Bytes of {@code d} placed from a staging buffer. */
        synchronized void staged(TensorDestination d, long bytes) {
            done += bytes;
            if (remaining.merge(d.spec().name(), -bytes, Long::sum) == 0) {
                tensorsDone++;
            }
        }

        synchronized void report() {
            request.progress().onProgress(done, total, tensorsDone, request.tensors().size());
        }
    }

    /** A submitted batch and the reads it holds. */
    private record InFlight(Batch batch, List<Read> reads) {
    }

    /**
     * Runs the reads: up to {@code batches-in-flight} batches at once, so the engine never waits for this thread
     * between batches; each batch is polled to a final state under the deadline, failed reads are retried (first)
     * until their attempts run out, and the submissions are paced to the bandwidth cap.
     */
    private void transfer(OneSidedEngine engine, OneSidedEngine.Peer peer, Deque<Read> queue, Progress progress,
                          long sliceSize, long cap, long deadline) {
        transfer(engine, peer, queue, progress, sliceSize, cap, deadline, source());
    }

    /** {@link #transfer} from the peer called {@code from} in messages (a relay, or this backend's seed). */
    void transfer(OneSidedEngine engine, OneSidedEngine.Peer peer, Deque<Read> queue, Progress progress, long sliceSize,
                  long cap, long deadline, String from) {
        // Mooncake's GPU transports open the peer's memory handles on the submitting thread, which needs a current
        // device: the destination's (a pool thread of a resharded load, or a host's own thread, may have none)
        Read head = queue.peek();
        if (head != null && !head.parts().get(0).dest().region().device().isHost()) {
            io.weightloader.memory.cuda.Cuda.use(head.parts().get(0).dest().region().device());
        }
        int maxBatch = Math.min(settings.batchSize(), peer.maxBatchSize());
        long maxBatchBytes = cap > 0 ? Math.max(sliceSize, cap / 10) : Long.MAX_VALUE;
        int depth = cap > 0 ? 1 : settings.batchesInFlight();
        Deque<InFlight> inFlight = new ArrayDeque<>();
        long submitted = 0;
        long tStart = System.nanoTime();
        try {
            while (!queue.isEmpty() || !inFlight.isEmpty()) {
                while (!queue.isEmpty() && inFlight.size() < depth) {
                    List<Read> reads = new ArrayList<>();
                    long batchBytes = 0;
                    int cost = 0;
                    while (!queue.isEmpty() && (reads.isEmpty() || cost + peer.cost(queue.peek().op()) <= maxBatch
                            && batchBytes + queue.peek().bytes() <= maxBatchBytes)) {
                        Read r = queue.poll();
                        reads.add(r);
                        cost += peer.cost(r.op());
                        batchBytes += r.bytes();
                    }
                    if (cap > 0) {
                        throttle(tStart, submitted, cap, deadline);
                    }
                    submitted += batchBytes;
                    inFlight.add(new InFlight(peer.submit(reads.stream().map(Read::op).toList()), reads));
                }
                InFlight f = inFlight.peek();
                List<OpStatus> statuses = new ArrayList<>(f.reads().size());
                awaitFinal(f.batch(), deadline, f.reads(), progress, from);
                for (int i = 0; i < f.reads().size(); i++) {
                    statuses.add(f.batch().status(i));
                }
                inFlight.poll();
                release(f);
                int retried = 0;
                String firstRetry = null;
                for (int i = 0; i < f.reads().size(); i++) {
                    Read r = f.reads().get(i);
                    OpStatus st = statuses.get(i);
                    if (st.state() == OpState.COMPLETED) {
                        continue; // reported as it completed (awaitFinal)
                    } else if (r.attempt() >= retries) {
                        throw new WeightLoaderException("reading " + r.describe() + " from " + from + " via "
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
                    LOG.warn("retrying {} failed read(s) from {}; first: {}", retried, from, firstRetry);
                    LockSupport.parkNanos(Math.min(deadline - System.nanoTime(), 200_000_000L));
                }
                progress.report();
            }
            if (cap > 0) {
                // the last batch went at full speed: wait so that the whole load averages no more than the cap
                throttle(tStart, submitted, cap, deadline);
            }
        } finally {
            // after a failure: batches still in flight are abandoned as safely as the engine can
            for (InFlight f : inFlight) {
                release(f);
            }
        }
    }

    private void release(InFlight f) {
        if (!f.batch().release()) {
            LOG.warn("engine {} could not release a batch with reads in flight", engine());
        }
    }

    /**
     * Polls every read to a final state, in order (reads finish roughly in order), until the deadline; each read that
     * completed is reported at once, not at the batch's end (a relay serves its bytes onwards as they arrive).
     */
    private void awaitFinal(Batch batch, long deadline, List<Read> slices, Progress progress, String from) {
        long pause = 20_000;
        int next = 0;
        while (next < batch.size()) {
            OpStatus st = batch.status(next);
            if (st.isFinal()) {
                if (st.state() == OpState.COMPLETED) {
                    progress.completed(slices.get(next));
                }
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
                throw new WeightLoaderException("transfer from " + from + " via " + engine()
                        + " did not finish within " + transferTimeout
                        + " (weight-loader.remote-instance.transfer-timeout): " + progress.done + " of " + progress.total
                        + " bytes done, " + pending + " read(s) pending, e.g. " + slices.get(next).describe());
            }
            if (Thread.currentThread().isInterrupted()) {
                // parkNanos returns at once for an interrupted thread: stop instead of spinning to the deadline
                throw new WeightLoaderException("load from " + from + " interrupted");
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

    /** Connections to seeds, kept for the backend's life (a host may load more than once). */
    private final Map<String, OneSidedEngine.Peer> peers = new HashMap<>();

    synchronized OneSidedEngine.Peer peer(OneSidedEngine engine, String session) {
        return peers.computeIfAbsent(session, engine::open);
    }

    synchronized void dropPeer(String session) {
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
            synchronized (stagingCache) {
                stagingCache.values().forEach(q -> q.forEach(a -> freeStaging(engine, a)));
                stagingCache.clear();
            }
            peers.values().forEach(OneSidedEngine.Peer::close);
            peers.clear();
            if (engine != null) {
                engine.close();
            }
        }
    }
}
