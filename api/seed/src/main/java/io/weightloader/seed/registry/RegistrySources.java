package io.weightloader.seed.registry;

import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Random;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * How a client that knows only a model id finds what to load in a registry (docs/PROTOCOL.md, "Registry"), the first
 * links of its trust chain: registry entry, then the manifest a source serves, then (the caller's) every byte against
 * that manifest's checksums.
 *
 * <ol>
 *   <li>{@link #find}: the live entries of the model at the client's rank; those not ready, of another tp size or
 *       layout, or without a checksum list are skipped; of the rest, the fingerprint that most ready sources share is
 *       the one to load (the others are skipped, each named with what differs), and its sources come in random order
 *       (clients spread over them);</li>
 *   <li>{@link #check}: the manifest read from one of them must have exactly that fingerprint, the digest of its
 *       checksum list included, or the source is skipped, naming what differs.</li>
 * </ol>
 * Every skipped entry is named in a WARN line and in {@link Candidates#skipped()}.
 */
public final class RegistrySources {
    private static final Logger LOG = LoggerFactory.getLogger(RegistrySources.class);
    private static final Random RANDOM = new Random();
    /** How often a client that waits for a free source says what it waits for. */
    static final long WAIT_LOG_NANOS = 10_000_000_000L;

    private RegistrySources() {
    }

    /**
     * What a client may load from.
     *
     * @param fingerprint what it loads: the fingerprint its sources share
     * @param sources     the ready sources of that fingerprint, in the order to try them
     * @param skipped     every other entry, as {@code host:port: why}
     * @param loading     the entries of that fingerprint not ready yet: relays that serve while they load (a chain's),
     *                    skipped but for {@code source-strategy = chain}
     */
    public record Candidates(String registry, String modelId, Fingerprint fingerprint, List<SourceEntry> sources,
                             List<String> skipped, List<SourceEntry> loading) {
        public Candidates {
            sources = List.copyOf(sources);
            skipped = List.copyOf(skipped);
            loading = List.copyOf(loading);
        }

        /** The same candidates with {@code address} first, when it is one of them (a source already chosen). */
        public Candidates preferring(String address) {
            List<SourceEntry> s = new ArrayList<>(sources);
            s.sort(Comparator.comparing((SourceEntry e) -> !e.address().equals(address)));
            return new Candidates(registry, modelId, fingerprint, s, skipped, loading);
        }

        /** The entry of {@code address}, ready or loading, if it is one of these. */
        public Optional<SourceEntry> entry(String address) {
            return java.util.stream.Stream.concat(sources.stream(), loading.stream())
                    .filter(e -> e.address().equals(address)).findFirst();
        }
    }

    /**
     * The sources of {@code modelId} at {@code rank} that a client of {@code tpSize} ranks split by {@code layout} can
     * load from.
     *
     * @param self the client's own address (a relay that is not registered yet, or an old entry of it), never its
     *             source; null for none
     * @throws RegistryException the registry could not be reached (the message names it)
     * @throws WeightLoaderException no entry fits, naming the registry, the model, the rank and every entry skipped
     */
    public static Candidates find(SourceRegistry registry, String modelId, RankKey rank, int tpSize, String layout,
                                  String self) {
        Objects.requireNonNull(layout, "layout is null");
        List<SourceEntry> all = registry.listAll(modelId, rank);
        List<String> skipped = new ArrayList<>();
        List<SourceEntry> usable = new ArrayList<>();
        List<SourceEntry> notReady = new ArrayList<>();
        for (SourceEntry e : all) {
            Fingerprint f = e.fingerprint();
            String why = null;
            if (e.address().equals(self)) {
                continue;
            } else if (!e.ready()) {
                // not an anomaly: a relay that serves while it loads (source-strategy chain)
                LOG.info("registry {}: source {} of model {} rank {} is not ready (it still loads); only a chain reads"
                        + " from it", registry.describe(), e.address(), modelId, rank);
                skipped.add(e.address() + ": not ready (it still loads)");
                notReady.add(e);
                continue;
            } else if (f.tpSize() != tpSize || tpSize > 1 && !f.layout().equals(layout)) {
                why = "holds tp size " + f.tpSize() + ", layout " + f.layout() + "; this client loads tp size " + tpSize
                        + ", layout " + layout + " (weight-loader.rank.tp-size, weight-loader.tp-layout)";
            } else if (f.checksumsDigest().isEmpty()) {
                why = "publishes no checksums, so what it sends could not be checked";
            }
            if (why == null) {
                usable.add(e);
            } else {
                skip(registry, modelId, rank, e.address(), why, skipped);
            }
        }
        Map<Fingerprint, List<SourceEntry>> byFingerprint = new LinkedHashMap<>();
        for (SourceEntry e : usable) {
            byFingerprint.computeIfAbsent(e.fingerprint(), k -> new ArrayList<>()).add(e);
        }
        Fingerprint chosen = byFingerprint.entrySet().stream()
                .max(Comparator.comparingInt((Map.Entry<Fingerprint, List<SourceEntry>> x) -> x.getValue().size())
                        .thenComparing(x -> x.getKey().generation(), Comparator.reverseOrder())
                        .thenComparing(x -> x.getKey().checksumsDigest(), Comparator.reverseOrder()))
                .map(Map.Entry::getKey).orElse(null);
        if (chosen == null) {
            throw new WeightLoaderException("registry " + registry.describe() + " lists no ready source of model "
                    + modelId + " rank " + rank + " that this client can load from" + (all.isEmpty()
                    ? ": none is registered (is the model id right, weight-loader.model-id? are its seeds started with"
                    + " weight-loader.directory = " + registry.describe() + " and this model id?)"
                    : "; skipped: " + clip(skipped)));
        }
        if (byFingerprint.size() > 1) {
            LOG.warn("registry {}: model {} rank {} is listed with {} different fingerprints; loading the one {} ready"
                    + " source(s) share (generation {}), skipping the others", registry.describe(), modelId, rank,
                    byFingerprint.size(), byFingerprint.get(chosen).size(), chosen.generation());
        }
        for (Map.Entry<Fingerprint, List<SourceEntry>> x : byFingerprint.entrySet()) {
            if (!x.getKey().equals(chosen)) {
                for (SourceEntry e : x.getValue()) {
                    skip(registry, modelId, rank, e.address(), "its fingerprint differs from the one "
                            + byFingerprint.get(chosen).size() + " source(s) share: "
                            + Entries.difference(chosen, e.fingerprint()), skipped);
                }
            }
        }
        List<SourceEntry> sources = new ArrayList<>(byFingerprint.get(chosen));
        Collections.shuffle(sources, RANDOM);
        List<SourceEntry> loading = notReady.stream().filter(e -> e.fingerprint().equals(chosen)).toList();
        return new Candidates(registry.describe(), modelId, chosen, sources, skipped, loading);
    }

    /** A source claimed for a client ({@link #claim}), with the candidates it was picked from. */
    public record Claimed(Candidates candidates, SourceEntry source, SourceRegistry.Assignment assignment) {
    }

    /**
     * {@code source-strategy = tree} over a registry: a ready source of the fingerprint most sources share (as
     * {@link #find}) that no client holds, claimed for {@code client} ({@link SourceRegistry#claim}). When every such
     * source is held the client waits, watching the registry, and takes one as soon as a claim ends (a client finished,
     * or died and its lease ran out) or a new source is listed (a relay that finished its load); it says what it waits
     * for every 10 s. The sources are tried in {@link #find}'s random order, so clients spread over the free ones.
     *
     * @param exclude   sources not to claim (they failed for this load)
     * @param deadline  when to give up ({@link System#nanoTime()}): {@code remote-instance.transfer-timeout}
     * @param who       the client, for log lines
     * @throws RegistryException the registry could not be reached (the message names it)
     * @throws WeightLoaderException no source fits ({@link #find}), every one failed for this load, or none came free
     *                               before {@code deadline} (naming who holds each)
     */
    public static Claimed claim(SourceRegistry registry, String modelId, RankKey rank, int tpSize, String layout,
                                String self, String client, Set<String> exclude, long deadline, String who) {
        Assignments.checkClient(client);
        long nextLog = System.nanoTime();
        try (SourceRegistry.Changes changes = registry.watch(modelId, rank)) { // before listing: no change is missed
            while (true) {
                Candidates c = find(registry, modelId, rank, tpSize, layout, self);
                List<SourceEntry> open = c.sources().stream().filter(e -> !exclude.contains(e.address())).toList();
                if (open.isEmpty()) {
                    throw new WeightLoaderException(who + ": every ready source of model " + modelId + " rank " + rank
                            + " in registry " + registry.describe() + " failed for this load: "
                            + String.join(", ", addresses(c.sources())));
                }
                Set<String> held = new java.util.HashSet<>();
                registry.assignments(modelId, rank).forEach(h -> held.add(h.source()));
                for (SourceEntry e : open) {
                    if (held.contains(e.address())) {
                        continue;
                    }
                    Optional<SourceRegistry.Assignment> a = registry.claim(modelId, rank, e.address(), client);
                    if (a.isPresent()) {
                        return new Claimed(c, e, a.get());
                    }
                }
                long now = System.nanoTime();
                if (now > deadline) {
                    throw new WeightLoaderException(who + ": no source of model " + modelId + " rank " + rank
                            + " in registry " + registry.describe() + " came free within transfer-timeout"
                            + " (weight-loader.remote-instance.transfer-timeout, source-strategy tree): "
                            + busy(registry, modelId, rank, open));
                }
                if (now >= nextLog) {
                    LOG.info("{}: waiting for a free source (source-strategy tree, registry {}): {}; {} s left of"
                            + " transfer-timeout", who, registry.describe(), busy(registry, modelId, rank, open),
                            Math.max(0, (deadline - now) / 1_000_000_000L));
                    nextLog = now + WAIT_LOG_NANOS;
                }
                changes.await(Math.min(deadline + 1, nextLog));
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new WeightLoaderException(who + ": interrupted while waiting for a free source of model " + modelId
                    + " rank " + rank + " in registry " + registry.describe(), e);
        }
    }

    /** Who holds the ready sources {@code open}: a few, then a count. */
    static String busy(SourceRegistry registry, String modelId, RankKey rank, List<SourceEntry> open) {
        java.util.Map<String, String> holder = new java.util.HashMap<>();
        registry.assignments(modelId, rank).forEach(h -> holder.putIfAbsent(h.source(), h.client()));
        List<String> each = new ArrayList<>();
        for (SourceEntry e : open) {
            each.add(e.address() + (holder.containsKey(e.address()) ? " (client " + holder.get(e.address()) + ")"
                    : " (free)"));
        }
        return "each of the " + open.size() + " ready source(s) serves one client: " + String.join(", ",
                each.subList(0, Math.min(4, each.size()))) + (each.size() > 4 ? " and " + (each.size() - 4) + " more"
                : "");
    }

    private static void skip(SourceRegistry registry, String modelId, RankKey rank, String address, String why,
                             List<String> skipped) {
        LOG.warn("registry {}: skipped source {} of model {} rank {}: {}", registry.describe(), address, modelId, rank,
                why);
        skipped.add(address + ": " + why);
    }

    /**
     * {@code m}, the manifest source {@code address} served, if its fingerprint is {@code wanted}: the generation, the
     * split, every tensor's name, dtype and shape, and the digest of its checksum list (what the client then checks
     * every byte against) are those the registry lists.
     *
     * @throws WeightLoaderException naming the source and each field that differs
     */
    public static Manifest check(Manifest m, Fingerprint wanted, String address, String registry) {
        Fingerprint got;
        try {
            got = Fingerprint.of(m);
        } catch (IllegalArgumentException e) {
            throw new WeightLoaderException("source " + address + " serves a manifest that fits no registry entry: "
                    + e.getMessage());
        }
        if (!got.equals(wanted)) {
            throw new WeightLoaderException("source " + address + " serves other weights than registry " + registry
                    + " lists for it: " + Entries.difference(wanted, got));
        }
        return m;
    }

    /**
     * A manifest of {@code rank} checked against the registry: from the first of {@link #find}'s sources (at most
     * {@code maxTries}) whose manifest has the fingerprint the registry lists; each that fails is named in a WARN line.
     *
     * @param clients the control-plane client of a source, {@code host:port}
     * @return the source's address and its checked manifest
     * @throws RegistryException the registry could not be reached (the message names it)
     * @throws WeightLoaderException no source fits, naming each tried and each skipped
     */
    public static Map.Entry<String, Manifest> manifest(SourceRegistry registry, String modelId, RankKey rank,
                                                       int tpSize, String layout, String self,
                                                       java.util.function.Function<String, SeedClient> clients,
                                                       int maxTries) {
        Candidates c = find(registry, modelId, rank, tpSize, layout, self);
        List<String> failed = new ArrayList<>();
        for (SourceEntry e : c.sources().subList(0, Math.min(maxTries, c.sources().size()))) {
            try {
                return Map.entry(e.address(), check(clients.apply(e.address()).manifest(rank), c.fingerprint(),
                        e.address(), registry.describe()));
            } catch (WeightLoaderException ex) {
                LOG.warn("registry {}: source {} of model {} rank {} failed ({}); trying another", registry.describe(),
                        e.address(), modelId, rank, ex.getMessage());
                failed.add(e.address() + ": " + ex.getMessage());
            }
        }
        throw new WeightLoaderException("model " + modelId + " rank " + rank + ": no source listed in registry "
                + registry.describe() + " served a manifest that fits its entry; tried " + String.join("; ", failed)
                + (c.skipped().isEmpty() ? "" : "; skipped " + clip(c.skipped())));
    }

    /** The first ten of {@code lines}, then how many more. */
    static String clip(List<String> lines) {
        return String.join("; ", lines.subList(0, Math.min(10, lines.size())))
                + (lines.size() > 10 ? " and " + (lines.size() - 10) + " more" : "");
    }

    /** Addresses of {@code entries}, for messages. */
    public static List<String> addresses(List<SourceEntry> entries) {
        return entries.stream().map(SourceEntry::address).toList();
    }
}
