package io.weightloader.seed;

import com.fasterxml.jackson.databind.JsonNode;
import com.sun.net.httpserver.HttpExchange;
import io.weightloader.api.config.WeightLoaderConfigException;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * SGLang's memory-saver endpoints: {@code POST /release_memory_occupation} and {@code POST
 * /resume_memory_occupation}, body {@code {"tags": ["weights"]}} (tags absent or null: everything the seed holds,
 * its weights). A seed holds only weights, so any other tag ({@code kv_cache}, {@code cuda_graph}) is refused with 400
 * naming the tags accepted, rather than ignored: a caller who asked for something else learns it was not done.
 * {@code "keep_host_copy": true} (release only, not SGLang's) keeps a host copy to resume from. Any other field is a
 * 400 naming it.
 */
final class MemoryEndpoints {
    private static final Logger LOG = LoggerFactory.getLogger(MemoryEndpoints.class);
    static final String RELEASE = "/release_memory_occupation";
    static final String RESUME = "/resume_memory_occupation";
    static final Set<String> PATHS = Set.of(RELEASE, RESUME);
    static final List<String> TAGS = List.of("weights");

    private volatile MemoryControl control;

    void control(MemoryControl control) {
        this.control = control;
    }

    void handle(HttpExchange ex, String path) throws IOException {
        byte[] body = ex.getRequestBody().readNBytes(SeedHttp.MAX_BODY + 1);
        if (body.length > SeedHttp.MAX_BODY) {
            SeedHttp.reply(ex, 413, Map.of("error", "request body over " + SeedHttp.MAX_BODY + " bytes"));
            return;
        }
        boolean keepHostCopy;
        try {
            keepHostCopy = parse(body, path.equals(RELEASE));
        } catch (IllegalArgumentException e) {
            SeedHttp.reply(ex, 400, Map.of("error", path + ": " + e.getMessage()));
            return;
        }
        MemoryControl c = control;
        if (c == null) {
            SeedHttp.reply(ex, 501, Map.of("error", "this seed cannot release its memory: its host registered no"
                    + " memory control (SeedHost does, with weight-loader.enable-memory-saver = true)"));
            return;
        }
        Map<String, Object> answer = new LinkedHashMap<>();
        answer.put("success", true);
        try {
            answer.putAll(path.equals(RELEASE) ? c.release(keepHostCopy) : c.resume());
        } catch (WeightLoaderConfigException | IllegalStateException e) {
            SeedHttp.reply(ex, 409, Map.of("success", false, "message", String.valueOf(e.getMessage())));
            return;
        } catch (RuntimeException e) {
            LOG.warn("{} failed", path, e);
            SeedHttp.reply(ex, 500, Map.of("success", false, "message", e.getMessage() == null ? e.toString()
                    : e.getMessage()));
            return;
        }
        SeedHttp.reply(ex, 200, answer);
    }

    /**
     * Checks the body strictly: a JSON object with {@code tags} (absent, null, or a non-empty list of accepted tags)
     * and, for a release, {@code keep_host_copy} (a boolean).
     *
     * @return keep_host_copy
     */
    static boolean parse(byte[] body, boolean release) {
        JsonNode n;
        try {
            n = Json.MAPPER.readTree(body);
        } catch (IOException e) {
            throw new IllegalArgumentException("the body is not JSON: " + e.getMessage().lines().findFirst().orElse(""));
        }
        if (n == null || !n.isObject()) {
            throw new IllegalArgumentException("the body must be a JSON object, e.g. {\"tags\": [\"weights\"]}");
        }
        Set<String> fields = release ? Set.of("tags", "keep_host_copy") : Set.of("tags");
        for (Iterator<String> it = n.fieldNames(); it.hasNext(); ) {
            String f = it.next();
            if (!fields.contains(f)) {
                throw new IllegalArgumentException("unknown field '" + f + "' (takes " + fields.stream().sorted()
                        .toList() + ")");
            }
        }
        JsonNode tags = n.get("tags");
        if (tags != null && !tags.isNull()) {
            if (!tags.isArray() || tags.isEmpty()) {
                throw new IllegalArgumentException("tags must be a non-empty list of strings; tags accepted: " + TAGS);
            }
            List<String> unknown = new ArrayList<>();
            for (JsonNode t : tags) {
                if (!t.isTextual()) {
                    throw new IllegalArgumentException("tags must be strings, got " + t + "; tags accepted: " + TAGS);
                }
                if (!TAGS.contains(t.asText())) {
                    unknown.add(t.asText());
                }
            }
            if (!unknown.isEmpty()) {
                throw new IllegalArgumentException("tag(s) " + unknown + " not held here: a seed holds only its"
                        + " weights; tags accepted: " + TAGS);
            }
        }
        JsonNode keep = n.get("keep_host_copy");
        if (keep != null && !keep.isBoolean()) {
            throw new IllegalArgumentException("keep_host_copy must be true or false, got " + keep);
        }
        return keep != null && keep.asBoolean();
    }
}
