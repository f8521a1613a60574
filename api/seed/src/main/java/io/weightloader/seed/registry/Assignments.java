package io.weightloader.seed.registry;

import com.fasterxml.jackson.databind.JsonNode;
import io.weightloader.api.config.RankKey;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * An assignment's key and value in a registry (docs/PROTOCOL.md, "Registry", assignments): which client reads from
 * which source of a model's rank now ({@code source-strategy = tree}: one client per source at a time), and their
 * strict parsing, with the limits of {@link Entries}: a registry is shared, so whatever it holds is treated as hostile.
 *
 * <pre>
 * key:   /weightloader/assignments/&lt;model id, URL-encoded&gt;/&lt;tp&gt;-&lt;pp&gt;/&lt;source host:port&gt;
 * value: {"version":1,"model_id":"M","source":"host:port","client":"id"}
 * </pre>
 * The key lives on a lease of the client's: it goes when the client ends its load, or within the lease's TTL when the
 * client dies. Assignments are kept apart from the entries ({@link Entries#PREFIX}) so that a reader of the entries
 * never meets one.
 */
public final class Assignments {
    public static final String PREFIX = "/weightloader/assignments/";
    public static final int VERSION = 1;
    /** A client's id: a relay's {@code host:port}, or {@code client-<uuid>} (as the in-process directory takes). */
    static final Pattern CLIENT = Pattern.compile("[A-Za-z0-9.:\\[\\]_-]{1,300}");
    private static final Set<String> FIELDS = Set.of("version", "model_id", "source", "client");

    /** Who holds a source: {@code client} reads from {@code source}. */
    public record Held(String source, String client) {
    }

    private Assignments() {
    }

    /** @throws IllegalArgumentException unless {@code client} is 1..300 characters of {@code [A-Za-z0-9.:[]_-]} */
    public static String checkClient(String client) {
        if (client == null || !CLIENT.matcher(client).matches()) {
            throw new IllegalArgumentException("a client id must be 1..300 characters of letters, digits and"
                    + " . : [ ] _ -; got '" + (client == null ? "null" : Fingerprint.clip(client)) + "'");
        }
        return client;
    }

    /** The prefix of every assignment of {@code modelId} at {@code rank}. */
    public static String rankPrefix(String modelId, RankKey rank) {
        return PREFIX + URLEncoder.encode(SourceEntry.checkModelId(modelId), StandardCharsets.UTF_8) + "/"
                + rank.tp() + "-" + rank.pp() + "/";
    }

    /** The key of {@code source}'s assignment. */
    public static String key(String modelId, RankKey rank, String source) {
        return rankPrefix(modelId, rank) + SourceEntry.checkAddress(source);
    }

    public static String value(String modelId, String source, String client) {
        return Entries.STRICT.createObjectNode().put("version", VERSION).put("model_id", modelId)
                .put("source", SourceEntry.checkAddress(source)).put("client", checkClient(client)).toString();
    }

    /**
     * Parses the assignment stored under {@code key} in {@code prefix} (a {@link #rankPrefix}).
     *
     * @throws IllegalArgumentException saying what is wrong with it
     */
    public static Held parse(String prefix, byte[] key, byte[] value) {
        String keySource = SourceEntry.checkAddress(Entries.keyUnder(prefix, key, value));
        JsonNode v = Entries.object(value);
        Entries.fieldsOnly(v, FIELDS, "value");
        if (Entries.integer(v, "version", 1, 1_000_000) != VERSION) {
            throw new IllegalArgumentException("value has version " + v.get("version") + " (this client reads "
                    + VERSION + ")");
        }
        String source = Entries.text(v, "source");
        if (!source.equals(keySource)) {
            throw new IllegalArgumentException("value's source '" + Fingerprint.clip(source)
                    + "' differs from its key's");
        }
        String model = Entries.text(v, "model_id");
        SourceEntry.checkModelId(model);
        if (!prefix.startsWith(PREFIX + URLEncoder.encode(model, StandardCharsets.UTF_8) + "/")) {
            throw new IllegalArgumentException("value's model id '" + Fingerprint.clip(model)
                    + "' differs from its key's");
        }
        return new Held(source, checkClient(Entries.text(v, "client")));
    }
}
