package io.weightloader.seed.registry;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.weightloader.api.config.RankKey;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A registry entry's key and value (docs/PROTOCOL.md, "Registry"), and their strict parsing: a registry is shared, so
 * whatever it holds is treated as hostile (sizes bounded, known fields of the right types only, the key and the value
 * must agree).
 *
 * <pre>
 * key:   /weightloader/models/&lt;model id, URL-encoded&gt;/&lt;tp&gt;-&lt;pp&gt;/&lt;host:port&gt;
 * value: {"version":1,"address":"host:port","model_id":"M","ready":true,
 *         "fingerprint":{"generation":"g","tp_size":1,"layout":"none","tp":0,"pp":0,
 *                        "names_digest":"64 hex","checksums_digest":"64 hex or empty"}}
 * </pre>
 */
public final class Entries {
    private static final Logger LOG = LoggerFactory.getLogger(Entries.class);
    public static final String PREFIX = "/weightloader/models/";
    /** Longest key a registry entry may have (bytes). */
    public static final int MAX_KEY_BYTES = 1024;
    /** Longest value a registry entry may have (bytes). */
    public static final int MAX_VALUE_BYTES = 4096;
    public static final int VERSION = 1;

    private static final Set<String> FIELDS = Set.of("version", "address", "model_id", "ready", "fingerprint");
    private static final Set<String> FINGERPRINT_FIELDS = Set.of("generation", "tp_size", "layout", "tp", "pp",
            "names_digest", "checksums_digest");
    static final ObjectMapper STRICT = new ObjectMapper(JsonFactory.builder()
            .streamReadConstraints(StreamReadConstraints.builder().maxNestingDepth(4)
                    .maxStringLength(MAX_VALUE_BYTES).maxNumberLength(20).build()).build())
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(com.fasterxml.jackson.core.JsonParser.Feature.STRICT_DUPLICATE_DETECTION);

    private Entries() {
    }

    /** The prefix of every entry of {@code modelId} (all ranks). */
    public static String modelPrefix(String modelId) {
        return PREFIX + URLEncoder.encode(SourceEntry.checkModelId(modelId), StandardCharsets.UTF_8) + "/";
    }

    /** The prefix of every entry of {@code modelId} at {@code rank}. */
    public static String rankPrefix(String modelId, RankKey rank) {
        return modelPrefix(modelId) + rank.tp() + "-" + rank.pp() + "/";
    }

    public static String key(SourceEntry e) {
        return rankPrefix(e.modelId(), e.fingerprint().rank()) + e.address();
    }

    public static String value(SourceEntry e) {
        Fingerprint f = e.fingerprint();
        ObjectNode fp = STRICT.createObjectNode()
                .put("generation", f.generation()).put("tp_size", f.tpSize()).put("layout", f.layout())
                .put("tp", f.rank().tp()).put("pp", f.rank().pp())
                .put("names_digest", f.namesDigest()).put("checksums_digest", f.checksumsDigest());
        ObjectNode v = STRICT.createObjectNode().put("version", VERSION).put("address", e.address())
                .put("model_id", e.modelId()).put("ready", e.ready());
        v.set("fingerprint", fp);
        return v.toString();
    }

    /**
     * The part of {@code key} after {@code prefix}, once key and value are within the size limits and the key is
     * under the prefix.
     *
     * @throws IllegalArgumentException saying which limit or prefix it breaks
     */
    static String keyUnder(String prefix, byte[] key, byte[] value) {
        if (key.length > MAX_KEY_BYTES) {
            throw new IllegalArgumentException("key of " + key.length + " bytes (at most " + MAX_KEY_BYTES + ")");
        }
        if (value.length > MAX_VALUE_BYTES) {
            throw new IllegalArgumentException("value of " + value.length + " bytes (at most " + MAX_VALUE_BYTES
                    + ")");
        }
        String k = new String(key, StandardCharsets.UTF_8);
        if (!k.startsWith(prefix)) {
            throw new IllegalArgumentException("key outside " + prefix);
        }
        return k.substring(prefix.length());
    }

    /**
     * {@code value} parsed strictly as one JSON object.
     *
     * @throws IllegalArgumentException when it is not JSON, or not an object
     */
    static JsonNode object(byte[] value) {
        JsonNode v;
        try {
            v = STRICT.readTree(value);
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException("value is not JSON: " + Fingerprint.clip(e.getOriginalMessage()));
        } catch (java.io.IOException e) {
            throw new IllegalArgumentException("value is unreadable: " + e);
        }
        if (v == null || !v.isObject()) {
            throw new IllegalArgumentException("value is not a JSON object");
        }
        return v;
    }

    /**
     * Parses the entry stored under {@code key} in {@code prefix} (a {@link #rankPrefix}).
     *
     * @throws IllegalArgumentException saying what is wrong with it (its key and value are clipped in messages)
     */
    public static SourceEntry parse(String prefix, byte[] key, byte[] value) {
        String keyAddress = SourceEntry.checkAddress(keyUnder(prefix, key, value));
        JsonNode v = object(value);
        fieldsOnly(v, FIELDS, "value");
        if (integer(v, "version", 1, 1_000_000) != VERSION) {
            throw new IllegalArgumentException("value has version " + v.get("version") + " (this client reads "
                    + VERSION + ")");
        }
        String address = text(v, "address");
        if (!address.equals(keyAddress)) {
            throw new IllegalArgumentException("value's address '" + Fingerprint.clip(address)
                    + "' differs from its key's");
        }
        String model = text(v, "model_id");
        if (!prefix.startsWith(modelPrefix(model))) {
            throw new IllegalArgumentException("value's model id '" + Fingerprint.clip(model)
                    + "' differs from its key's");
        }
        JsonNode ready = v.get("ready");
        if (ready == null || !ready.isBoolean()) {
            throw new IllegalArgumentException("value's ready must be true or false");
        }
        JsonNode fp = v.get("fingerprint");
        if (fp == null || !fp.isObject()) {
            throw new IllegalArgumentException("value's fingerprint must be an object");
        }
        fieldsOnly(fp, FINGERPRINT_FIELDS, "fingerprint");
        RankKey rank = new RankKey(integer(fp, "tp", 0, 1_000_000), integer(fp, "pp", 0, 1_000_000));
        if (!prefix.equals(rankPrefix(model, rank))) {
            throw new IllegalArgumentException("value's rank " + rank + " differs from its key's");
        }
        Fingerprint f = new Fingerprint(text(fp, "generation"), integer(fp, "tp_size", 1, Fingerprint.MAX_TP_SIZE),
                text(fp, "layout"), rank, text(fp, "names_digest"), text(fp, "checksums_digest"));
        return new SourceEntry(address, model, f, ready.booleanValue());
    }

    /** The key, clipped and printable, for a log line. */
    public static String show(byte[] key) {
        return Fingerprint.clip(new String(key, 0, Math.min(key.length, 200), StandardCharsets.UTF_8));
    }

    /** The entries of {@code all} whose fingerprint is {@code wanted}; the others are named in a WARN line. */
    static List<SourceEntry> matching(String registry, String modelId, Fingerprint wanted, List<SourceEntry> all) {
        List<SourceEntry> out = new ArrayList<>();
        for (SourceEntry e : all) {
            if (e.fingerprint().equals(wanted)) {
                out.add(e);
            } else {
                LOG.warn("registry {}: skipped source {} of model {}: its fingerprint differs: {}", registry,
                        e.address(), modelId, difference(wanted, e.fingerprint()));
            }
        }
        return out;
    }

    /** How {@code other} differs from {@code wanted}, for a log line. */
    public static String difference(Fingerprint wanted, Fingerprint other) {
        StringBuilder sb = new StringBuilder();
        diff(sb, "generation", wanted.generation(), other.generation());
        diff(sb, "tp size", wanted.tpSize(), other.tpSize());
        diff(sb, "layout", wanted.layout(), other.layout());
        diff(sb, "rank", wanted.rank(), other.rank());
        diff(sb, "names digest", wanted.namesDigest(), other.namesDigest());
        diff(sb, "checksums digest", wanted.checksumsDigest(), other.checksumsDigest());
        return sb.toString();
    }

    private static void diff(StringBuilder sb, String what, Object wanted, Object got) {
        if (!wanted.equals(got)) {
            sb.append(sb.length() == 0 ? "" : ", ").append(what).append(' ').append(got).append(" (wanted ")
                    .append(wanted).append(')');
        }
    }

    static void fieldsOnly(JsonNode node, Set<String> known, String what) {
        for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
            String name = it.next().getKey();
            if (!known.contains(name)) {
                throw new IllegalArgumentException(what + " has an unknown field '" + Fingerprint.clip(name) + "'");
            }
        }
        for (String name : known) {
            if (!node.has(name)) {
                throw new IllegalArgumentException(what + " lacks '" + name + "'");
            }
        }
    }

    static String text(JsonNode node, String field) {
        JsonNode n = node.get(field);
        if (n == null || !n.isTextual()) {
            throw new IllegalArgumentException("'" + field + "' must be a string");
        }
        return n.textValue();
    }

    static int integer(JsonNode node, String field, int min, int max) {
        JsonNode n = node.get(field);
        if (n == null || !n.isIntegralNumber() || !n.canConvertToInt() || n.intValue() < min || n.intValue() > max) {
            throw new IllegalArgumentException("'" + field + "' must be a whole number in [" + min + ", " + max
                    + "]");
        }
        return n.intValue();
    }
}
