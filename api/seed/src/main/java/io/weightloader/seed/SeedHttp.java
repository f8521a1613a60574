package io.weightloader.seed;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpHandler;
import com.sun.net.httpserver.HttpServer;
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsParameters;
import com.sun.net.httpserver.HttpsServer;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.memory.Threads;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;

/**
 * The seed control plane's HTTP plumbing: the JDK's server (HTTPS with {@code weight-loader.tls}) with its limits,
 * the token check, query parsing, and JSON replies.
 */
final class SeedHttp {
    static final int MAX_QUERY = 256;
    static final int MAX_BODY = 1 << 20;

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
    private final ThreadPoolExecutor executor;
    private final byte[] token;

    private SeedHttp(HttpServer server, ThreadPoolExecutor executor, byte[] token) {
        this.server = server;
        this.executor = executor;
        this.token = token;
    }

    /** Binds the control-plane port of {@code weight-loader.seed}; nothing is served until {@link #start}. */
    static SeedHttp bind(WeightLoaderSettings s) {
        Optional<SSLContext> tls = Tls.forSeed(s.tls());
        byte[] token = s.remote().token().map(t -> t.getBytes(StandardCharsets.UTF_8)).orElse(null);
        ThreadPoolExecutor executor = new ThreadPoolExecutor(MAX_CONCURRENT_REQUESTS, MAX_CONCURRENT_REQUESTS, 30,
                TimeUnit.SECONDS, new LinkedBlockingQueue<>(), Threads.daemon("weightloader-seed-http"));
        executor.allowCoreThreadTimeOut(true); // threads exist only while requests do
        HttpServer server;
        try {
            InetSocketAddress at = new InetSocketAddress(s.seed().bindAddress(), s.seed().servicePort());
            if (tls.isPresent()) {
                HttpsServer https = HttpsServer.create(at, 64);
                boolean mutual = s.tls().ca().isPresent();
                https.setHttpsConfigurator(new HttpsConfigurator(tls.get()) {
                    @Override
                    public void configure(HttpsParameters params) {
                        SSLParameters p = tls.get().getDefaultSSLParameters();
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
        return new SeedHttp(server, executor, token);
    }

    /** Starts answering every request with {@code handler}. */
    void start(HttpHandler handler) {
        server.createContext("/", handler);
        server.setExecutor(executor);
        server.start();
    }

    int port() {
        return server.getAddress().getPort();
    }

    boolean hasToken() {
        return token != null;
    }

    void stop() {
        server.stop(0);
        executor.shutdownNow();
    }

    /** Whether the request carries the seed's token ({@code Authorization: Bearer <token>}), or none is needed. */
    boolean authorized(HttpExchange ex) {
        if (token == null) {
            return true;
        }
        String h = ex.getRequestHeaders().getFirst("Authorization");
        if (h == null || !h.startsWith("Bearer ")) {
            return false;
        }
        return MessageDigest.isEqual(token, h.substring(7).getBytes(StandardCharsets.UTF_8));
    }

    /** The query's parameters, each given once. */
    static Map<String, String> query(URI uri) {
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

    /** Answers 503 with {@code Retry-After}: the rank's weights are being updated. */
    static void updating(HttpExchange ex, RankKey rank) throws IOException {
        ex.getResponseHeaders().set("Retry-After", "1");
        reply(ex, 503, Map.of("error", "the weights of rank " + rank + " are being updated; try again"));
    }

    /** Answers 503 with {@code Retry-After}: the rank's weights are released (the memory saver). */
    static void released(HttpExchange ex, RankKey rank) throws IOException {
        ex.getResponseHeaders().set("Retry-After", "1");
        reply(ex, 503, Map.of("error", "the weights of rank " + rank + " are released (weights released: the seed's"
                + " host gave their memory back; POST /resume_memory_occupation brings them back); try again"));
    }

    static void reply(HttpExchange ex, int code, Object body) throws IOException {
        replyJson(ex, code, Json.MAPPER.writeValueAsBytes(body));
    }

    static void replyJson(HttpExchange ex, int code, byte[] bytes) throws IOException {
        ex.getResponseHeaders().set("Content-Type", "application/json");
        ex.sendResponseHeaders(code, bytes.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(bytes);
        }
    }
}
