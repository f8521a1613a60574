package io.weightloader.seed;

import com.sun.net.httpserver.HttpExchange;
import io.weightloader.api.Device;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import java.io.IOException;
import java.time.Duration;
import java.util.Collection;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The seed's control plane: a small HTTP server (the JDK's, {@link SeedHttp}) that tells clients what the seed holds
 * ({@link PublishedRanks}) and how to read it. It never serves weight bytes itself; the engine does, and only from
 * registered weight memory.
 *
 * <p>Endpoints (GET, plus the POST endpoints publishers add; all but {@code /health} need {@code Authorization: Bearer <token>} when a token is
 * configured):
 * <ul>
 *   <li>{@code /health}: {@code {"status":"ok","ranks":[...]}}</li>
 *   <li>{@code /v1/manifest?tp=N&pp=M}: the rank's {@link Manifest}</li>
 *   <li>{@code /v1/session?tp=N&pp=M}: {@code {"engine","session","generation"}}</li>
 *   <li>{@code /get_remote_instance_transfer_engine_info?rank=N} and
 *       {@code /remote_instance_transfer_engine_info?rank=N} (optional {@code &pp=M}): SGLang's shape
 *       ({@link SglangEndpoints})</li>
 *   <li>the directory of a root seed's relays ({@link DirectoryEndpoints})</li>
 *   <li>{@code POST /release_memory_occupation} and {@code POST /resume_memory_occupation}: SGLang's memory saver
 *       ({@link MemoryEndpoints}), through the {@link MemoryControl} the host registers</li>
 * </ul>
 */
public final class SeedService implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(SeedService.class);

    private final SeedHttp http;
    private final BackendContext context;
    private final Map<String, SeedPublisherProvider> providers;
    private final PublishedRanks ranks;
    private final SglangEndpoints sglang;
    /** The directory of this root seed's relays and its endpoints (see {@link DirectoryEndpoints}). */
    private final DirectoryEndpoints directory;
    /** The memory saver's endpoints, answered through the hook the host registers. */
    private final MemoryEndpoints memory = new MemoryEndpoints();
    /** Told the rank whose weights stop being those published (an update in place, a release). */
    private final List<java.util.function.Consumer<RankKey>> changing = new java.util.concurrent.CopyOnWriteArrayList<>();
    private boolean started;
    private volatile boolean draining;
    private volatile long lastRequestNanos = System.nanoTime();

    private SeedService(SeedHttp http, BackendContext context, Map<String, SeedPublisherProvider> providers) {
        this.http = http;
        this.context = context;
        this.providers = providers;
        this.ranks = new PublishedRanks(context, providers);
        this.sglang = new SglangEndpoints(ranks);
        this.directory = new DirectoryEndpoints((ex, rank) -> {
            PublishedRanks.Published p = held(ex, rank);
            return p == null ? null : p.manifest();
        }, SeedHttp.MAX_BODY);
    }

    /**
     * Publishes every rank's tensors with each of {@code publishers} (the backends of {@code weight-loader.seed.serve},
     * as the host resolved them: {@code io.weightloader.host.Seeds}) and starts the control plane: {@link #bind} then
     * {@link #publish} then {@link #start()}.
     */
    public static SeedService start(BackendContext context, Map<String, SeedPublisherProvider> publishers,
                                    Map<RankKey, List<TensorDestination>> held) {
        Set<Device> devices = new LinkedHashSet<>();
        for (List<TensorDestination> tensors : held.values()) {
            devices.add(tensors.isEmpty() ? Device.CPU : tensors.get(0).region().device());
        }
        SeedService svc = bind(context, publishers, devices);
        try {
            svc.publish(held);
            svc.start();
        } catch (RuntimeException e) {
            svc.close();
            throw e;
        }
        return svc;
    }

    /**
     * Checks everything a seed needs before it loads a byte, and binds its control-plane port: each publisher (by
     * backend name) must be able to publish a seed's weights held on each of {@code devices}; a seed bound beyond
     * loopback needs a token. Which backends serve, and that they are installed, the host decides
     * ({@code io.weightloader.host.Seeds}). Nothing is served until {@link #start()}.
     *
     * @throws WeightLoaderConfigException naming the setting to change
     */
    public static SeedService bind(BackendContext context, Map<String, SeedPublisherProvider> publishers,
                                   Collection<Device> devices) {
        WeightLoaderSettings s = context.settings();
        if (publishers.isEmpty()) {
            throw new WeightLoaderConfigException("weight-loader.seed.serve", "a seed must serve some backend's"
                    + " clients: list transfer_engine and/or nccl (nothing would be served otherwise)");
        }
        for (SeedPublisherProvider publisher : publishers.values()) {
            for (Device d : devices) {
                publisher.validateSeed(context, d);
            }
        }
        if (!s.remote().groupPorts().isEmpty() && !s.seed().serve().contains("nccl")) {
            LOG.warn("weight-loader.remote-instance.send-weights-group-ports is ignored: this seed does not serve nccl"
                    + " (weight-loader.seed.serve = {})", s.seed().serve());
        }
        if (!s.seed().isLoopback() && s.remote().token().isEmpty()) {
            throw new WeightLoaderConfigException("weight-loader.remote-instance.token",
                    "a seed bound to " + s.seed().bindAddress() + " (beyond loopback) needs a token");
        }
        if (!s.seed().isLoopback() && !s.tls().serves() && !s.seed().allowPlainToken()) {
            throw new WeightLoaderConfigException("weight-loader.tls.certificate", "a seed bound to "
                    + s.seed().bindAddress() + " (beyond loopback) would send and read its token in clear: give it a"
                    + " certificate and key (weight-loader.tls.certificate, .key), or, where its traffic cannot be"
                    + " read, set weight-loader.seed.allow-plain-token = true");
        }
        return new SeedService(SeedHttp.bind(s), context, Map.copyOf(publishers));
    }

    /** Registers each rank's tensors with every served backend (before or after {@link #start()}). */
    public void publish(Map<RankKey, List<TensorDestination>> held) {
        for (Map.Entry<RankKey, List<TensorDestination>> e : held.entrySet()) {
            ranks.publish(e.getKey(), e.getValue(), context.settings().seed().publishChecksums(), null, null);
        }
    }

    /** Starts answering requests. */
    public synchronized void start() {
        if (started) {
            return;
        }
        http.start(this::handle);
        started = true;
        LOG.info("seed control plane on http://{}:{} ({} rank(s), serving {}, token {})",
                context.settings().seed().bindAddress(), port(), ranks.size(), providers.keySet(),
                http.hasToken() ? "on" : "off");
    }

    /**
     * Publishes what a relay holds for {@code rank}: the root's generation and checksums ({@code root}, the root's
     * manifest of the rank, checked against what is held), so the relay's clients verify against the root. With a
     * {@code gate}, reads wait for bytes not yet arrived and checked (the relay serves while it loads).
     *
     * @return whether every served engine honours the gate (else the relay must be announced only once ready)
     */
    public boolean publishRelay(RankKey rank, List<TensorDestination> tensors, Manifest root, ReadyGate gate) {
        Map<String, Manifest.Entry> entries = root.entriesByName();
        for (TensorDestination t : tensors) {
            Manifest.Entry e = entries.get(t.spec().name());
            if (e == null || !t.holdsSameAs(e.slice()) || !e.spec().equals(t.spec())) {
                throw new WeightLoaderException("a relay serves exactly what its root's rank " + rank + " holds; tensor '"
                        + t.spec().name() + "' here is " + t.held().describe() + (e == null ? ", which the root does"
                        + " not hold" : ", the root's " + e.held().describe()) + " (give the relay the root's tp size"
                        + " and layout)");
            }
        }
        return ranks.publish(rank, tensors, false, root, gate);
    }

    /**
     * Call before changing a rank's weights in place: the rank gets a new generation, so every load in flight
     * fails its final check, and until {@link #weightsChanged} its manifest, session and send endpoints answer
     * 503 (clients retry), so no load can start and end inside the update and pass with half-updated bytes.
     */
    public void weightsChanging(RankKey rank) {
        ranks.regenerate(rank, true);
        directory.directory().clear(rank); // its relays serve the old weights
        changing(rank);
    }

    /**
     * Calls {@code listener} with a rank whose weights stop being those it published: before an update in place
     * ({@link #weightsChanging}, {@link #weightsChanged}) and when they are released ({@link #releaseWeights}). A
     * host that lists this seed in a registry withdraws the rank's entry there.
     */
    public void onWeightsChanging(java.util.function.Consumer<RankKey> listener) {
        changing.add(listener);
    }

    private void changing(RankKey rank) {
        for (java.util.function.Consumer<RankKey> l : changing) {
            try {
                l.accept(rank);
            } catch (RuntimeException e) {
                LOG.warn("a listener of rank {}'s weight change failed", rank, e);
            }
        }
    }

    /**
     * Call after changing a rank's weights in place: the rank gets a new generation (loads that overlapped the
     * update fail their final check and load again) and is served again. Called without {@link #weightsChanging}
     * first, a load that read during the update and checked before this call would not notice: bracket every
     * update with both.
     */
    public void weightsChanged(RankKey rank) {
        ranks.regenerate(rank, false);
        directory.directory().clear(rank);
        changing(rank);
    }

    /** The host's hook for the memory-saver endpoints (null: they answer 501). */
    public void memoryControl(MemoryControl control) {
        memory.control(control);
    }

    /**
     * Releases {@code keys}' weights (the memory saver), before the host frees their memory. First no new load starts
     * (manifest, session of a new load, SGLang info and send endpoints answer 503 "weights released") while loads in
     * flight may finish and make their final check, until the engines have served nothing for {@value
     * #RELEASE_QUIET_MILLIS} ms or {@code grace} ends (an engine that cannot tell, the whole grace); then each rank
     * gets a new generation, every request is refused, and its memory is unregistered from every engine (their
     * connections cut, so a read still in flight fails, and a load that overlapped fails its final check). On
     * return no engine serves from the memory: the host may free it.
     *
     * @return whether the engines went quiet within the grace (false: reads in flight were cut)
     */
    public boolean releaseWeights(Collection<RankKey> keys, Duration grace) {
        for (RankKey k : keys) {
            ranks.releasing(k);
            directory.directory().clear(k); // its relays serve the weights being released
            changing(k);
        }
        boolean quiet = awaitQuiet(keys, grace);
        for (RankKey k : keys) {
            ranks.released(k);
        }
        return quiet;
    }

    static final long RELEASE_QUIET_MILLIS = 200;

    private boolean awaitQuiet(Collection<RankKey> keys, Duration grace) {
        long end = System.nanoTime() + grace.toNanos();
        boolean blind = ranks.blind(keys);
        long last = ranks.activity(keys);
        long quietSince = System.nanoTime();
        while (System.nanoTime() < end) {
            if (!blind && System.nanoTime() - quietSince >= RELEASE_QUIET_MILLIS * 1_000_000) {
                return true;
            }
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
            long now = ranks.activity(keys);
            if (now != last) {
                last = now;
                quietSince = System.nanoTime();
            }
        }
        return !blind && System.nanoTime() - quietSince >= RELEASE_QUIET_MILLIS * 1_000_000;
    }

    /** What re-publishing a rank cost: hashing its weights (when it publishes checksums) and registering them. */
    public record Republished(String generation, double checksumSeconds, double registrationSeconds) {
    }

    /**
     * Serves {@code rank} again after {@link #releaseWeights}, from {@code tensors} (refilled): registers them with
     * every served engine and publishes a new generation, with checksums recomputed when the seed publishes them.
     */
    public Republished resumeWeights(RankKey rank, List<TensorDestination> tensors) {
        ranks.publish(rank, tensors, context.settings().seed().publishChecksums(), null, null);
        PublishedRanks.Published p = ranks.get(rank);
        double reg = p.publishers().stream().mapToDouble(SeedPublisher::registrationSeconds).sum();
        return new Republished(p.manifest().generation(), ranks.checksumSeconds(rank), reg);
    }

    /**
     * Seconds {@code rank}'s current registration took with every served engine (the first publish, or the latest
     * {@link #resumeWeights}); 0 for a rank not published, and for engines that register nothing (nccl).
     */
    public double registrationSeconds(RankKey rank) {
        PublishedRanks.Published p = ranks.get(rank);
        return p == null ? 0 : p.publishers().stream().mapToDouble(SeedPublisher::registrationSeconds).sum();
    }

    /** Whether {@code rank}'s weights are released (or being released). */
    public boolean released(RankKey rank) {
        PublishedRanks.Published p = ranks.get(rank);
        return p != null && p.memory() != PublishedRanks.Memory.HELD;
    }

    public int port() {
        return http.port();
    }

    /** What a rank holds and publishes (its memory: a host may change weights in place between {@link
     * #weightsChanging} and {@link #weightsChanged}), or an empty list. */
    public List<TensorDestination> held(RankKey rank) {
        return ranks.held(rank);
    }

    public Optional<Manifest> manifest(RankKey rank) {
        return ranks.manifest(rank);
    }

    private void handle(HttpExchange ex) throws IOException {
        try (ex) {
            String path = ex.getRequestURI().getPath();
            boolean post = "POST".equals(ex.getRequestMethod());
            if (!"GET".equals(ex.getRequestMethod()) && !post) {
                SeedHttp.reply(ex, 405, Map.of("error", "only GET and POST are served"));
                return;
            }
            String rawQuery = ex.getRequestURI().getRawQuery();
            if (rawQuery != null && rawQuery.length() > SeedHttp.MAX_QUERY) {
                SeedHttp.reply(ex, 400, Map.of("error", "query too long"));
                return;
            }
            if (path.equals("/health")) {
                SeedHttp.reply(ex, 200, Map.of("status", "ok", "ranks", ranks.keys().stream().map(RankKey::toString)
                        .sorted().toList()));
                return;
            }
            if (!http.authorized(ex)) {
                LOG.warn("refused {} from {}: missing or wrong token", path, ex.getRemoteAddress());
                SeedHttp.reply(ex, 401, Map.of("error", "missing or wrong token"));
                return;
            }
            if (!path.startsWith("/v1/relays")) {
                // what a stopping seed waits for: a load still talking to it, and a new one being told 503 (it
                // retries; closing the port under it would turn the 503 into 'connection refused'); not relays'
                // heartbeats, nor peers without the token
                lastRequestNanos = System.nanoTime();
            }
            Map<String, String> q;
            try {
                q = SeedHttp.query(ex.getRequestURI());
            } catch (IllegalArgumentException e) {
                SeedHttp.reply(ex, 400, Map.of("error", e.getMessage()));
                return;
            }
            Set<String> allowed = MemoryEndpoints.PATHS.contains(path) ? Set.of()
                    : SglangEndpoints.takes(path) ? SglangEndpoints.QUERY
                    : path.equals("/v1/source") && !post ? DirectoryEndpoints.SOURCE_QUERY : Set.of("tp", "pp");
            for (String name : q.keySet()) {
                if (!allowed.contains(name)) {
                    SeedHttp.reply(ex, 400, Map.of("error", "unknown query parameter '" + name + "' (" + path
                            + " takes " + new TreeSet<>(allowed) + ")"));
                    return;
                }
            }
            if (draining && (post || !path.equals("/v1/session"))) {
                // a load in flight needs only /v1/session (its final generation check); anything else starts one
                SeedHttp.reply(ex, 503, Map.of("error", "this seed is shutting down and takes no new loads"));
                return;
            }
            if (post ? DirectoryEndpoints.POSTS.contains(path) : DirectoryEndpoints.GETS.contains(path)) {
                directory.handle(ex, path, post, q);
                return;
            }
            if (post && MemoryEndpoints.PATHS.contains(path)) {
                memory.handle(ex, path);
                return;
            }
            if (post) {
                handlePost(ex, path, q);
                return;
            }
            switch (path) {
                case "/v1/manifest", "/v1/session" -> {
                    RankKey rank = SeedHttp.rank(ex, q, "tp");
                    if (rank == null) {
                        return;
                    }
                    PublishedRanks.Published p = ranks.get(rank);
                    if (p == null) {
                        SeedHttp.reply(ex, 404, Map.of("error", "this seed holds no weights for rank " + rank
                                + "; it holds " + ranks.keys()));
                    } else if (p.updating()) {
                        SeedHttp.updating(ex, rank);
                    } else if (p.released(path.equals("/v1/session"))) {
                        SeedHttp.released(ex, rank);
                    } else {
                        SeedHttp.replyJson(ex, 200, path.equals("/v1/manifest") ? p.manifestJson() : p.sessionJson());
                    }
                }
                default -> {
                    if (SglangEndpoints.PATHS.contains(path)) {
                        sglang.handle(ex, q);
                    } else {
                        SeedHttp.reply(ex, 404, Map.of("error", "no such endpoint " + path));
                    }
                }
            }
        } catch (RuntimeException e) {
            LOG.warn("control-plane request failed", e);
        }
    }

    /** What {@code rank} publishes, or null after answering 404 naming the ranks held. */
    private PublishedRanks.Published held(HttpExchange ex, RankKey rank) throws IOException {
        PublishedRanks.Published p = ranks.get(rank);
        if (p == null) {
            SeedHttp.reply(ex, 404, Map.of("error", "this seed holds no weights for rank " + rank + "; it holds "
                    + ranks.keys()));
        }
        return p;
    }

    /** A POST endpoint of a rank's publishers (e.g. NCCL's send). */
    private void handlePost(HttpExchange ex, String path, Map<String, String> q) throws IOException {
        RankKey rank = SeedHttp.rank(ex, q, "tp");
        if (rank == null) {
            return;
        }
        PublishedRanks.Published p = ranks.get(rank);
        if (p != null && p.released(false)) {
            SeedHttp.released(ex, rank); // its publishers, and their endpoints, are closed
            return;
        }
        SeedEndpoint endpoint = p == null ? null : p.endpoint(path);
        if (endpoint == null) {
            SeedHttp.reply(ex, 404, Map.of("error", p == null ? "this seed holds no weights for rank " + rank
                    : "no such endpoint " + path + " (this seed serves " + p.manifest().serves().keySet()
                    + "; see weight-loader.seed.serve)"));
            return;
        }
        if (p.updating()) {
            SeedHttp.updating(ex, rank);
            return;
        }
        byte[] body = ex.getRequestBody().readNBytes(SeedHttp.MAX_BODY + 1);
        if (body.length > SeedHttp.MAX_BODY) {
            SeedHttp.reply(ex, 413, Map.of("error", "request body over " + SeedHttp.MAX_BODY + " bytes"));
            return;
        }
        SeedEndpoint.Reply r;
        try {
            r = endpoint.handle(q, body);
        } catch (RuntimeException e) {
            LOG.warn("{} failed", path, e);
            r = SeedEndpoint.Reply.error(500, e.getMessage() == null ? e.toString() : e.getMessage());
        }
        SeedHttp.reply(ex, r.status(), r.body());
    }

    /**
     * Stops taking new loads (their first requests are answered 503) and waits, at most {@code grace}, for the loads
     * in flight: until neither the control plane nor any engine that can tell has served anything for a second.
     * When an engine cannot tell (Mooncake's one-sided reads never reach the seed's code), it waits the whole grace.
     *
     * @return whether the seed went quiet before the grace ended
     */
    public boolean drain(Duration grace) {
        draining = true;
        long end = System.nanoTime() + grace.toNanos();
        long lastActivity = ranks.activity();
        long quietSince = System.nanoTime();
        boolean blind = ranks.blind();
        while (System.nanoTime() < end) {
            try {
                Thread.sleep(100);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
            long now = ranks.activity();
            if (now != lastActivity) {
                lastActivity = now;
                quietSince = System.nanoTime();
            }
            long quiet = System.nanoTime() - Math.max(quietSince, lastRequestNanos);
            if (!blind && quiet > 1_000_000_000L) {
                return true;
            }
        }
        return false;
    }

    /** Stops the control plane and unregisters every rank's memory from its engine. */
    @Override
    public void close() {
        http.stop();
        ranks.close();
    }
}
