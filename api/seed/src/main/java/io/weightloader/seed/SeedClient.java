package io.weightloader.seed;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.Proxy;
import java.net.URI;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.SSLContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Talks to a seed's control plane with timeouts on every request and bounded retries (with backoff) for
 * transient failures; a refusal (bad token, unknown rank) is reported at once, not retried.
 */
public final class SeedClient {
    private static final Logger LOG = LoggerFactory.getLogger(SeedClient.class);
    private static final ObjectMapper JSON = Json.TOLERANT;
    /** Largest manifest accepted (about 200,000 tensors). */
    public static final int MAX_MANIFEST_BYTES = 64 << 20;

    private final String host;
    private final int port;
    private final Optional<String> token;
    private final Duration requestTimeout;
    private final int retries;
    private final Duration connectTimeout;
    /** System.nanoTime() by which every request of this view must have ended; Long.MAX_VALUE: none. */
    private final long deadline;
    /** TLS to the seed, when the client has a ca. */
    private final SSLContext tls;

    public SeedClient(String host, int port, Optional<String> token, Duration connectTimeout, Duration requestTimeout,
                      int retries) {
        this(host, port, token, connectTimeout, requestTimeout, retries, Long.MAX_VALUE, null);
    }

    private SeedClient(String host, int port, Optional<String> token, Duration connectTimeout, Duration requestTimeout,
                       int retries, long deadline, SSLContext tls) {
        this.host = host;
        this.port = port;
        this.token = token;
        this.requestTimeout = requestTimeout;
        this.retries = retries;
        this.connectTimeout = connectTimeout;
        this.deadline = deadline;
        this.tls = tls;
    }

    /** This client speaking TLS ({@code https}) with {@code context}. */
    public SeedClient withTls(SSLContext context) {
        return new SeedClient(host, port, token, connectTimeout, requestTimeout, retries, deadline, context);
    }

    /**
     * This client with every request (and its retries) bounded by {@code deadlineNanos} ({@link System#nanoTime()}):
     * a request's timeouts shrink to what is left, and no retry starts past it. A load uses it so that its control-plane
     * requests cannot stretch it past its own deadline, whatever the seed does.
     */
    public SeedClient until(long deadlineNanos) {
        return new SeedClient(host, port, token, connectTimeout, requestTimeout, retries,
                Math.min(deadline, deadlineNanos), tls);
    }

    /** The same client (token, TLS, timeouts, deadline) for another seed, {@code host:port} (a relay). */
    public SeedClient at(String address) {
        int colon = address.lastIndexOf(':');
        if (colon <= 0) {
            throw new WeightLoaderException("malformed seed address '" + address + "'");
        }
        String h = address.substring(0, colon);
        if (h.startsWith("[") && h.endsWith("]")) {
            h = h.substring(1, h.length() - 1);
        }
        int p;
        try {
            p = Integer.parseInt(address.substring(colon + 1));
        } catch (NumberFormatException e) {
            throw new WeightLoaderException("malformed seed address '" + address + "'");
        }
        return new SeedClient(h, p, token, connectTimeout, requestTimeout, retries, deadline, tls);
    }

    /** This client with {@code n} retries per request (a relay is tried once before the client moves on). */
    public SeedClient withRetries(int n) {
        return new SeedClient(host, port, token, connectTimeout, requestTimeout, n, deadline, tls);
    }

    /**
     * What a root seed's directory answered: a source ({@code root} or a relay's host:port) and the generation; or,
     * with no address, that every ready source is busy and why ({@code busy}): ask again.
     */
    public record SourceChoice(String address, boolean ready, String generation, String busy) {
        public boolean isRoot() {
            return Directory.ROOT.equals(address);
        }

        /** Whether the client must ask again (a tree client waiting for a free source). */
        public boolean waits() {
            return address == null;
        }
    }

    /**
     * Asks this root seed for a source by {@code strategy} ({@code POST /v1/source}: the sources the client found dead,
     * {@code exclude}, travel in the body, however many). {@code failover}: the client's source died mid-load.
     */
    public SourceChoice source(RankKey rank, String strategy, String client, Collection<String> exclude,
                               boolean failover, long waitMillis) {
        Map<String, Object> ask = new LinkedHashMap<>();
        ask.put("strategy", strategy);
        ask.put("client", client);
        ask.put("exclude", List.copyOf(exclude));
        ask.put("failover", failover);
        ask.put("wait", waitMillis);
        byte[] body;
        try {
            body = new SeedClient(host, port, token, connectTimeout, requestTimeout, 0, deadline, tls)
                    .post("/v1/source?tp=" + rank.tp() + "&pp=" + rank.pp(), JSON.writeValueAsBytes(ask), Set.of());
        } catch (SeedRefusedException e) {
            if (e.status() == 503) {
                return new SourceChoice(null, false, null, e.getMessage());
            }
            throw e;
        } catch (IOException e) {
            throw new WeightLoaderException("asking seed " + peer() + " for a source failed: " + e.getMessage(), e);
        }
        try {
            JsonNode n = JSON.readTree(body);
            String address = n.path("address").asText("");
            String generation = n.path("generation").asText("");
            if (address.isEmpty() || generation.isEmpty() || address.length() > 300) {
                throw new WeightLoaderException("seed " + peer() + " answered /v1/source without a source");
            }
            return new SourceChoice(address, n.path("ready").asBoolean(true), generation, null);
        } catch (IOException e) {
            throw new WeightLoaderException("seed " + peer() + " sent a source that is not JSON: " + e.getMessage(), e);
        }
    }

    /** Tells this root seed the client is done with {@code source} (best effort: failures are logged). */
    public void sourceDone(RankKey rank, String source, String client) {
        bestEffort("/v1/source/done", rank, Map.of("source", source, "client", client), "done with " + source);
    }

    /** Renews the client's lease on {@code source} while it reads (best effort: failures are logged). */
    public void renewSource(RankKey rank, String source, String client) {
        bestEffort("/v1/source/renew", rank, Map.of("source", source, "client", client), "renewing " + source);
    }

    /**
     * Reports a relay whose bytes did not match the root's checksums: the root's directory assigns it to no one again
     * (best effort: failures are logged).
     */
    public void reportRelay(RankKey rank, String relay, String client, String reason) {
        bestEffort("/v1/relays/report", rank, Map.of("address", relay, "client", client,
                "reason", reason.length() > 1000 ? reason.substring(0, 1000) : reason), "reporting relay " + relay);
    }

    private void bestEffort(String path, RankKey rank, Map<String, Object> body, String what) {
        try {
            withRetries(0).post(path + "?tp=" + rank.tp() + "&pp=" + rank.pp(), JSON.writeValueAsBytes(body), Set.of());
        } catch (IOException | RuntimeException e) {
            LOG.debug("{} at seed {} failed", what, peer(), e);
        }
    }

    /**
     * The client of the seed that {@code weight-loader.remote-instance} names, for a remote backend called
     * {@code backend}.
     *
     * @throws WeightLoaderConfigException when the seed's address or port is not set
     */
    public static SeedClient forSeedOf(WeightLoaderSettings s, String backend) {
        String ip = checkedSeedAddress(s, backend);
        SeedClient c = new SeedClient(ip, s.remote().seedPort(), s.remote().token(), s.remote().connectTimeout(),
                s.remote().requestTimeout(), s.remote().retries());
        return Tls.forClient(s.tls()).map(c::withTls).orElse(c);
    }

    /**
     * The client of a source found in a registry, {@code host:port}: the token, TLS and timeouts of
     * {@code weight-loader.remote-instance}, as for the configured seed.
     */
    public static SeedClient forSource(WeightLoaderSettings s, String address) {
        SeedClient c = new SeedClient("127.0.0.1", 1, s.remote().token(), s.remote().connectTimeout(),
                s.remote().requestTimeout(), s.remote().retries()).at(address);
        return Tls.forClient(s.tls()).map(c::withTls).orElse(c);
    }

    /** The seed's address, after checking that the settings name it and its port (for a backend's validate). */
    public static String checkedSeedAddress(WeightLoaderSettings s, String backend) {
        String ip = s.remote().seedIp().orElseThrow(() -> new WeightLoaderConfigException(
                "weight-loader.remote-instance.seed-instance-ip", "the " + backend + " backend needs the seed's address"
                + " (or a registry that lists the model's sources: weight-loader.directory and weight-loader.model-id)"));
        if (s.remote().seedPort() == 0) {
            throw new WeightLoaderConfigException(
                    "weight-loader.remote-instance.seed-instance-service-port",
                    "the " + backend + " backend needs the seed's control-plane port");
        }
        return ip;
    }

    /** The host this client dials (an IPv6 address without brackets). */
    public String host() {
        return host;
    }

    /** The time allowed for one request. */
    public Duration requestTimeout() {
        return requestTimeout;
    }

    /** {@code host:port} of the control plane, for messages. */
    public String peer() {
        return (host.contains(":") ? "[" + host + "]" : host) + ":" + port;
    }

    /** Fetches and validates the manifest of {@code rank}. */
    public Manifest manifest(RankKey rank) {
        byte[] body = get("/v1/manifest?tp=" + rank.tp() + "&pp=" + rank.pp());
        Manifest m;
        try {
            m = JSON.readValue(body, Manifest.class);
        } catch (IOException e) {
            throw new WeightLoaderException("seed " + peer() + " sent a manifest that is not valid JSON: "
                    + e.getMessage(), e);
        }
        m.validate(peer());
        if (m.tp() != rank.tp() || m.pp() != rank.pp()) {
            throw new WeightLoaderException("seed " + peer() + " answered for rank tp" + m.tp() + "-pp" + m.pp()
                    + " when asked for " + rank);
        }
        return m;
    }

    /** The rank's current generation id (a small request, for checking that weights did not change). */
    public String generation(RankKey rank) {
        byte[] body = get("/v1/session?tp=" + rank.tp() + "&pp=" + rank.pp());
        try {
            JsonNode n = JSON.readTree(body);
            JsonNode g = n == null ? null : n.get("generation");
            if (g == null || !g.isTextual() || g.textValue().isBlank()) {
                throw new WeightLoaderException("seed " + peer() + " sent a session without a generation");
            }
            return g.textValue();
        } catch (IOException e) {
            throw new WeightLoaderException("seed " + peer() + " sent a session that is not valid JSON: "
                    + e.getMessage(), e);
        }
    }

    /** GET with retries; returns the body of a 200 answer. */
    public byte[] get(String pathAndQuery) {
        return send(pathAndQuery, null, Set.of());
    }

    /**
     * POST of a JSON body with retries; an answer whose status is in {@code retryOn} (e.g. 409 busy) is retried
     * like a transient failure. Returns the body of a 200 answer.
     */
    public byte[] post(String pathAndQuery, byte[] json, Set<Integer> retryOn) {
        return send(pathAndQuery, json, retryOn);
    }

    private byte[] send(String pathAndQuery, byte[] postBody, Set<Integer> retryOn) {
        URL url;
        try {
            url = URI.create((tls != null ? "https://" : "http://") + peer() + pathAndQuery).toURL();
        } catch (IOException | IllegalArgumentException e) {
            throw new WeightLoaderException("bad seed address " + peer() + pathAndQuery + ": " + e.getMessage(), e);
        }
        WeightLoaderException last = null;
        int attempts = 0;
        for (int attempt = 0; attempt <= retries; attempt++) {
            if (attempt > 0) {
                long pause = Math.min(2000, 100L << Math.min(attempt, 5));
                if (System.nanoTime() + pause * 1_000_000 >= deadline) {
                    break; // no retry can end before the load's deadline
                }
                sleep(pause);
            }
            long left = deadline == Long.MAX_VALUE ? Long.MAX_VALUE : (deadline - System.nanoTime()) / 1_000_000;
            if (left <= 0) {
                if (last == null) {
                    last = new WeightLoaderException("the load's deadline passed before asking seed " + peer() + " for "
                            + pathAndQuery);
                }
                break;
            }
            attempts++;
            HttpURLConnection c = null;
            try {
                // the caller's thread does the I/O (no hand-off to a selector thread: a small request takes a
                // fraction of a millisecond); connections are kept alive between requests; never through a
                // proxy, never following a redirect
                c = (HttpURLConnection) url.openConnection(Proxy.NO_PROXY);
                if (c instanceof HttpsURLConnection https) {
                    https.setSSLSocketFactory(tls.getSocketFactory()); // the seed must chain to weight-loader.tls.ca
                }
                c.setConnectTimeout((int) Math.min(timeoutMillis(connectTimeout), left));
                c.setReadTimeout((int) Math.min(timeoutMillis(requestTimeout), left));
                c.setInstanceFollowRedirects(false);
                c.setUseCaches(false);
                if (token.isPresent()) {
                    c.setRequestProperty("Authorization", "Bearer " + token.get());
                }
                if (postBody != null) {
                    c.setRequestMethod("POST");
                    c.setRequestProperty("Content-Type", "application/json");
                    c.setDoOutput(true);
                    // streaming mode: a POST is never re-sent behind our back on a stale connection
                    c.setFixedLengthStreamingMode(postBody.length);
                    try (OutputStream out = c.getOutputStream()) {
                        out.write(postBody);
                    }
                }
                int status = c.getResponseCode();
                byte[] body;
                try (InputStream in = status >= 400 ? c.getErrorStream() : c.getInputStream()) {
                    body = in == null ? new byte[0] : in.readNBytes(MAX_MANIFEST_BYTES + 1);
                }
                if (body.length > MAX_MANIFEST_BYTES) {
                    c.disconnect();
                    throw new WeightLoaderException("seed " + peer() + " sent more than " + MAX_MANIFEST_BYTES
                            + " bytes for " + pathAndQuery);
                }
                if (status == 200) {
                    return body;
                }
                String msg = "seed " + peer() + " answered " + status + " to " + pathAndQuery + ": "
                        + new String(body, 0, Math.min(body.length, 500), StandardCharsets.UTF_8);
                if (status == 401) {
                    throw new SeedRefusedException(msg + " (check weight-loader.remote-instance.token)", 401);
                }
                if (status < 500 && !retryOn.contains(status)) {
                    throw new SeedRefusedException(msg, status);
                }
                if (status == 503 && msg.contains("shutting down")) {
                    throw new SeedRefusedException(msg, status); // it will not come back: asking again only delays
                }
                last = new SeedRefusedException(msg, status);
            } catch (IOException e) {
                if (c != null) {
                    c.disconnect();
                }
                last = new WeightLoaderException("cannot reach seed " + peer() + " for " + pathAndQuery + ": " + e, e);
                LOG.debug("attempt {} of {} failed", attempt + 1, retries + 1, e);
            }
            if (Thread.currentThread().isInterrupted()) {
                throw new WeightLoaderException("interrupted while asking seed " + peer(), last);
            }
        }
        String message = last.getMessage() + " (after " + attempts + " attempt" + (attempts == 1 ? "" : "s")
                + (deadline != Long.MAX_VALUE && System.nanoTime() >= deadline - 1_000_000 ? ", at the load's deadline"
                : "") + ")";
        throw last instanceof SeedRefusedException refused
                ? new SeedRefusedException(message, refused.status(), last) : new WeightLoaderException(message, last);
    }

    /** A timeout in whole milliseconds for URLConnection, where 0 would mean "none": at least 1 ms. */
    private static int timeoutMillis(Duration d) {
        return (int) Math.max(1, Math.min(Integer.MAX_VALUE, d.toMillis()));
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new WeightLoaderException("interrupted", e);
        }
    }
}
