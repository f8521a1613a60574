package io.weightloader.seed;

import io.weightloader.api.TensorDestination;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.memory.Checksums;
import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What a seed publishes per rank: its tensors, registered with every served backend's publisher, and its manifest
 * and session under a generation that changes whenever its weights may have.
 */
final class PublishedRanks {
    private static final Logger LOG = LoggerFactory.getLogger(PublishedRanks.class);

    /**
     * A rank's published weights, with its answers serialised once per generation (clients scaling out at once
     * cost the seed a copy each, not a serialisation each). {@code updating}: between
     * {@link SeedService#weightsChanging} and {@link SeedService#weightsChanged}, when the manifest and session are
     * refused.
     */
    record Published(List<TensorDestination> tensors, List<SeedPublisher> publishers, Manifest manifest,
                     byte[] manifestJson, byte[] sessionJson, boolean updating, Memory memory) {
        static Published of(List<TensorDestination> tensors, List<SeedPublisher> publishers, Manifest m,
                            boolean updating) {
            return of(tensors, publishers, m, updating, Memory.HELD);
        }

        static Published of(List<TensorDestination> tensors, List<SeedPublisher> publishers, Manifest m,
                            boolean updating, Memory memory) {
            try {
                return new Published(tensors, publishers, m, Json.MAPPER.writeValueAsBytes(m),
                        Json.MAPPER.writeValueAsBytes(Map.of("engine", m.engine(), "session", m.session(),
                                "generation", m.generation())), updating, memory);
            } catch (IOException e) {
                throw new WeightLoaderException("serialising the manifest of rank tp" + m.tp() + "-pp" + m.pp()
                        + " failed: " + e, e);
            }
        }

        /** The same weights under a new generation; checksums dropped (unknown until recomputed). */
        Published regenerated(boolean nowUpdating) {
            return of(tensors, publishers, manifest.regenerated(UUID.randomUUID().toString()), nowUpdating, memory);
        }

        /**
         * Whether a request is refused because the weights are released: every request once they are; while they
         * are being released, every one but {@code /v1/session} ({@code session}), which loads in flight need for
         * their final generation check.
         */
        boolean released(boolean session) {
            return memory == Memory.RELEASED || (memory == Memory.RELEASING && !session);
        }

        /** The endpoint a publisher of this rank serves at {@code path}, or null. */
        SeedEndpoint endpoint(String path) {
            for (SeedPublisher p : publishers) {
                SeedEndpoint e = p.endpoints().get(path);
                if (e != null) {
                    return e;
                }
            }
            return null;
        }
    }

    /** Where a rank's weight memory is (the memory saver): held and served, being released, released. */
    enum Memory { HELD, RELEASING, RELEASED }

    /** A held tensor's SHA-256, whole and by blocks. */
    private record Checksum(String whole, Manifest.Blocks blocks) {
    }

    private final Map<RankKey, Published> ranks = new ConcurrentHashMap<>();
    private final Map<RankKey, Double> checksumSeconds = new ConcurrentHashMap<>();
    private final BackendContext context;
    private final Map<String, SeedPublisherProvider> providers;

    PublishedRanks(BackendContext context, Map<String, SeedPublisherProvider> providers) {
        this.context = context;
        this.providers = providers;
    }

    /** What {@code rank} publishes, or null. */
    Published get(RankKey rank) {
        return ranks.get(rank);
    }

    Set<RankKey> keys() {
        return ranks.keySet();
    }

    int size() {
        return ranks.size();
    }

    /** What a rank holds and publishes, or an empty list. */
    List<TensorDestination> held(RankKey rank) {
        Published p = ranks.get(rank);
        return p == null ? List.of() : p.tensors();
    }

    Optional<Manifest> manifest(RankKey rank) {
        return Optional.ofNullable(ranks.get(rank)).map(Published::manifest);
    }

    /** Takes no new loads of {@code rank} (its generation stays, so loads in flight can finish and check). */
    void releasing(RankKey rank) {
        ranks.computeIfPresent(rank, (k, p) -> Published.of(p.tensors(), p.publishers(), p.manifest(), p.updating(),
                Memory.RELEASING));
    }

    /**
     * Marks {@code rank}'s weights released: a new generation (every load that overlapped fails its final check),
     * every request refused, and its memory unregistered from every engine (publishers closed; their connections
     * cut, so reads in flight fail).
     */
    void released(RankKey rank) {
        Published old = ranks.get(rank);
        if (old == null) {
            return;
        }
        ranks.put(rank, Published.of(old.tensors(), List.of(), old.manifest().regenerated(UUID.randomUUID().toString()),
                false, Memory.RELEASED));
        for (SeedPublisher publisher : old.publishers()) {
            try {
                publisher.close();
            } catch (RuntimeException e) {
                LOG.warn("unregistering rank {} from {} failed", rank, publisher.engine(), e);
            }
        }
    }

    /** Seconds the last {@link #publish} of {@code rank} spent hashing its weights (0 without checksums). */
    double checksumSeconds(RankKey rank) {
        return checksumSeconds.getOrDefault(rank, 0.0);
    }

    /** Gives {@code rank} a new generation; {@code updating}: its weights are changing until called again. */
    void regenerate(RankKey rank, boolean updating) {
        ranks.computeIfPresent(rank, (k, p) -> p.regenerated(updating));
    }

    /**
     * Registers {@code tensors} as {@code rank}'s with every served backend and publishes its manifest: with the
     * root's generation and checksums when {@code root} is given (a relay), else a new generation and, when
     * {@code checksums}, checksums of what is held. With a {@code gate}, reads wait for bytes not yet arrived.
     *
     * @return whether every served engine honours the gate
     */
    boolean publish(RankKey rank, List<TensorDestination> tensors, boolean checksums, Manifest root, ReadyGate gate) {
        Map<String, Checksum> sums = new LinkedHashMap<>();
        if (root != null) {
            for (Manifest.Entry e : root.tensors()) {
                sums.put(e.name(), new Checksum(e.sha256(), e.blocks()));
            }
        } else if (checksums) {
            long t0 = System.nanoTime();
            sums = checksums(tensors);
            checksumSeconds.put(rank, (System.nanoTime() - t0) / 1e9);
        }
        List<SeedPublisher> publishers = new ArrayList<>();
        Map<String, String> serves = new LinkedHashMap<>();
        boolean gated = true;
        try {
            // in the order of seed.serve: ask for the providers again, since Map.copyOf does not keep it
            for (String name : context.settings().seed().serve()) {
                SeedPublisher p = gate == null ? providers.get(name).publish(context, rank, tensors)
                        : providers.get(name).publish(context, rank, tensors, gate);
                gated &= p.gatesReads();
                publishers.add(p);
                serves.put(name, p.engine());
            }
        } catch (RuntimeException e) {
            publishers.forEach(SeedPublisher::close);
            throw e;
        }
        List<Manifest.Entry> entries = new ArrayList<>();
        for (TensorDestination t : tensors) {
            Checksum sum = sums.get(t.spec().name());
            entries.add(new Manifest.Entry(t.spec().name(), t.spec().dtype().safetensorsName(), t.spec().shape(),
                    t.byteSize(), t.byteSize() == 0 ? 0 : t.region().address(), sum == null ? null : sum.whole(),
                    t.slice(), sum == null ? null : sum.blocks()));
        }
        String device = tensors.isEmpty() ? "cpu" : tensors.get(0).region().device().toString();
        SeedPublisher first = publishers.get(0);
        WeightLoaderSettings s = context.settings();
        boolean sliced = tensors.stream().anyMatch(t -> t.slice() != null);
        Manifest m = root != null
                ? new Manifest(Manifest.VERSION, rank.tp(), rank.pp(), root.generation(), first.engine(),
                first.sessionId(), device, serves, entries, root.tpSize(), root.layout())
                : new Manifest(Manifest.VERSION, rank.tp(), rank.pp(), UUID.randomUUID().toString(),
                first.engine(), first.sessionId(), device, serves, entries, s.tpSize(),
                sliced || !s.tpLayout().isNone() ? s.tpLayout().name() : "none");
        Published old = ranks.put(rank, Published.of(tensors, List.copyOf(publishers), m, false));
        if (old != null) {
            old.publishers().forEach(SeedPublisher::close);
        }
        for (SeedPublisher p : publishers) {
            LOG.info("seed rank {}: {} tensors published via {} at {} (registration {} s)", rank, tensors.size(),
                    p.engine(), p.sessionId(), String.format("%.3f", p.registrationSeconds()));
        }
        return gated;
    }

    private static Map<String, Checksum> checksums(List<TensorDestination> tensors) {
        List<String> sums = Checksums.sha256Held(tensors, Checksums.defaultThreads());
        List<Manifest.Blocks> blocks = BlockChecksums.of(tensors, Checksums.defaultThreads());
        Map<String, Checksum> out = new LinkedHashMap<>();
        for (int i = 0; i < tensors.size(); i++) {
            out.put(tensors.get(i).spec().name(), new Checksum(sums.get(i), blocks.get(i)));
        }
        return out;
    }

    /** Whether some publisher cannot tell when it serves (its {@link SeedPublisher#activity()} is -1). */
    boolean blind() {
        return blind(ranks.keySet());
    }

    /** As {@link #blind()}, for {@code keys} only. */
    boolean blind(java.util.Collection<RankKey> keys) {
        boolean blind = false;
        for (Published p : published(keys)) {
            for (SeedPublisher pub : p.publishers()) {
                blind |= pub.activity() == -1;
            }
        }
        return blind;
    }

    /** A value that changes whenever a publisher that can tell served something. */
    long activity() {
        return activity(ranks.keySet());
    }

    private List<Published> published(java.util.Collection<RankKey> keys) {
        List<Published> out = new ArrayList<>();
        for (RankKey k : keys) {
            Published p = ranks.get(k);
            if (p != null) {
                out.add(p);
            }
        }
        return out;
    }

    /** As {@link #activity()}, for {@code keys} only. */
    long activity(java.util.Collection<RankKey> keys) {
        long sum = 0;
        for (Published p : published(keys)) {
            for (SeedPublisher pub : p.publishers()) {
                long a = pub.activity();
                sum = sum * 31 + (a == -1 ? 0 : a);
            }
        }
        return sum;
    }

    /** Unregisters every rank's memory from its engines. */
    void close() {
        for (Published p : ranks.values()) {
            for (SeedPublisher publisher : p.publishers()) {
                try {
                    publisher.close();
                } catch (RuntimeException e) {
                    LOG.warn("closing the publisher of {} failed", publisher.engine(), e);
                }
            }
        }
        ranks.clear();
    }
}
