package io.weightloader.backend.te;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorMismatchException;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.registry.Chains;
import io.weightloader.seed.registry.Fingerprint;
import io.weightloader.seed.registry.Registries;
import io.weightloader.seed.registry.RegistryException;
import io.weightloader.seed.registry.RegistrySources;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.function.BiFunction;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A transfer_engine client that finds its sources in a registry ({@code weight-loader.directory =
 * "etcd://..."}, {@code weight-loader.model-id}) rather than at a root seed's address, so that it loads while the root
 * is gone. Its trust chain (docs/PROTOCOL.md, "Registry"): the registry's entries give the fingerprint to load, the
 * digest of the root's checksum list among it ({@link RegistrySources#find}); the manifest a source serves must have
 * exactly that fingerprint ({@link RegistrySources#check}); then every byte read is hashed and checked against that
 * manifest's checksums, whatever {@code checksum} says, and the source's generation is asked again at the end. A source
 * that fails any step is named in a warning and the next ready one tried, at most {@value #MAX_TRIES} per load and
 * within {@code transfer-timeout}; nothing is reported loaded unless one source's bytes all matched.
 *
 * <p>{@code source-strategy}: {@code star} reads from a ready source chosen at random (all of them the root, when only
 * the root is ready); {@code tree} claims a ready source no other client holds ({@link RegistrySources#claim}, a lease
 * of this client's that ends with the load) and waits for one when every source is held, so that each round of loads
 * doubles the sources, as a root's directory does. A tree client whose source fails keeps its claim on that source
 * until its load ends (no other client claims a source just found failing, such as a dead root whose entry lives on
 * until its lease ends) and claims another free one, waiting as before: unlike a root's directory, which sends a client
 * whose source died to the least busy source at once, a registry client starts its load again from the next source
 * anyway, so it keeps the one-client rule. {@code chain}: a relay that serves while it loads joined the end of the
 * rank's chain in the registry before it loads (its {@code SeedHost}); its loader reads from the link it joined after,
 * any other client from the chain's end, each with small reads while that source still loads; when that source fails
 * or is gone, from a ready source as {@code star} does.
 *
 * <p>The root seed, when {@code remote-instance.seed-instance-ip} names it as well, is used only when the registry
 * cannot be reached, with a WARN line that says so and a report whose source says so.
 */
final class RegistryBackend implements WeightLoaderBackend {
    private static final Logger LOG = LoggerFactory.getLogger(RegistryBackend.class);
    /** Most sources one load (or {@link #available()}) tries before it gives up. */
    static final int MAX_TRIES = 8;

    private final WeightLoaderSettings settings;
    private final TransferEngineSettings te;
    private final String directory;
    private final String modelId;
    /** Null when the registry could not be reached when this client was made: {@link #root} stands in. */
    private final SourceRegistry registry;
    /**
     * A client of one source, {@code host:port}, for this client's rank; with {@code true}, of a source that serves
     * while it loads (a chain's relay): small reads, so that it serves each as soon as its bytes are in.
     */
    private final BiFunction<String, Boolean, TransferEngineBackend> sources;
    /** The configured root seed, or null. */
    private final TransferEngineBackend root;
    /** Why the root stands in for the registry, or null while the registry answers. */
    private String fallback;
    /** The source {@link #available()} or the last load read from, with its checked manifest. */
    private ChosenSource chosen;
    /**
     * Sources that failed while {@link #available()} chose one ({@code host:port: why}): the next load does not try
     * them again, and its report names them.
     */
    private final List<String> failedChoosing = new ArrayList<>();

    private RegistryBackend(WeightLoaderSettings settings, TransferEngineSettings te, String directory, String modelId,
                            SourceRegistry registry, BiFunction<String, Boolean, TransferEngineBackend> sources,
                            TransferEngineBackend root, String fallback) {
        this.settings = settings;
        this.te = te;
        this.directory = directory;
        this.modelId = modelId;
        this.registry = registry;
        this.sources = sources;
        this.root = root;
        this.fallback = fallback;
    }

    /**
     * Connects to the registry. One that cannot be reached is an error naming it, unless the root seed is configured
     * too: then the root stands in, loudly.
     *
     * @param open  connects to the registry ({@link Registries#open})
     * @param root  the configured root seed's client, or null
     */
    static WeightLoaderBackend open(WeightLoaderSettings settings, TransferEngineSettings te, Registries.Settings rs,
                                    java.util.function.Supplier<SourceRegistry> open,
                                    BiFunction<String, Boolean, TransferEngineBackend> sources,
                                    TransferEngineBackend root) {
        String modelId = rs.modelId().orElseThrow(() -> modelIdMissing(rs.directory()));
        SourceRegistry registry = null;
        String fallback = null;
        try {
            registry = open.get();
        } catch (RegistryException e) {
            if (root == null) {
                throw unreachable(rs.directory(), modelId, e);
            }
            fallback = fallBackLoudly(rs.directory(), modelId, root, e);
        }
        return new RegistryBackend(settings, te, rs.directory(), modelId, registry, sources, root, fallback);
    }

    /** {@code weight-loader.directory} without {@code weight-loader.model-id}. */
    static WeightLoaderConfigException modelIdMissing(String directory) {
        return new WeightLoaderConfigException(Registries.MODEL_ID, "is not set, but weight-loader.directory = "
                + directory + " names a registry: a client finds its sources there by the model's id; set it (the id"
                + " its seeds were started with)");
    }

    private static WeightLoaderException unreachable(String directory, String modelId, RegistryException e) {
        return new WeightLoaderException("cannot reach registry " + directory + " (weight-loader.directory) to find"
                + " the sources of model " + modelId + ": " + e.getMessage() + "; no root seed is configured to fall"
                + " back on (weight-loader.remote-instance.seed-instance-ip); nothing was loaded", e);
    }

    private static String fallBackLoudly(String directory, String modelId, TransferEngineBackend root,
                                         RegistryException e) {
        String reason = "registry " + directory + " unreachable";
        LOG.warn("REGISTRY UNREACHABLE: cannot reach registry {} (weight-loader.directory) to find the sources of model"
                + " {}: {}. FALLING BACK to the root seed {} (weight-loader.remote-instance.seed-instance-ip): this"
                + " client does not use the registry's sources", directory, modelId, e.getMessage(), root.seed().peer());
        return reason;
    }

    @Override
    public String name() {
        return TransferEngineSettings.NAME;
    }

    @Override
    public boolean loadsSlices() {
        return true;
    }

    @Override
    public synchronized String source() {
        if (fallback != null) {
            return root.source() + " (" + fallback + ": fallback to the root)";
        }
        return "model " + modelId + " rank " + settings.rank() + " from registry " + directory
                + (chosen == null ? "" : ": " + chosen.backend().source())
                + (te.sourceStrategy().equals("star") ? "" : " (" + te.sourceStrategy() + ")");
    }

    @Override
    public synchronized String engine() {
        if (fallback != null) {
            return root.engine();
        }
        return chosen != null ? chosen.backend().engine() : TransferEngineBackend.configuredEngine(te);
    }

    /** What the source chosen now serves (checked against the registry), or the root's when it stands in. */
    @Override
    public synchronized List<TensorSpec> available() {
        if (fallback == null) {
            try {
                return choose().manifest().specs();
            } catch (RegistryException e) {
                fallBack(e);
            }
        }
        return root.available();
    }

    @Override
    public synchronized LoadReport load(LoadRequest request) {
        long t0 = System.nanoTime();
        if (fallback == null) {
            try {
                return loadFromRegistry(request, t0);
            } catch (RegistryException e) {
                fallBack(e);
            }
        }
        LoadReport r = root.load(request);
        return new LoadReport(r.backend(), r.engine(), source(), r.device(), r.tensors(), r.totalBytes(), r.seconds(),
                r.fallbackReason(), r.phases());
    }

    /** The registry stopped answering: the root stands in (loudly), or the load fails naming the registry. */
    private void fallBack(RegistryException e) {
        if (root == null) {
            throw unreachable(directory, modelId, e);
        }
        fallback = fallBackLoudly(directory, modelId, root, e);
        discard(chosen);
        chosen = null;
    }

    private RegistrySources.Candidates candidates() {
        return RegistrySources.find(registry, modelId, settings.rank(), settings.tpSize(), settings.tpLayout().name(),
                te.clientId().orElse(null));
    }

    /** The first source (in the registry's order) whose manifest checks, kept as {@link #chosen}. */
    private ChosenSource choose() {
        RegistrySources.Candidates c = candidates();
        if (chosen != null && chosen.fingerprint().equals(c.fingerprint())
                && RegistrySources.addresses(c.sources()).contains(chosen.address())) {
            return chosen;
        }
        discard(chosen);
        chosen = null;
        List<String> failed = new ArrayList<>();
        for (SourceEntry e : c.sources().subList(0, Math.min(MAX_TRIES, c.sources().size()))) {
            try {
                chosen = open(e.address(), c.fingerprint());
                failedChoosing.addAll(failed);
                return chosen;
            } catch (TensorMismatchException ex) {
                throw ex;
            } catch (WeightLoaderException ex) {
                failed(e.address(), ex, failed);
            }
        }
        throw reports().noSource(c, failed, failed.size(), null);
    }

    /** A client of the source at {@code address} and its manifest, checked against {@code fingerprint}. */
    private ChosenSource open(String address, Fingerprint fingerprint) {
        return open(address, fingerprint, false);
    }

    /** @param pipelined the source serves while it loads ({@link #sources}) */
    private ChosenSource open(String address, Fingerprint fingerprint, boolean pipelined) {
        TransferEngineBackend b = sources.apply(address, pipelined);
        try {
            Manifest m = RegistrySources.check(b.checkedManifest(b.seed()), fingerprint, address, directory);
            return new ChosenSource(address, b, m, fingerprint);
        } catch (RuntimeException | Error e) {
            b.close();
            throw e;
        }
    }

    private LoadReport loadFromRegistry(LoadRequest request, long t0) {
        LoadReport several = te.multiSource().several() ? new RegistrySeveral(settings, te, registry, directory,
                modelId, reports(), this::candidates, this::open, this::failed).load(request, t0) : null;
        if (several != null) {
            return several;
        }
        if (te.sourceStrategy().equals("tree")) {
            return loadClaimed(request, t0);
        }
        RegistrySources.Candidates c = candidates();
        boolean chain = te.sourceStrategy().equals("chain");
        Optional<SourceEntry> link = chain ? chainSource(c) : Optional.empty();
        double listed = (System.nanoTime() - t0) / 1e9;
        if (chosen != null && (!chosen.fingerprint().equals(c.fingerprint())
                || !RegistrySources.addresses(c.sources()).contains(chosen.address()))) {
            discard(chosen); // the registry now lists other weights, or no longer lists that source
            chosen = null;
        }
        if (chosen != null) {
            c = c.preferring(chosen.address());
        }
        List<SourceEntry> order = new ArrayList<>(c.sources());
        if (link.isPresent()) { // chain: the link before this relay (or the chain's end) first, then ready sources
            order.removeIf(e -> e.address().equals(link.get().address()));
            order.add(0, link.get());
        }
        long deadline = t0 + settings.remote().transferTimeout().toNanos();
        List<String> failed = new ArrayList<>(failedChoosing);
        failedChoosing.clear();
        java.util.Set<String> failedAlready = failed.stream().map(f -> f.substring(0, f.indexOf(": ")))
                .collect(java.util.stream.Collectors.toSet());
        int tries = failed.size();
        for (SourceEntry e : order) {
            if (failedAlready.contains(e.address())) {
                continue;
            }
            if (tries >= MAX_TRIES || System.nanoTime() > deadline) {
                break;
            }
            tries++;
            boolean loading = !e.ready();
            ChosenSource s = !loading && chosen != null && chosen.address().equals(e.address()) ? chosen : null;
            try {
                if (s == null) {
                    s = open(e.address(), c.fingerprint(), loading);
                }
                Map<String, Double> phases = new LinkedHashMap<>();
                phases.put("registry", listed);
                // every byte is checked against the manifest whose checksum list the registry vouched for, but by a
                // chain's relay whose gate checks every block itself as it arrives (verify-relays = false), as long as
                // its load read from one source only
                boolean check = !(chain && !te.verifyRelays() && failed.isEmpty());
                if (!check) {
                    LOG.warn("model {} rank {} from registry {}: the bytes read from {} are not hashed again by this"
                            + " load ({}.verify-relays = false: only for a caller that checks every byte against the"
                            + " checksums itself, as a pipelined relay's gate does)", modelId, settings.rank(),
                            directory, e.address(), TransferEngineSettings.PATH);
                }
                LoadReport r = s.backend().loadWith(s.backend().seed().until(deadline
                                + settings.remote().requestTimeout().toNanos()), s.manifest(),
                        request.withChecksum(check || request.checksum()), t0, phases);
                String from = s.backend().source() + (loading ? " (while it loaded)" : "");
                if (loading) {
                    discard(s); // its small reads are for a source that still loads
                } else if (chosen != s) {
                    discard(chosen);
                    chosen = s;
                }
                return reports().report(r, request, c, failed, from);
            } catch (TensorMismatchException ex) {
                throw ex; // the host asks for other tensors than the model has: no source will do
            } catch (WeightLoaderException ex) {
                failed(e.address(), ex, failed);
                if (s == chosen) {
                    chosen = null;
                }
                discard(s);
            }
        }
        throw reports().noSource(c, failed, failed.size(), System.nanoTime() > deadline ? "transfer-timeout ("
                + settings.remote().transferTimeout() + ", weight-loader.remote-instance.transfer-timeout) passed"
                : null);
    }

    /**
     * {@code chain}: where this client reads first. A relay in the chain reads from the link it joined after (the
     * chain's first reads from a ready source); any other client from the chain's end. Empty when that source is not
     * listed with the fingerprint this client loads (it left, or died): then a ready source.
     */
    private Optional<SourceEntry> chainSource(RegistrySources.Candidates c) {
        Chains.Chain chain = registry.chain(modelId, settings.rank());
        String self = te.clientId().orElse(null);
        Optional<String> want = self != null && chain.after().containsKey(self)
                ? Optional.of(chain.after().get(self)).filter(a -> !a.isEmpty())
                : chain.end().filter(a -> !a.equals(self));
        Optional<SourceEntry> e = want.flatMap(c::entry);
        if (want.isPresent() && e.isEmpty()) {
            LOG.info("model {} rank {} from registry {}: the chain's link {} is not listed with the weights this client"
                    + " loads (it left or died); reading from a ready source", modelId, settings.rank(), directory,
                    want.get());
        }
        return e;
    }

    /**
     * {@code tree}: from a source claimed for this client (waiting for one while every source is held), released when
     * the load ends; a source that fails is excluded, and its claim kept until the load ends so that no other client
     * takes it meanwhile.
     */
    private LoadReport loadClaimed(LoadRequest request, long t0) {
        long deadline = t0 + settings.remote().transferTimeout().toNanos();
        String client = te.clientId().orElseGet(() -> "client-" + UUID.randomUUID());
        String who = "model " + modelId + " rank " + settings.rank() + " from registry " + directory + " (client "
                + client + ")";
        List<String> failed = new ArrayList<>(failedChoosing);
        failedChoosing.clear();
        Set<String> exclude = new java.util.HashSet<>(failed.stream().map(f -> f.substring(0, f.indexOf(": ")))
                .toList());
        String self = te.clientId().orElse(null);
        // claims on sources that failed for this load: kept until it ends, so that no other client takes them meanwhile
        List<SourceRegistry.Assignment> failing = new ArrayList<>();
        try {
            while (true) {
                LoadReport r = loadClaimedOnce(request, t0, deadline, client, who, self, exclude, failed, failing);
                if (r != null) {
                    return r;
                }
            }
        } finally {
            failing.forEach(SourceRegistry.Assignment::close);
        }
    }

    /** One source claimed and loaded from; null when it failed (it is then in {@code exclude} and {@code failing}). */
    private LoadReport loadClaimedOnce(LoadRequest request, long t0, long deadline, String client, String who,
                                       String self, Set<String> exclude, List<String> failed,
                                       List<SourceRegistry.Assignment> failing) {
        long tList = System.nanoTime();
        RegistrySources.Claimed claimed = RegistrySources.claim(registry, modelId, settings.rank(),
                settings.tpSize(), settings.tpLayout().name(), self, client, exclude, deadline, who);
        boolean release = true;
        String address = claimed.source().address();
        ChosenSource s = chosen != null && chosen.address().equals(address)
                && chosen.fingerprint().equals(claimed.candidates().fingerprint()) ? chosen : null;
        try {
            if (s == null) {
                s = open(address, claimed.candidates().fingerprint());
            }
            Map<String, Double> phases = new LinkedHashMap<>();
            phases.put("registry", (System.nanoTime() - tList) / 1e9); // listing, and waiting for a free source
            LoadReport r = s.backend().loadWith(s.backend().seed().until(deadline
                            + settings.remote().requestTimeout().toNanos()), s.manifest(),
                    request.withChecksum(true), t0, phases);
            if (chosen != s) {
                discard(chosen);
                chosen = s;
            }
            return reports().report(r, request, claimed.candidates(), failed, chosen.backend().source());
        } catch (TensorMismatchException ex) {
            throw ex;
        } catch (WeightLoaderException ex) {
            failed(address, ex, failed);
            exclude.add(address);
            failing.add(claimed.assignment());
            release = false;
            if (s == chosen) {
                chosen = null;
            }
            discard(s);
            if (failed.size() >= MAX_TRIES || System.nanoTime() > deadline) {
                throw reports().noSource(claimed.candidates(), failed, failed.size(), System.nanoTime() > deadline
                        ? "transfer-timeout (" + settings.remote().transferTimeout()
                        + ", weight-loader.remote-instance.transfer-timeout) passed" : null);
            }
            return null;
        } finally {
            if (release) {
                claimed.assignment().close(); // the source is free for the next client
            }
        }
    }

    private void failed(String address, WeightLoaderException e, List<String> failed) {
        LOG.warn("model {} rank {} from registry {}: source {} failed ({}); trying another ready source of the"
                + " registry", modelId, settings.rank(), directory, address, e.getMessage());
        failed.add(address + ": " + e.getMessage());
    }

    private RegistryReports reports() {
        return new RegistryReports(modelId, settings.rank().toString(), directory, te.sourceStrategy(), MAX_TRIES);
    }

    private static void discard(ChosenSource c) {
        if (c != null) {
            c.backend().close();
        }
    }

    @Override
    public synchronized void close() {
        discard(chosen);
        chosen = null;
        if (root != null) {
            root.close();
        }
        if (registry != null) {
            registry.close();
        }
    }
}
