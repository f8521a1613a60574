package io.weightloader.seed.registry;

import io.weightloader.api.config.RankKey;
import io.weightloader.seed.Manifest;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.List;
import java.util.Objects;
import java.util.regex.Pattern;

/**
 * What a source serves, as a client must match it before reading from the source (docs/PROTOCOL.md, "Registry"): the
 * root's weight generation, how the weights are split (tp size and layout), the rank, a digest of every tensor's name,
 * dtype and shape, and the digest of the root's checksum list. Two sources with equal fingerprints serve the same
 * bytes (by the root's word: a client still checks every byte against the root's checksums).
 *
 * @param generation      the root's weight generation (a manifest's {@code generation})
 * @param tpSize          how many tp ranks the weights are split over (1: whole tensors)
 * @param layout          the tp layout ({@code none}, {@code llama}, a rules file's name)
 * @param rank            the (tp, pp) rank served
 * @param namesDigest     SHA-256 (hex) of the names, dtypes and shapes ({@link #namesDigest(List)})
 * @param checksumsDigest SHA-256 (hex) of the root's checksum list ({@link #checksumsDigest(List)}), or "" when the
 *                        root publishes no checksums
 */
public record Fingerprint(String generation, int tpSize, String layout, RankKey rank, String namesDigest,
                          String checksumsDigest) {
    static final Pattern GENERATION = Pattern.compile("[A-Za-z0-9._:+-]{1,128}");
    static final Pattern LAYOUT = Pattern.compile("[A-Za-z0-9._/+-]{1,256}");
    static final Pattern HEX64 = Pattern.compile("[0-9a-f]{64}");
    /** The most tp ranks a fingerprint may name (as {@code weight-loader.rank.tp-size} allows). */
    static final int MAX_TP_SIZE = 1_000_001;

    public Fingerprint {
        Objects.requireNonNull(generation, "generation is null");
        Objects.requireNonNull(layout, "layout is null");
        Objects.requireNonNull(rank, "rank is null");
        Objects.requireNonNull(namesDigest, "namesDigest is null");
        Objects.requireNonNull(checksumsDigest, "checksumsDigest is null");
        if (!GENERATION.matcher(generation).matches()) {
            throw new IllegalArgumentException("generation must match " + GENERATION + "; got '" + clip(generation)
                    + "'");
        }
        if (tpSize < 1 || tpSize > MAX_TP_SIZE) {
            throw new IllegalArgumentException("tp size must be in [1, " + MAX_TP_SIZE + "]; got " + tpSize);
        }
        if (!LAYOUT.matcher(layout).matches()) {
            throw new IllegalArgumentException("layout must match " + LAYOUT + "; got '" + clip(layout) + "'");
        }
        if (!HEX64.matcher(namesDigest).matches()) {
            throw new IllegalArgumentException("names digest must be 64 lower-case hex digits; got '"
                    + clip(namesDigest) + "'");
        }
        if (!checksumsDigest.isEmpty() && !HEX64.matcher(checksumsDigest).matches()) {
            throw new IllegalArgumentException("checksums digest must be 64 lower-case hex digits or empty; got '"
                    + clip(checksumsDigest) + "'");
        }
    }

    /** The fingerprint of what a root publishes for one rank. */
    public static Fingerprint of(Manifest m) {
        return new Fingerprint(m.generation(), m.tpSizeOrOne(), m.layout() == null ? "none" : m.layout(),
                new RankKey(m.tp(), m.pp()), namesDigest(m.tensors()),
                m.publishesChecksums() ? checksumsDigest(m.tensors()) : "");
    }

    /** SHA-256 over {@code name TAB dtype TAB shape LF} per tensor, by name. */
    public static String namesDigest(List<Manifest.Entry> tensors) {
        StringBuilder sb = new StringBuilder();
        for (Manifest.Entry e : sorted(tensors)) {
            sb.append(e.name()).append('\t').append(e.dtype()).append('\t').append(e.shape()).append('\n');
        }
        return sha256(sb.toString());
    }

    /**
     * SHA-256 over {@code name TAB sha256 LF} per tensor, by name, then {@code name TAB blocks TAB dim TAB sha256,...
     * LF} for each tensor with block checksums: the whole checksum list a client verifies bytes against.
     */
    public static String checksumsDigest(List<Manifest.Entry> tensors) {
        StringBuilder sb = new StringBuilder();
        List<Manifest.Entry> byName = sorted(tensors);
        for (Manifest.Entry e : byName) {
            sb.append(e.name()).append('\t').append(e.sha256()).append('\n');
        }
        for (Manifest.Entry e : byName) {
            if (e.blocks() != null) {
                sb.append(e.name()).append("\tblocks\t").append(e.blocks().dim()).append('\t')
                        .append(String.join(",", e.blocks().sha256())).append('\n');
            }
        }
        return sha256(sb.toString());
    }

    private static List<Manifest.Entry> sorted(List<Manifest.Entry> tensors) {
        return tensors.stream().sorted(Comparator.comparing(Manifest.Entry::name)).toList();
    }

    static String sha256(String text) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256")
                    .digest(text.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JDK", e);
        }
    }

    /** A hostile string, cut for a message. */
    static String clip(String s) {
        String t = s.length() > 80 ? s.substring(0, 80) + "..." : s;
        return t.replaceAll("[^\\x20-\\x7e]", "?");
    }
}
