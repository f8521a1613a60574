package io.weightloader.seed.registry;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.weightloader.api.config.RankKey;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * A chain's keys and values in a registry (docs/PROTOCOL.md, "Registry", chains): {@code source-strategy = chain}
 * over a registry, where each relay that serves while it loads joins the end of its model's rank's chain and reads
 * from the link before it. Parsed strictly with the limits of {@link Entries}.
 *
 * <pre>
 * /weightloader/chains/&lt;model id, URL-encoded&gt;/&lt;tp&gt;-&lt;pp&gt;/end
 *     {"version":1,"model_id":"M","address":"host:port"}                      the newest link
 * /weightloader/chains/&lt;model id, URL-encoded&gt;/&lt;tp&gt;-&lt;pp&gt;/links/&lt;host:port&gt;
 *     {"version":1,"model_id":"M","address":"host:port","after":"host:port"}  what it joined after ("" for none)
 * </pre>
 * Both live on the lease of the relay's entry: they go when it leaves or dies.
 */
public final class Chains {
    public static final String PREFIX = "/weightloader/chains/";
    public static final int VERSION = 1;
    private static final Set<String> END_FIELDS = Set.of("version", "model_id", "address");
    private static final Set<String> LINK_FIELDS = Set.of("version", "model_id", "address", "after");

    /**
     * A model's rank's chain as listed: its end (the newest relay that joined), and what each relay joined after
     * ({@code ""}: it was the first and reads from a ready source).
     */
    public record Chain(Optional<String> end, Map<String, String> after) {
        public Chain {
            after = Map.copyOf(after);
        }

        public static Chain empty() {
            return new Chain(Optional.empty(), Map.of());
        }
    }

    private Chains() {
    }

    /** The prefix of every key of the chain of {@code modelId} at {@code rank}. */
    public static String rankPrefix(String modelId, RankKey rank) {
        return PREFIX + URLEncoder.encode(SourceEntry.checkModelId(modelId), StandardCharsets.UTF_8) + "/"
                + rank.tp() + "-" + rank.pp() + "/";
    }

    public static String endKey(String modelId, RankKey rank) {
        return rankPrefix(modelId, rank) + "end";
    }

    public static String linkKey(String modelId, RankKey rank, String address) {
        return rankPrefix(modelId, rank) + "links/" + SourceEntry.checkAddress(address);
    }

    public static String endValue(String modelId, String address) {
        return Entries.STRICT.createObjectNode().put("version", VERSION).put("model_id", modelId)
                .put("address", SourceEntry.checkAddress(address)).toString();
    }

    /** @param after the link before, or empty for the first */
    public static String linkValue(String modelId, String address, Optional<String> after) {
        ObjectNode v = Entries.STRICT.createObjectNode().put("version", VERSION).put("model_id", modelId)
                .put("address", SourceEntry.checkAddress(address));
        return v.put("after", after.map(SourceEntry::checkAddress).orElse("")).toString();
    }

    /**
     * Parses a key under {@code prefix} (a {@link #rankPrefix}) and its value into {@code end} (the end's address) or
     * {@code links} (address -> after).
     *
     * @return the end's address for the end key, null for a link
     * @throws IllegalArgumentException saying what is wrong with it
     */
    public static String parse(String prefix, byte[] key, byte[] value, Map<String, String> links) {
        String rest = Entries.keyUnder(prefix, key, value);
        boolean end = rest.equals("end");
        if (!end && !rest.startsWith("links/")) {
            throw new IllegalArgumentException("key is neither 'end' nor 'links/host:port'");
        }
        String keyAddress = end ? null : SourceEntry.checkAddress(rest.substring("links/".length()));
        JsonNode v = Entries.object(value);
        Entries.fieldsOnly(v, end ? END_FIELDS : LINK_FIELDS, "value");
        if (Entries.integer(v, "version", 1, 1_000_000) != VERSION) {
            throw new IllegalArgumentException("value has version " + v.get("version") + " (this client reads "
                    + VERSION + ")");
        }
        String model = SourceEntry.checkModelId(Entries.text(v, "model_id"));
        if (!prefix.startsWith(PREFIX + URLEncoder.encode(model, StandardCharsets.UTF_8) + "/")) {
            throw new IllegalArgumentException("value's model id '" + Fingerprint.clip(model)
                    + "' differs from its key's");
        }
        String address = SourceEntry.checkAddress(Entries.text(v, "address"));
        if (end) {
            return address;
        }
        if (!address.equals(keyAddress)) {
            throw new IllegalArgumentException("value's address '" + Fingerprint.clip(address)
                    + "' differs from its key's");
        }
        String after = Entries.text(v, "after");
        if (!after.isEmpty()) {
            SourceEntry.checkAddress(after);
        }
        links.put(address, after);
        return null;
    }
}
