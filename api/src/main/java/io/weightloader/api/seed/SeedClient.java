package io.weightloader.api.seed;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Optional;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Talks to a seed's control plane with timeouts on every request and bounded retries (with backoff) for
 * transient failures; a refusal (bad token, unknown rank) is reported at once, not retried.
 */
public final class SeedClient {
    private static final Logger LOG = LoggerFactory.getLogger(SeedClient.class);
    private static final ObjectMapper JSON = new ObjectMapper()
            .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false)
            .configure(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES, true);
    /** Largest manifest accepted (about 200,000 tensors). */
    public static final int MAX_MANIFEST_BYTES = 64 << 20;
    /** HTTP clients are costly to start (a selector thread each) and safe to share: one per connect timeout. */
    private static final java.util.concurrent.ConcurrentHashMap<Duration, HttpClient> CLIENTS =
            new java.util.concurrent.ConcurrentHashMap<>();

    private final String host;
    private final int port;
    private final Optional<String> token;
    private final Duration requestTimeout;
    private final int retries;
    private final HttpClient http;

    public SeedClient(String host, int port, Optional<String> token, Duration connectTimeout, Duration requestTimeout,
                      int retries) {
        this.host = host;
        this.port = port;
        this.token = token;
        this.requestTimeout = requestTimeout;
        this.retries = retries;
        this.http = CLIENTS.computeIfAbsent(connectTimeout, t -> HttpClient.newBuilder().connectTimeout(t)
                .version(HttpClient.Version.HTTP_1_1).build());
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
            com.fasterxml.jackson.databind.JsonNode n = JSON.readTree(body);
            com.fasterxml.jackson.databind.JsonNode g = n == null ? null : n.get("generation");
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
        URI uri = URI.create("http://" + peer() + pathAndQuery);
        WeightLoaderException last = null;
        for (int attempt = 0; attempt <= retries; attempt++) {
            if (attempt > 0) {
                sleep(Math.min(2000, 100L << Math.min(attempt, 5)));
            }
            HttpRequest.Builder b = HttpRequest.newBuilder(uri).timeout(requestTimeout);
            if (postBody == null) {
                b.GET();
            } else {
                b.header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofByteArray(postBody));
            }
            token.ifPresent(t -> b.header("Authorization", "Bearer " + t));
            try {
                HttpResponse<InputStream> r = http.send(b.build(), HttpResponse.BodyHandlers.ofInputStream());
                byte[] body;
                try (InputStream in = r.body()) {
                    body = in.readNBytes(MAX_MANIFEST_BYTES + 1);
                }
                if (body.length > MAX_MANIFEST_BYTES) {
                    throw new WeightLoaderException("seed " + peer() + " sent more than " + MAX_MANIFEST_BYTES
                            + " bytes for " + pathAndQuery);
                }
                if (r.statusCode() == 200) {
                    return body;
                }
                String msg = "seed " + peer() + " answered " + r.statusCode() + " to " + pathAndQuery + ": "
                        + new String(body, 0, Math.min(body.length, 500), java.nio.charset.StandardCharsets.UTF_8);
                if (r.statusCode() == 401) {
                    throw new SeedRefusedException(msg + " (check weight-loader.remote-instance.token)", 401);
                }
                if (r.statusCode() < 500 && !retryOn.contains(r.statusCode())) {
                    throw new SeedRefusedException(msg, r.statusCode());
                }
                last = new SeedRefusedException(msg, r.statusCode());
            } catch (IOException e) {
                last = new WeightLoaderException("cannot reach seed " + peer() + " for " + pathAndQuery + ": " + e, e);
                LOG.debug("attempt {} of {} failed", attempt + 1, retries + 1, e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new WeightLoaderException("interrupted while asking seed " + peer(), e);
            }
        }
        String message = last.getMessage() + " (after " + (retries + 1) + " attempts)";
        throw last instanceof SeedRefusedException refused
                ? new SeedRefusedException(message, refused.status(), last) : new WeightLoaderException(message, last);
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
