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
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.backend.te.ReadPlan.Read;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.RegionMerger;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.RemoteLoads;
import io.weightloader.seed.SeedChangedException;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.SeedRefusedException;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Function;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The client of the non-disturbing path: fetches the seed's manifest, checks it against what the host expects
 * before any byte moves, then reads every tensor with one-sided reads in bounded batches (large tensors in
 * slices), polls each read to a final state under a deadline, retries failed slices a bounded number of
 * times, honours a bandwidth cap, and verifies checksums when asked. Any failure is an error.
 */
final class TransferEngineBackend implements WeightLoaderBackend, SeedReads {
    private static final Logger LOG = LoggerFactory.getLogger(TransferEngineBackend.class);

    private final SeedClient seed;
    private final RankKey rank;
    private final Function<String, OneSidedEngine> engines;
    private final TransferEngineSettings settings;
    private final Duration transferTimeout;
    private final int retries;
    private final boolean seedOnThisHost;
    private final Transfers transfers;
    private final Peers peers = new Peers();
    private final StagingPool staging = new StagingPool();
    private final Resharder resharder;
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
        this.transfers = new Transfers(settings.batchSize(), settings.batchesInFlight(), retries, transferTimeout);
        this.resharder = new Resharder(transfers, peers, staging, settings.reshardStaging(), transferTimeout, name(),
                source(), seed.peer(), rank.tp());
    }

    @Override
    public String name() {
        return TransferEngineSettings.NAME;
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
    @Override
    public synchronized void remember(Manifest m) {
        manifest = m;
    }

    @Override
    public Duration transferTimeout() {
        return transferTimeout;
    }

    @Override
    public synchronized String engine() {
        return engine != null ? engine.name() : configuredEngine(settings);
    }

    /** The engine {@code settings} name, before a seed's manifest says which transport it serves. */
    static String configuredEngine(TransferEngineSettings settings) {
        return settings.engine().equals("builtin") ? "builtin-tcp"
                : settings.protocol().map(p -> settings.engine() + "-" + p)
                        .orElse(settings.engine() + " (with the seed's transport)");
    }

    /** The client of this backend's seed. */
    SeedClient seed() {
        return seed;
    }

    /** The engine for {@code transport}, started on first use. */
    @Override
    public synchronized OneSidedEngine engineFor(String transport) {
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
    @Override
    public Manifest checkedManifest(SeedClient seed) {
        Manifest m;
        try {
            m = seed.manifest(rank);
        } catch (SeedRefusedException e) {
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

    @Override
    public Manifest checkManifest(Manifest m) {
        if (m.serves() != null && !m.serves().containsKey(TransferEngineSettings.NAME)) {
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

    static String servedEngine(Manifest m) {
        return SeedReads.servedEngine(m);
    }

    /** The transport of a checked manifest. */
    @Override
    public String transport(Manifest m) {
        return servedEngine(m).substring(settings.enginePrefix().length());
    }

    /** Reads of at most this many bytes over {@code transport}: the setting, smaller under a bandwidth cap. */
    @Override
    public long sliceSize(String transport) {
        long slice = settings.sliceSizeFor(transport);
        long cap = settings.bandwidthLimit();
        return cap > 0 ? Math.max(1 << 20, Math.min(slice, cap / 20)) : slice;
    }

    /** Destinations this engine and transport can fill, or an error naming what to change. */
    @Override
    public void checkDestinations(LoadRequest request, String transport) {
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
        if (!strategy.equals("star") || settings.multiSource().several()) {
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

    @Override
    public LoadReport loadWith(SeedClient bounded, Manifest m, LoadRequest request, long t0,
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
        Deque<Read> queue = new ArrayDeque<>(ReadPlan.plan(request.tensors(), m, sliceSize));
        Progress progress = new Progress(request);
        List<MemoryRegion> local = RegionMerger.merge(request.tensors().stream()
                .map(d -> d.region().slice(0, d.byteSize())).toList());
        engine.registerLocal(local);
        long deadline = t0 + transferTimeout.toNanos();
        long tTransfer = System.nanoTime();
        phases.put("prepare", (tTransfer - tPrepare) / 1e9);
        try {
            transfers.run(engine, peers.get(engine, m.session()), queue, progress, sliceSize, cap, deadline, source());
        } catch (RuntimeException e) {
            peers.drop(m.session());
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
        return LoadReport.builder(name()).engine(engine.name()).source(source()).device(device).tensors(reports)
                .totalBytes(request.totalBytes()).seconds((end - t0) / 1e9).phases(phases).build();
    }

    /**
     * A load whose slices differ from the seed rank's: fetches and checks every seed rank's manifest, then reads
     * from all the ranks at once ({@link Resharder}).
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
            if (mk.tpSizeOrOne() != size || !Objects.equals(mk.layout(), ref.layout())
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
        return resharder.load(bounded, ref, ranks, from, request, engine, sliceSize, cap, t0, tPrepare, phases);
    }

    @Override
    public Transfers transfers() {
        return transfers;
    }

    @Override
    public Peers peers() {
        return peers;
    }

    @Override
    public void close() {
        synchronized (this) {
            staging.close(engine);
            peers.close();
            if (engine != null) {
                engine.close();
            }
        }
    }
}
