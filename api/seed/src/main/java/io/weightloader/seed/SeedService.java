package io.weightloader.seed;

import io.weightloader.memory.Threads;
import io.weightloader.api.TensorDestination;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.weightloader.memory.Checksums;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.BackendRegistry;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The seed's control plane: a small HTTP server (the JDK's) that tells clients what the seed holds and how to
 * read it. It never serves weight bytes itself; the engine does, and only from registered weight memory.
 *
 * <p>Endpoints (GET, plus the POST endpoints publishers add; all but {@code /health} need {@code Authorization: Bearer <token>} when a token is
 * configured):
 * <ul>
 *   <li>{@code /health}: {@code {"status":"ok","ranks":[...]}}</li>
 *   <li>{@code /v1/manifest?tp=N&pp=M}: the rank's {@link Manifest}</li>
 *   <li>{@code /v1/session?tp=N&pp=M}: {@code {"engine","session","generation"}}</li>
 *   <li>{@code /get_remote_instance_transfer_engine_info?rank=N} and
 *       {@code /remote_instance_transfer_engine_info?rank=N} (optional {@code &pp=M}): SGLang's shape,
 *       {@code {"rank":N,"remote_instance_transfer_engine_info":[session,{name:[ptr,numel,element_size]}]}}</li>
 * </ul>
 */
public final class SeedService implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(SeedService.class);
    static final ObjectMapper JSON = new ObjectMapper();
    private static final int MAX_QUERY = 256;
    private static final int MAX_BODY = 1 << 20;

    /** Seconds a peer has, from its first byte, to send a whole request (the JDK server's maxReqTime). */
    static final int MAX_REQUEST_SECONDS = 10;
    /** Seconds an answer may take to be taken by the peer (maxRspTime). */
    static final int MAX_RESPONSE_SECONDS = 60;
    /**
     * Requests handled at once. Each waits at most {@link #MAX_REQUEST_SECONDS} for its peer, so peers that send
     * their headers a byte at a time (no token is needed to open a connection) hold a thread for that long, and it
     * takes this many of them at once to keep a client waiting.
     */
    static final int MAX_CONCURRENT_REQUESTS = 256;

    static {
        // Read once, when the JDK server's classes initialise (before the first HttpServer of the process):
        // - without TCP_NODELAY, Nagle's algorithm and the client's delayed ACK add ~40 ms to every answer;
        // - without a request time limit a peer that never finishes its headers holds a worker thread for ever.
        setIfUnset("sun.net.httpserver.nodelay", "true");
        setIfUnset("sun.net.httpserver.maxReqTime", Integer.toString(MAX_REQUEST_SECONDS));
        setIfUnset("sun.net.httpserver.maxRspTime", Integer.toString(MAX_RESPONSE_SECONDS));
    }

    private static void setIfUnset(String key, String value) {
        if (System.getProperty(key) == null) {
            System.setProperty(key, value);
        }
    }

    private final HttpServer server;
    private final ExecutorService executor;
    private final byte[] token;
    private final Map<RankKey, Published> ranks = new ConcurrentHashMap<>();

    /**
     * A rank's published weights, with its answers serialised once per generation (clients scaling out at once
     * cost the seed a copy each, not a serialisation each). {@code updating}: between {@link #weightsChanging}
     * and {@link #weightsChanged}, when the manifest and session are refused.
     */
    private record Published(List<TensorDestination> tensors, List<SeedPublisher> publishers, Manifest manifest,
                             byte[] manifestJson, byte[] sessionJson, boolean updating) {
        static Published of(List<TensorDestination> tensors, List<SeedPublisher> publishers, Manifest m, boolean updating) {
            try {
                return new Published(tensors, publishers, m, JSON.writeValueAsBytes(m), JSON.writeValueAsBytes(
                        Map.of("engine", m.engine(), "session", m.session(), "generation", m.generation())), updating);
            } catch (IOException e) {
                throw new WeightLoaderException("serialising the manifest of rank tp" + m.tp() + "-pp" + m.pp()
                        + " failed: " + e, e);
            }
        }

        /** The same weights under a new generation; checksums dropped (unknown until recomputed). */
        Published regenerated(boolean nowUpdating) {
            return of(tensors, publishers, manifest.regenerated(UUID.randomUUID().toString()), nowUpdating);
        }
        SeedEndpoint endpoint(String path) {
            for (SeedPublisher p : publishers) {
                SeedEndpoint e = p.endpoints().get(path);
                if (e != null) {
                    return e;
                }
            }
            return null;
        }
    }

    private final BackendContext context;
    private final Map<String, SeedPublisherProvider> providers;
    private boolean started;
    private volatile boolean draining;
    private volatile long lastRequestNanos = System.nanoTime();

    private SeedService(HttpServer server, ExecutorService executor, byte[] token, BackendContext context,
                        Map<String, SeedPublisherProvider> providers) {
        this.server = server;
        this.executor = executor;
        this.token = token;
        this.context = context;
        this.providers = providers;
    }

    /**
     * Publishes every rank's tensors with each backend of {@code weight-loader.seed.serve} and starts the control
     * plane: {@link #bind} then {@link #publish} then {@link #start()}.
     */
    public static SeedService start(BackendContext context, BackendRegistry registry,
                                    Map<RankKey, List<TensorDestination>> held) {
        java.util.Set<io.weightloader.api.Device> devices = new java.util.LinkedHashSet<>();
        for (List<TensorDestination> tensors : held.values()) {
            devices.add(tensors.isEmpty() ? io.weightloader.api.Device.CPU : tensors.get(0).region().device());
        }
        SeedService svc = bind(context, registry, devices);
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
     * Checks everything a seed needs before it loads a byte, and binds its control-plane port: every backend of
     * {@code weight-loader.seed.serve} must be installed and able to publish a seed's weights (its provider
     * implements {@link SeedPublisherProvider}) held on each of {@code devices}; a seed bound beyond loopback needs a
     * token. Nothing is served until {@link #start()}.
     *
     * @throws WeightLoaderConfigException naming the setting to change
     */
    public static SeedService bind(BackendContext context, BackendRegistry registry,
                                   java.util.Collection<io.weightloader.api.Device> devices) {
        WeightLoaderSettings s = context.settings();
        String servePath = "weight-loader.seed.serve";
        if (s.seed().serve().isEmpty()) {
            throw new WeightLoaderConfigException(servePath, "a seed must serve some backend's clients: list "
                    + "transfer_engine and/or nccl (nothing would be served otherwise)");
        }
        Map<String, SeedPublisherProvider> providers = new LinkedHashMap<>();
        for (String name : s.seed().serve()) {
            WeightLoaderBackendProvider p;
            List<String> publishers = registry.providers().values().stream()
                    .filter(x -> x.extension(SeedPublisherProvider.class).isPresent())
                    .map(WeightLoaderBackendProvider::name).toList();
            try {
                p = registry.provider(name);
            } catch (WeightLoaderConfigException e) {
                throw new WeightLoaderConfigException(servePath, e.problem() + ". Backends that can serve a seed's"
                        + " weights here: " + publishers);
            }
            SeedPublisherProvider publisher = p.extension(SeedPublisherProvider.class).orElseThrow(() ->
                    new WeightLoaderConfigException(servePath, "backend '" + name + "' (" + p.getClass().getName()
                            + ") cannot publish a seed's weights; backends that can: " + publishers));
            io.weightloader.api.WeightLoader.refuseMemorySaverUnlessCapable(s, name, p.capabilities());
            for (io.weightloader.api.Device d : devices) {
                publisher.validateSeed(context, d);
            }
            providers.put(name, publisher);
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
        java.util.Optional<javax.net.ssl.SSLContext> tls = Tls.forSeed(s.tls());
        byte[] token = s.remote().token().map(t -> t.getBytes(StandardCharsets.UTF_8)).orElse(null);
        java.util.concurrent.ThreadPoolExecutor executor = new java.util.concurrent.ThreadPoolExecutor(
                MAX_CONCURRENT_REQUESTS, MAX_CONCURRENT_REQUESTS, 30, java.util.concurrent.TimeUnit.SECONDS,
                new java.util.concurrent.LinkedBlockingQueue<>(), Threads.daemon("weightloader-seed-http"));
        executor.allowCoreThreadTimeOut(true); // threads exist only while requests do
        HttpServer server;
        try {
            InetSocketAddress at = new InetSocketAddress(s.seed().bindAddress(), s.seed().servicePort());
            if (tls.isPresent()) {
                com.sun.net.httpserver.HttpsServer https = com.sun.net.httpserver.HttpsServer.create(at, 64);
                boolean mutual = s.tls().ca().isPresent();
                https.setHttpsConfigurator(new com.sun.net.httpserver.HttpsConfigurator(tls.get()) {
                    @Override
                    public void configure(com.sun.net.httpserver.HttpsParameters params) {
                        javax.net.ssl.SSLParameters p = tls.get().getDefaultSSLParameters();
                        p.setProtocols(Tls.PROTOCOLS);
                        p.setNeedClientAuth(mutual);
                        params.setSSLParameters(p);
                    }
                });
                server = https;
            } else {
                server = HttpServer.create(at, 64);
            }
        } catch (IOException e) {
            executor.shutdownNow();
            throw new WeightLoaderException("cannot bind the seed control plane to " + s.seed().bindAddress() + ":"
                    + s.seed().servicePort() + " (weight-loader.seed.bind-address/service-port): " + e.getMessage(), e);
        }
        return new SeedService(server, executor, token, context, Map.copyOf(providers));
    }

    /** Registers each rank's tensors with every served backend (before or after {@link #start()}). */
    public void publish(Map<RankKey, List<TensorDestination>> held) {
        for (Map.Entry<RankKey, List<TensorDestination>> e : held.entrySet()) {
            publish(context, e.getKey(), e.getValue(), context.settings().seed().publishChecksums());
        }
    }

    /** Starts answering requests. */
    public synchronized void start() {
        if (started) {
            return;
        }
        server.createContext("/", this::handle);
        server.setExecutor(executor);
        server.start();
        started = true;
        LOG.info("seed control plane on http://{}:{} ({} rank(s), serving {}, token {})",
                context.settings().seed().bindAddress(), port(), ranks.size(), providers.keySet(),
                token == null ? "off" : "on");
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
        return publish(context, rank, tensors, false, root, gate);
    }

    private void publish(BackendContext context, RankKey rank, List<TensorDestination> tensors, boolean checksums) {
        publish(context, rank, tensors, checksums, null, null);
    }

    private boolean publish(BackendContext context, RankKey rank, List<TensorDestination> tensors, boolean checksums,
                            Manifest root, ReadyGate gate) {
        Map<String, Checksum> sums = new LinkedHashMap<>();
        if (root != null) {
            for (Manifest.Entry e : root.tensors()) {
                sums.put(e.name(), new Checksum(e.sha256(), e.blocks()));
            }
        } else if (checksums) {
            sums = checksums(tensors);
        }
        List<SeedPublisher> publishers = new ArrayList<>();
        Map<String, String> serves = new LinkedHashMap<>();
        boolean gated = true;
        try {
            // in the order of seed.serve: ask for the providers again, since Map.copyOf does not keep it
            for (String name : context.settings().seed().serve()) {
                SeedPublisher p = gate == null ? providers.get(name).publish(context, rank, tensors)
                        : providers.get(name).publish(context, rank, tensors, gate);
                gated &= p.gatesReads();
                publishers.add(p);
                serves.put(name, p.engine());
            }
        } catch (RuntimeException e) {
            publishers.forEach(SeedPublisher::close);
            throw e;
        }
        List<Manifest.Entry> entries = new ArrayList<>();
        for (TensorDestination t : tensors) {
            Checksum sum = sums.get(t.spec().name());
            entries.add(new Manifest.Entry(t.spec().name(), t.spec().dtype().safetensorsName(), t.spec().shape(),
                    t.byteSize(), t.byteSize() == 0 ? 0 : t.region().address(), sum == null ? null : sum.whole(),
                    t.slice(), sum == null ? null : sum.blocks()));
        }
        String device = tensors.isEmpty() ? "cpu" : tensors.get(0).region().device().toString();
        SeedPublisher first = publishers.get(0);
        WeightLoaderSettings s = context.settings();
        boolean sliced = tensors.stream().anyMatch(t -> t.slice() != null);
        Manifest m = root != null
                ? new Manifest(Manifest.VERSION, rank.tp(), rank.pp(), root.generation(), first.engine(),
                first.sessionId(), device, serves, entries, root.tpSize(), root.layout())
                : new Manifest(Manifest.VERSION, rank.tp(), rank.pp(), UUID.randomUUID().toString(),
                first.engine(), first.sessionId(), device, serves, entries, s.tpSize(),
                sliced || !s.tpLayout().isNone() ? s.tpLayout().name() : "none");
        Published old = ranks.put(rank, Published.of(tensors, List.copyOf(publishers), m, false));
        if (old != null) {
            old.publishers().forEach(SeedPublisher::close);
        }
        for (SeedPublisher p : publishers) {
            LOG.info("seed rank {}: {} tensors published via {} at {} (registration {} s)", rank, tensors.size(),
                    p.engine(), p.sessionId(), String.format("%.3f", p.registrationSeconds()));
        }
        return gated;
    }

    /** A held tensor's SHA-256, whole and by blocks. */
    private record Checksum(String whole, Manifest.Blocks blocks) {
    }

    private static Map<String, Checksum> checksums(List<TensorDestination> tensors) {
        List<String> sums = Checksums.sha256All(tensors.stream().map(TensorDestination::region).toList(),
                tensors.stream().map(t -> t.byteSize()).toList(), Checksums.defaultThreads());
        List<Manifest.Blocks> blocks = BlockChecksums.of(tensors, Checksums.defaultThreads());
        Map<String, Checksum> out = new LinkedHashMap<>();
        for (int i = 0; i < tensors.size(); i++) {
            out.put(tensors.get(i).spec().name(), new Checksum(sums.get(i), blocks.get(i)));
        }
        return out;
    }

    /**
     * Call before changing a rank's weights in place: the rank gets a new generation, so every load in flight
     * fails its final check, and until {@link #weightsChanged} its manifest, session and send endpoints answer
     * 503 (clients retry), so no load can start and end inside the update and pass with half-updated bytes.
     */
    public void weightsChanging(RankKey rank) {
        ranks.computeIfPresent(rank, (k, p) -> p.regenerated(true));
        directory.directory().clear(rank); // its relays serve the old weights
    }

    /**
     * Call after changing a rank's weights in place: the rank gets a new generation (loads that overlapped the
     * update fail their final check and load again) and is served again. Called without {@link #weightsChanging}
     * first, a load that read during the update and checked before this call would not notice: bracket every
     * update with both.
     */
    public void weightsChanged(RankKey rank) {
        ranks.computeIfPresent(rank, (k, p) -> p.regenerated(false));
        directory.directory().clear(rank);
    }

    public int port() {
        return server.getAddress().getPort();
    }

    /** What a rank holds and publishes (its memory: a host may change weights in place between {@link
     * #weightsChanging} and {@link #weightsChanged}), or an empty list. */
    public List<TensorDestination> held(RankKey rank) {
        Published p = ranks.get(rank);
        return p == null ? List.of() : p.tensors();
    }

    public Optional<Manifest> manifest(RankKey rank) {
        return Optional.ofNullable(ranks.get(rank)).map(Published::manifest);
    }

    private void handle(HttpExchange ex) throws IOException {
        try (ex) {
            String path = ex.getRequestURI().getPath();
            boolean post = "POST".equals(ex.getRequestMethod());
            if (!"GET".equals(ex.getRequestMethod()) && !post) {
                reply(ex, 405, Map.of("error", "only GET and POST are served"));
                return;
            }
            String rawQuery = ex.getRequestURI().getRawQuery();
            if (rawQuery != null && rawQuery.length() > MAX_QUERY) {
                reply(ex, 400, Map.of("error", "query too long"));
                return;
            }
            if (path.equals("/health")) {
                reply(ex, 200, Map.of("status", "ok", "ranks", ranks.keySet().stream().map(RankKey::toString).sorted()
                        .toList()));
                return;
            }
            if (!authorized(ex)) {
                LOG.warn("refused {} from {}: missing or wrong token", path, ex.getRemoteAddress());
                reply(ex, 401, Map.of("error", "missing or wrong token"));
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
                q = query(ex.getRequestURI());
            } catch (IllegalArgumentException e) {
                reply(ex, 400, Map.of("error", e.getMessage()));
                return;
            }
            java.util.Set<String> allowed = path.startsWith("/get_remote_instance") || path.startsWith("/remote_instance")
                    ? java.util.Set.of("rank", "pp")
                    : path.equals("/v1/source") && !post ? DirectoryEndpoints.SOURCE_QUERY : java.util.Set.of("tp", "pp");
            for (String name : q.keySet()) {
                if (!allowed.contains(name)) {
                    reply(ex, 400, Map.of("error", "unknown query parameter '" + name + "' (" + path + " takes "
                            + new java.util.TreeSet<>(allowed) + ")"));
                    return;
                }
            }
            if (draining && (post || !path.equals("/v1/session"))) {
                // a load in flight needs only /v1/session (its final generation check); anything else starts one
                reply(ex, 503, Map.of("error", "this seed is shutting down and takes no new loads"));
                return;
            }
            if (post ? DirectoryEndpoints.POSTS.contains(path) : DirectoryEndpoints.GETS.contains(path)) {
                directory.handle(ex, path, post, q);
                return;
            }
            if (post) {
                handlePost(ex, path, q);
                return;
            }
            switch (path) {
                case "/v1/manifest", "/v1/session" -> {
                    RankKey rank = rank(ex, q, "tp");
                    if (rank == null) {
                        return;
                    }
                    Published p = ranks.get(rank);
                    if (p == null) {
                        reply(ex, 404, Map.of("error", "this seed holds no weights for rank " + rank
                                + "; it holds " + ranks.keySet()));
                    } else if (p.updating()) {
                        updating(ex, rank);
                    } else {
                        replyJson(ex, 200, path.equals("/v1/manifest") ? p.manifestJson() : p.sessionJson());
                    }
                }
                case "/get_remote_instance_transfer_engine_info", "/remote_instance_transfer_engine_info" ->
                        sglangInfo(ex, q);
                default -> reply(ex, 404, Map.of("error", "no such endpoint " + path));
            }
        } catch (RuntimeException e) {
            LOG.warn("control-plane request failed", e);
        }
    }

    /** The directory of this root seed's relays and its endpoints (see {@link DirectoryEndpoints}). */
    private final DirectoryEndpoints directory = new DirectoryEndpoints((ex, rank) -> {
        Published p = held(ex, rank);
        return p == null ? null : p.manifest();
    }, MAX_BODY);

    /** What {@code rank} publishes, or null after answering 404 naming the ranks held. */
    private Published held(HttpExchange ex, RankKey rank) throws IOException {
        Published p = ranks.get(rank);
        if (p == null) {
            reply(ex, 404, Map.of("error", "this seed holds no weights for rank " + rank + "; it holds " + ranks.keySet()));
        }
        return p;
    }

    private void handlePost(HttpExchange ex, String path, Map<String, String> q) throws IOException {
        RankKey rank = rank(ex, q, "tp");
        if (rank == null) {
            return;
        }
        Published p = ranks.get(rank);
        SeedEndpoint endpoint = p == null ? null : p.endpoint(path);
        if (endpoint == null) {
            reply(ex, 404, Map.of("error", p == null ? "this seed holds no weights for rank " + rank
                    : "no such endpoint " + path + " (this seed serves " + p.manifest().serves().keySet()
                    + "; see weight-loader.seed.serve)"));
            return;
        }
        if (p.updating()) {
            updating(ex, rank);
            return;
        }
        byte[] body = ex.getRequestBody().readNBytes(MAX_BODY + 1);
        if (body.length > MAX_BODY) {
            reply(ex, 413, Map.of("error", "request body over " + MAX_BODY + " bytes"));
            return;
        }
        SeedEndpoint.Reply r;
        try {
            r = endpoint.handle(q, body);
        } catch (RuntimeException e) {
            LOG.warn("{} failed", path, e);
            r = SeedEndpoint.Reply.error(500, e.getMessage() == null ? e.toString() : e.getMessage());
        }
        reply(ex, r.status(), r.body());
    }

    private void sglangInfo(HttpExchange ex, Map<String, String> q) throws IOException {
        RankKey rank = rank(ex, q, "rank");
        if (rank == null) {
            return;
        }
        Published p = ranks.get(rank);
        if (p == null) {
            reply(ex, 400, Map.of("error", "Invalid rank " + rank.tp() + " (this seed holds " + ranks.keySet() + ")"));
            return;
        }
        if (p.updating()) {
            updating(ex, rank);
            return;
        }
        Map<String, TensorDestination> held = new java.util.HashMap<>();
        for (TensorDestination t : p.tensors()) {
            held.put(t.spec().name(), t);
        }
        Map<String, List<Long>> info = new LinkedHashMap<>();
        for (Manifest.Entry e : p.manifest().tensors()) {
            long elementSize = Math.max(1, held.get(e.name()).spec().dtype().bits() / 8);
            info.put(e.name(), List.of(e.address(), e.bytes() / elementSize, elementSize));
        }
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("rank", rank.tp());
        body.put("remote_instance_transfer_engine_info", List.of(p.manifest().session(), info));
        reply(ex, 200, body);
    }

    private boolean authorized(HttpExchange ex) {
        if (token == null) {
            return true;
        }
        String h = ex.getRequestHeaders().getFirst("Authorization");
        if (h == null || !h.startsWith("Bearer ")) {
            return false;
        }
        return MessageDigest.isEqual(token, h.substring(7).getBytes(StandardCharsets.UTF_8));
    }

    private static Map<String, String> query(URI uri) {
        Map<String, String> out = new LinkedHashMap<>();
        String q = uri.getQuery();
        if (q == null || q.isEmpty()) {
            return out;
        }
        for (String kv : q.split("&")) {
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("malformed query parameter '" + kv + "'");
            }
            if (out.put(kv.substring(0, eq), kv.substring(eq + 1)) != null) {
                throw new IllegalArgumentException("query parameter '" + kv.substring(0, eq) + "' given twice");
            }
        }
        return out;
    }

    /** The rank named by the query ({@code tpParam}, plus optional {@code pp}); null after answering 400. */
    static RankKey rank(HttpExchange ex, Map<String, String> q, String tpParam) throws IOException {
        try {
            return new RankKey(intParam(q, tpParam, -1), intParam(q, "pp", 0));
        } catch (IllegalArgumentException e) {
            reply(ex, 400, Map.of("error", e.getMessage()));
            return null;
        }
    }

    private static int intParam(Map<String, String> q, String name, int dflt) {
        String v = q.get(name);
        if (v == null) {
            if (dflt < 0) {
                throw new IllegalArgumentException("query parameter '" + name + "' is required");
            }
            return dflt;
        }
        try {
            int i = Integer.parseInt(v);
            if (i < 0 || i > 1_000_000) {
                throw new NumberFormatException();
            }
            return i;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("query parameter '" + name + "' must be a rank number, got '" + v + "'");
        }
    }

    private static void updating(HttpExchange ex, RankKey rank) throws IOException {
        ex.getResponseHeaders().set("Retry-After", "1");
        reply(ex, 503, Map.of("error", "the weights of rank " + rank + " are being updated; try again"));
    }

    static void reply(HttpExchange ex, int code, Object body) throws IOException {
        replyJson(ex, code, JSON.writeValueAsBytes(body));
    }

    private static void replyJson(HttpExchange ex, int code, byte[] bytes) throws IOException {
        ex.getResponseHeaders().set("Content-Type", "application/json");
        ex.sendResponseHeaders(code, bytes.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(bytes);
        }
    }


    /**
     * Stops taking new loads (their first requests are answered 503) and waits, at most {@code grace}, for the loads
     * in flight: until neither the control plane nor any engine that can tell has served anything for a second.
     * When an engine cannot tell (Mooncake's one-sided reads never reach the seed's code), it waits the whole grace.
     *
     * @return whether the seed went quiet before the grace ended
     */
    public boolean drain(java.time.Duration grace) {
        draining = true;
        long end = System.nanoTime() + grace.toNanos();
        boolean blind = false;
        long lastActivity = activity();
        long quietSince = System.nanoTime();
        for (Published p : ranks.values()) {
            for (SeedPublisher pub : p.publishers()) {
                blind |= pub.activity() == -1;
            }
        }
        while (System.nanoTime() < end) {
            try {
                Thread.sleep(100);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
            long now = activity();
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

    private long activity() {
        long sum = 0;
        for (Published p : ranks.values()) {
            for (SeedPublisher pub : p.publishers()) {
                long a = pub.activity();
                sum = sum * 31 + (a == -1 ? 0 : a);
            }
        }
        return sum;
    }

    /** Stops the control plane and unregisters every rank's memory from its engine. */
    @Override
    public void close() {
        server.stop(0);
        executor.shutdownNow();
        for (Published p : ranks.values()) {
            for (SeedPublisher publisher : p.publishers()) {
                try {
                    publisher.close();
                } catch (RuntimeException e) {
                    LOG.warn("closing the publisher of {} failed", publisher.engine(), e);
                }
            }
        }
        ranks.clear();
    }
}
