package io.weightloader.seed;

import com.fasterxml.jackson.databind.JsonNode;
import com.sun.net.httpserver.HttpExchange;
import io.weightloader.api.config.RankKey;
import java.io.IOException;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The directory's endpoints on a root seed's control plane (docs/PROTOCOL.md, "Directory"): relays register, beat and
 * leave; clients ask for a source, renew their lease on it while they read, say when they are done, and report a relay
 * whose bytes did not match the root's checksums. Every body is parsed strictly (known fields of the right types only).
 */
final class DirectoryEndpoints {
    private static final Logger LOG = LoggerFactory.getLogger(DirectoryEndpoints.class);

    /** The POST endpoints (the GET ones are {@code /v1/source} and {@code /v1/relays}). */
    static final Set<String> POSTS = Set.of("/v1/source", "/v1/source/renew", "/v1/source/done", "/v1/relays",
            "/v1/relays/leave", "/v1/relays/report");
    static final Set<String> GETS = Set.of("/v1/source", "/v1/relays");
    /** The query parameters of {@code GET /v1/source} (the POST takes them in its body). */
    static final Set<String> SOURCE_QUERY = Set.of("tp", "pp", "strategy", "client", "exclude", "failover", "wait");

    private static final Pattern ADDRESS =
            Pattern.compile("(\\[[0-9A-Fa-f:.]{2,64}\\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}");
    private static final Pattern CLIENT = Pattern.compile("[A-Za-z0-9.:\\[\\]_-]{1,300}");
    private static final Set<String> STRATEGIES = Set.of("star", "tree", "chain");
    /** Longest a {@code tree} client waits in one request for a free source (it asks again after). */
    private static final long MAX_SOURCE_WAIT_MILLIS = 5000;
    /** Most sources one request may exclude (each a host:port; a 1 MiB body holds many more). */
    static final int MAX_EXCLUDE = 4096;
    private static final int MAX_REASON = 1000;

    /** What the root publishes for a rank: its manifest, or null after answering 404. */
    interface Held {
        Manifest manifest(HttpExchange ex, RankKey rank) throws IOException;
    }

    private final Directory directory = new Directory();
    private final Held held;
    private final int maxBody;

    DirectoryEndpoints(Held held, int maxBody) {
        this.held = held;
        this.maxBody = maxBody;
    }

    Directory directory() {
        return directory;
    }

    /** Answers {@code path} (one of {@link #GETS} or {@link #POSTS}). */
    void handle(HttpExchange ex, String path, boolean post, Map<String, String> q) throws IOException {
        RankKey rank = SeedHttp.rank(ex, q, "tp");
        Manifest m = rank == null ? null : held.manifest(ex, rank);
        if (m == null) {
            return;
        }
        if (!post) {
            if (path.equals("/v1/relays")) {
                SeedHttp.reply(ex, 200, Map.of("relays", directory.relays(rank)));
            } else {
                List<String> exclude = new ArrayList<>();
                for (String e : q.getOrDefault("exclude", "").split(",")) {
                    if (!e.isEmpty()) {
                        exclude.add(URLDecoder.decode(e, StandardCharsets.UTF_8));
                    }
                }
                source(ex, rank, m, q.getOrDefault("strategy", "star"), q.getOrDefault("client", ""), exclude,
                        "true".equals(q.get("failover")), q.getOrDefault("wait", "0"));
            }
            return;
        }
        byte[] raw = ex.getRequestBody().readNBytes(maxBody + 1);
        if (raw.length > maxBody) {
            SeedHttp.reply(ex, 413, Map.of("error", "request body over " + maxBody + " bytes"));
            return;
        }
        JsonNode body;
        try {
            body = Json.MAPPER.readTree(raw);
        } catch (IOException e) {
            body = null;
        }
        if (body == null || !body.isObject()) {
            SeedHttp.reply(ex, 400, Map.of("error", "the body is not a JSON object"));
            return;
        }
        String unknown = unknownField(body, path);
        if (unknown != null) {
            SeedHttp.reply(ex, 400, Map.of("error", "unknown field '" + unknown + "' (" + path + " takes "
                    + fields(path) + ")"));
            return;
        }
        switch (path) {
            case "/v1/source" -> sourcePost(ex, rank, m, body);
            case "/v1/relays" -> register(ex, rank, m, body);
            case "/v1/relays/leave" -> {
                String address = address(ex, body, "address");
                if (address != null) {
                    directory.drop(rank, address);
                    SeedHttp.reply(ex, 200, Map.of("ok", true));
                }
            }
            case "/v1/relays/report" -> report(ex, rank, body);
            default -> { // /v1/source/done, /v1/source/renew
                String source = text(body, "source");
                String client = text(body, "client");
                if (source == null || !(source.equals(Directory.ROOT) || ADDRESS.matcher(source).matches())
                        || client == null || !CLIENT.matcher(client).matches()) {
                    SeedHttp.reply(ex, 400, Map.of("error", path + " takes source (\"root\" or host:port) and"
                            + " client (an id)"));
                    return;
                }
                if (path.equals("/v1/source/done")) {
                    directory.done(rank, source, client);
                    SeedHttp.reply(ex, 200, Map.of("ok", true));
                } else {
                    SeedHttp.reply(ex, 200, Map.of("renewed", directory.renew(rank, source, client)));
                }
            }
        }
    }

    private static Set<String> fields(String path) {
        return switch (path) {
            case "/v1/source" -> Set.of("strategy", "client", "exclude", "failover", "wait");
            case "/v1/relays" -> Set.of("address", "generation", "ready", "pipelined");
            case "/v1/relays/leave" -> Set.of("address");
            case "/v1/relays/report" -> Set.of("address", "client", "reason");
            default -> Set.of("source", "client");
        };
    }

    private static String unknownField(JsonNode body, String path) {
        Set<String> known = fields(path);
        for (Iterator<String> it = body.fieldNames(); it.hasNext(); ) {
            String f = it.next();
            if (!known.contains(f)) {
                return f.length() > 64 ? f.substring(0, 64) + "..." : f;
            }
        }
        return null;
    }

    private void sourcePost(HttpExchange ex, RankKey rank, Manifest m, JsonNode body) throws IOException {
        JsonNode ex0 = body.get("exclude");
        List<String> exclude = new ArrayList<>();
        if (ex0 != null && !ex0.isNull()) {
            if (!ex0.isArray() || ex0.size() > MAX_EXCLUDE) {
                SeedHttp.reply(ex, 400, Map.of("error", "exclude must be a list of at most " + MAX_EXCLUDE
                        + " sources"));
                return;
            }
            for (JsonNode e : ex0) {
                exclude.add(e.isTextual() ? e.textValue() : "");
            }
        }
        JsonNode failover = body.get("failover");
        JsonNode wait = body.get("wait");
        if (failover != null && !failover.isBoolean() || wait != null && !wait.canConvertToLong()) {
            SeedHttp.reply(ex, 400, Map.of("error", "failover must be true or false, wait milliseconds"));
            return;
        }
        source(ex, rank, m, body.has("strategy") ? text(body, "strategy") : "star", text(body, "client"), exclude,
                failover != null && failover.booleanValue(), wait == null ? "0" : Long.toString(wait.asLong()));
    }

    /** A source for a client by strategy; 503 (naming what is busy) while a tree client must wait longer. */
    private void source(HttpExchange ex, RankKey rank, Manifest m, String strategy, String client,
                        List<String> excludeList, boolean failover, String waitText) throws IOException {
        Set<String> exclude = new LinkedHashSet<>(excludeList);
        if (strategy == null || client == null || !CLIENT.matcher(client).matches() || !STRATEGIES.contains(strategy)
                || exclude.size() > MAX_EXCLUDE || exclude.stream().anyMatch(e -> !e.equals(Directory.ROOT)
                && !ADDRESS.matcher(e).matches())) {
            SeedHttp.reply(ex, 400, Map.of("error", "/v1/source takes strategy (star, tree, chain), client (an id)"
                    + " and exclude (at most " + MAX_EXCLUDE + " addresses host:port)"));
            return;
        }
        long wait;
        try {
            wait = Math.min(MAX_SOURCE_WAIT_MILLIS, Math.max(0, Long.parseLong(waitText)));
        } catch (NumberFormatException e) {
            SeedHttp.reply(ex, 400, Map.of("error", "wait must be milliseconds"));
            return;
        }
        if (!m.publishesChecksums()) {
            // a relay's bytes could not be checked against anything: every client reads from the root
            strategy = "star";
        }
        Directory.Source s;
        try {
            s = directory.choose(rank, strategy, client, exclude, failover, wait);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return;
        }
        if (s == null) {
            ex.getResponseHeaders().set("Retry-After", "0");
            SeedHttp.reply(ex, 503, Map.of("error", "every ready source is serving a client (" + directory.busy(rank)
                    + "); ask again"));
            return;
        }
        Map<String, Object> answer = new LinkedHashMap<>();
        answer.put("address", s.address());
        answer.put("ready", s.ready());
        answer.put("generation", m.generation());
        SeedHttp.reply(ex, 200, answer);
    }

    private void register(HttpExchange ex, RankKey rank, Manifest m, JsonNode body) throws IOException {
        String address = address(ex, body, "address");
        if (address == null) {
            return;
        }
        JsonNode ready = body.get("ready");
        JsonNode pipelined = body.get("pipelined");
        if (ready != null && !ready.isBoolean() || pipelined != null && !pipelined.isBoolean()) {
            SeedHttp.reply(ex, 400, Map.of("error", "ready and pipelined must be true or false"));
            return;
        }
        if (!m.publishesChecksums()) {
            LOG.warn("refused relay {} of rank {}: this root publishes no checksums", address, rank);
            SeedHttp.reply(ex, 409, Map.of("error", "this root publishes no checksums (its"
                    + " weight-loader.seed.publish-checksums = false), so clients could not check what a relay sends;"
                    + " it takes no relays"));
            return;
        }
        String generation = text(body, "generation");
        if (!m.generation().equals(generation)) {
            LOG.warn("refused relay {} of rank {}: it serves generation {}, this root {}", address, rank,
                    generation, m.generation());
            SeedHttp.reply(ex, 409, Map.of("error", "relay " + address + " serves generation " + generation
                    + ", this root serves " + m.generation() + "; a relay serves the root's weights only"));
            return;
        }
        directory.register(rank, address, ready != null && ready.booleanValue(),
                pipelined != null && pipelined.booleanValue());
        SeedHttp.reply(ex, 200, Map.of("heartbeatMillis", Directory.HEARTBEAT_MILLIS));
    }

    private void report(HttpExchange ex, RankKey rank, JsonNode body) throws IOException {
        String address = address(ex, body, "address");
        if (address == null) {
            return;
        }
        String client = text(body, "client");
        String reason = text(body, "reason");
        if (client == null || !CLIENT.matcher(client).matches() || reason == null || reason.length() > MAX_REASON) {
            SeedHttp.reply(ex, 400, Map.of("error", "/v1/relays/report takes address, client (an id) and reason"
                    + " (at most " + MAX_REASON + " characters)"));
            return;
        }
        if (!directory.report(rank, address, client, reason)) {
            SeedHttp.reply(ex, 404, Map.of("error", "no relay " + address + " is registered for rank " + rank));
            return;
        }
        LOG.warn("client {} reports relay {} of rank {}: {}; it is no one's source any more", client, address, rank,
                reason.replaceAll("[\\p{Cntrl}]", "?"));
        SeedHttp.reply(ex, 200, Map.of("ok", true));
    }

    /** The field {@code name}, a host:port; null after answering 400. */
    private static String address(HttpExchange ex, JsonNode body, String name) throws IOException {
        String a = text(body, name);
        if (a == null || !ADDRESS.matcher(a).matches()) {
            SeedHttp.reply(ex, 400, Map.of("error", "an address host:port is required"));
            return null;
        }
        return a;
    }

    private static String text(JsonNode n, String field) {
        JsonNode v = n == null ? null : n.get(field);
        return v != null && v.isTextual() ? v.textValue() : null;
    }
}
