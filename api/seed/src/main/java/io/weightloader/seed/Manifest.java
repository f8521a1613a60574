package io.weightloader.seed;

import com.fasterxml.jackson.annotation.JsonInclude;
import io.weightloader.api.DType;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * What a seed publishes for one rank: every tensor with its remote address, the engine and session that
 * serve reads, and a generation id that changes whenever the seed's weights change.
 *
 * @param generation id of the weights' current version; a client checks it did not change during a load
 * @param engine     engine that serves reads, e.g. {@code builtin-tcp}, {@code mooncake-tcp}
 * @param session    what the client's engine dials, {@code host:port}
 * @param serves     every backend this seed serves for the rank, with its engine (e.g.
 *                   {@code {"transfer_engine":"mooncake-nvlink_intra","nccl":"nccl"}}); null from older seeds
 * @param tpSize     how many tensor-parallel ranks the seed's weights are split over, or null (older seeds: ranks
 *                   are served rank to rank)
 * @param layout     the tp layout the seed's ranks hold ({@code none}, {@code llama}, a rules file's name), or null
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
public record Manifest(int version, int tp, int pp, String generation, String engine, String session,
                       String device, Map<String, String> serves, List<Entry> tensors, Integer tpSize, String layout) {

    /** A manifest that does not say how the weights are split. */
    public Manifest(int version, int tp, int pp, String generation, String engine, String session, String device,
                    Map<String, String> serves, List<Entry> tensors) {
        this(version, tp, pp, generation, engine, session, device, serves, tensors, null, null);
    }

    /** A manifest that does not list what the seed serves. */
    public Manifest(int version, int tp, int pp, String generation, String engine, String session, String device,
                    List<Entry> tensors) {
        this(version, tp, pp, generation, engine, session, device, null, tensors);
    }

    /** The same manifest under another generation, without checksums (unknown until recomputed). */
    public Manifest regenerated(String newGeneration) {
        List<Entry> entries = tensors.stream().map(e -> new Entry(e.name(), e.dtype(), e.shape(), e.bytes(),
                e.address(), null, e.slice(), null)).toList();
        return new Manifest(version, tp, pp, newGeneration, engine, session, device, serves, entries, tpSize, layout);
    }

    /** How many tp ranks hold the weights: {@code tpSize}, or 1 when an older seed did not say. */
    public int tpSizeOrOne() {
        return tpSize == null ? 1 : tpSize;
    }

    public static final int VERSION = 1;
    private static final Pattern HEX64 = Pattern.compile("[0-9a-f]{64}");

    /**
     * One published tensor; {@code sha256} is null when the seed does not publish checksums. {@code shape} is always
     * the whole tensor's; {@code bytes} and {@code address} are those of what the rank holds: the tensor, or its
     * {@code slice}.
     *
     * @param slice  the part of the tensor this rank holds, or null for the whole tensor
     * @param blocks SHA-256 of equal blocks of what the rank holds, along one dimension, so a client that reads only
     *               part of it (another tp size) can still check what it read; null without checksums
     */
    @JsonInclude(JsonInclude.Include.NON_NULL)
    public record Entry(String name, String dtype, List<Long> shape, long bytes, long address, String sha256,
                        TensorSlice slice, Blocks blocks) {
        public Entry(String name, String dtype, List<Long> shape, long bytes, long address, String sha256) {
            this(name, dtype, shape, bytes, address, sha256, null, null);
        }

        public TensorSpec spec() {
            return new TensorSpec(name, DType.fromSafetensors(dtype).orElseThrow(), shape);
        }

        /** What this rank holds: the tensor's spec, or its slice's. */
        public TensorSpec held() {
            return slice == null ? spec() : slice.applyTo(spec());
        }
    }

    /**
     * Block checksums of what a rank holds of a tensor: the held part cut along dimension {@code dim} into
     * {@code sha256.size()} equal blocks, each hashed in C order.
     */
    public record Blocks(int dim, List<String> sha256) {
        public Blocks {
            sha256 = sha256 == null ? null : List.copyOf(sha256);
        }
    }

    public Manifest {
        tensors = tensors == null ? List.of() : List.copyOf(tensors);
        serves = serves == null ? null : java.util.Collections.unmodifiableMap(new LinkedHashMap<>(serves));
    }

    public List<TensorSpec> specs() {
        return tensors.stream().map(Entry::spec).toList();
    }

    /**
     * Checks a manifest received from the network: every field present and consistent, sizes matching
     * dtype x shape, addresses not wrapping, names unique. The manifest is hostile until this passes.
     */
    public Manifest validate(String peer) {
        if (version != VERSION) {
            throw bad(peer, "unsupported manifest version " + version + " (this client speaks " + VERSION + ")");
        }
        if (generation == null || generation.isBlank() || engine == null || engine.isBlank()
                || session == null || session.isBlank()) {
            throw bad(peer, "generation, engine and session are required");
        }
        if (tpSize != null && (tpSize < 1 || tp >= tpSize)) {
            throw bad(peer, "rank tp" + tp + " of tpSize " + tpSize + " is impossible");
        }
        if (layout != null && (layout.isEmpty() || layout.length() > 4096)) {
            throw bad(peer, "layout name is empty or too long");
        }
        if (serves != null) {
            if (serves.isEmpty()) {
                throw bad(peer, "serves lists no backend");
            }
            for (Map.Entry<String, String> e : serves.entrySet()) {
                if (e.getKey() == null || e.getValue() == null || !e.getKey().matches("[A-Za-z0-9_.-]{1,64}")
                        || !e.getValue().matches("[A-Za-z0-9_.-]{1,64}")) {
                    throw bad(peer, "serves holds a malformed entry");
                }
            }
        }
        Set<String> names = new HashSet<>();
        for (Entry e : tensors) {
            if (e == null || e.name() == null || e.name().isEmpty()) {
                throw bad(peer, "a tensor has no name");
            }
            if (!names.add(e.name())) {
                throw bad(peer, "tensor '" + e.name() + "' is listed twice");
            }
            if (e.dtype() == null || DType.fromSafetensors(e.dtype()).isEmpty()) {
                throw bad(peer, "tensor '" + e.name() + "' has unknown dtype '" + e.dtype() + "'");
            }
            if (e.shape() == null) {
                throw bad(peer, "tensor '" + e.name() + "' has no shape");
            }
            TensorSpec spec;
            try {
                spec = e.spec();
            } catch (IllegalArgumentException | NullPointerException ex) {
                throw bad(peer, "tensor '" + e.name() + "': " + ex.getMessage());
            }
            TensorSpec held;
            try {
                held = e.held();
            } catch (IllegalArgumentException ex) {
                throw bad(peer, "tensor '" + e.name() + "': " + ex.getMessage());
            }
            if (held.byteSize() != e.bytes()) {
                throw bad(peer, "tensor '" + e.name() + "' is " + e.bytes() + " bytes but " + held.describe()
                        + (e.slice() != null ? " (" + e.slice() + " of " + spec.shape() + ")" : "") + " needs "
                        + held.byteSize());
            }
            if (e.blocks() != null) {
                Blocks b = e.blocks();
                if (b.sha256() == null || b.sha256().isEmpty() || b.dim() < 0 || b.dim() >= held.shape().size()
                        || held.shape().get(b.dim()) % b.sha256().size() != 0
                        || b.sha256().stream().anyMatch(h -> h == null || !HEX64.matcher(h).matches())) {
                    throw bad(peer, "tensor '" + e.name() + "' has malformed block checksums");
                }
            }
            if (e.bytes() > 0 && (e.address() == 0 || Long.compareUnsigned(e.address() + e.bytes(), e.address()) < 0)) {
                throw bad(peer, "tensor '" + e.name() + "' has an invalid address range");
            }
            if (e.sha256() != null && !HEX64.matcher(e.sha256()).matches()) {
                throw bad(peer, "tensor '" + e.name() + "' has a malformed sha256");
            }
        }
        return this;
    }

    private static WeightLoaderException bad(String peer, String why) {
        return new WeightLoaderException("seed " + peer + " sent an invalid manifest: " + why);
    }

    /** The entries by name, in manifest order: build it once where many tensors are looked up. */
    /**
     * Whether a SHA-256 is published for every tensor that has bytes: only then can a client check what a third party
     * (a relay) sends, and only then does a root take relays.
     */
    public boolean publishesChecksums() {
        return tensors().stream().allMatch(e -> e.bytes() == 0 || e.sha256() != null);
    }

    public Map<String, Entry> entriesByName() {
        Map<String, Entry> m = new LinkedHashMap<>(tensors.size() * 2);
        for (Entry e : tensors) {
            m.put(e.name(), e);
        }
        return m;
    }

    /** One entry by name, or null; a linear search (see {@link #entriesByName()} for many lookups). */
    public Entry entry(String name) {
        Objects.requireNonNull(name, "name is null");
        for (Entry e : tensors) {
            if (e.name().equals(name)) {
                return e;
            }
        }
        return null;
    }
}
