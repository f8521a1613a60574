package io.weightloader.host;

import com.typesafe.config.Config;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.registry.Fingerprint;
import io.weightloader.seed.registry.Registries;
import io.weightloader.seed.registry.RegistryException;
import io.weightloader.seed.registry.RegistrySources;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A seed's place in a registry ({@code weight-loader.directory = "etcd://..."}; docs/PROTOCOL.md, "Registry"): each
 * rank it serves is an entry under {@code weight-loader.model-id} with the fingerprint of what it publishes (the
 * root's generation, split, names and the digest of its checksum list), on a lease the registry keeps renewing. A
 * root registers once it serves, a relay once it holds every byte, checked; an entry is withdrawn when the rank's
 * weights change or are released, and every entry when the seed stops. A relay started with the registry finds its
 * sources there ({@link #manifest}).
 */
final class RegistryListing implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(RegistryListing.class);
    /** Most sources a relay tries for the manifest it will serve. */
    private static final int MAX_TRIES = 8;

    private final SourceRegistry registry;
    private final String modelId;
    private final WeightLoaderSettings settings;
    private final Map<RankKey, SourceRegistry.Registration> entries = new LinkedHashMap<>();
    /** Ranks listed while they load (a chain's relays), with the fingerprint listed. */
    private final Map<RankKey, Fingerprint> loading = new LinkedHashMap<>();
    private String address;

    private RegistryListing(SourceRegistry registry, String modelId, WeightLoaderSettings settings) {
        this.registry = registry;
        this.modelId = modelId;
        this.settings = settings;
    }

    /**
     * The registry {@code config} names, checked and connected to before the seed loads anything; empty for the
     * in-process directory ({@code weight-loader.directory = ""}). A relay whose root is configured too falls back to
     * its root's directory, loudly, when the registry cannot be reached; any other seed fails naming the registry.
     *
     * @throws WeightLoaderConfigException no model id, or a root that publishes no checksums
     * @throws WeightLoaderException the registry cannot be reached
     */
    static Optional<RegistryListing> open(Config config, WeightLoaderSettings settings, boolean relay) {
        Registries.Settings rs = Registries.settings(config);
        if (rs.inProcess()) {
            rs.modelId().ifPresent(m -> LOG.warn("{} = {} is set, but {} is empty: this seed is listed in no registry,"
                    + " only in its root's own directory", Registries.MODEL_ID, m, Registries.DIRECTORY));
            return Optional.empty();
        }
        String modelId = rs.modelId().orElseThrow(() -> new WeightLoaderConfigException(Registries.MODEL_ID,
                "is not set, but weight-loader.directory = " + rs.directory() + " names a registry: a seed registers"
                        + " each rank there under the model's id, and clients find it by that id; set it"));
        if (!relay && !settings.seed().publishChecksums()) {
            throw new WeightLoaderConfigException("weight-loader.seed.publish-checksums", "is false, but this seed"
                    + " registers in registry " + rs.directory() + " (weight-loader.directory): its clients there check"
                    + " every byte against the checksums whose digest it registers, so it must publish them");
        }
        try {
            return Optional.of(new RegistryListing(Registries.open(config), modelId, settings));
        } catch (RegistryException e) {
            if (relay && settings.remote().seedIp().isPresent()) {
                LOG.warn("REGISTRY UNREACHABLE: cannot reach registry {} (weight-loader.directory): {}. FALLING BACK to"
                        + " the root seed {}:{} (weight-loader.remote-instance.seed-instance-ip) and its directory: this"
                        + " relay loads from the root and is NOT listed in the registry, so clients of the registry"
                        + " will not find it", rs.directory(), e.getMessage(), settings.remote().seedIp().get(),
                        settings.remote().seedPort());
                return Optional.empty();
            }
            throw new WeightLoaderException("cannot reach registry " + rs.directory() + " (weight-loader.directory),"
                    + " where this seed would register model " + modelId + ": " + e.getMessage(), e);
        }
    }

    String describe() {
        return registry.describe();
    }

    String modelId() {
        return modelId;
    }

    /** The address this seed registers under ({@code host:port}), once known. */
    synchronized Optional<String> address() {
        return Optional.ofNullable(address);
    }

    /**
     * The manifest of {@code rank} a relay will serve, from a source the registry lists, checked against its entry:
     * the root's generation, split, tensors and checksums, with the address of the source it came from.
     */
    Map.Entry<String, Manifest> manifest(RankKey rank, String self) {
        try {
            return RegistrySources.manifest(registry, modelId, rank, settings.tpSize(), settings.tpLayout().name(),
                    self, a -> SeedClient.forSource(settings, a).withRetries(Math.min(1, settings.remote().retries())),
                    MAX_TRIES);
        } catch (RegistryException e) {
            throw new WeightLoaderException("registry " + describe() + " (weight-loader.directory): " + e.getMessage()
                    + "; this relay cannot find its sources", e);
        }
    }

    /**
     * Lists {@code rank} as served at {@code address} with the fingerprint of {@code published}, ready. A rank listed
     * while it loaded ({@link #joinChain}) with that fingerprint is marked ready in place: it keeps its lease, and with
     * it its place in the chain.
     */
    synchronized void register(String address, RankKey rank, Manifest published) {
        Fingerprint f = fingerprint(rank, published);
        if (f.checksumsDigest().isEmpty()) {
            LOG.warn("registry {}: rank {} is not listed: it publishes no checksums now (its weights changed in place),"
                    + " so clients could not check what it sends", describe(), rank);
            return;
        }
        if (address.equals(this.address) && f.equals(loading.remove(rank)) && entries.containsKey(rank)) {
            entries.get(rank).update(true);
        } else {
            withdraw(rank);
            this.address = address;
            entries.put(rank, registry.register(new SourceEntry(address, modelId, f, true)));
        }
        LOG.info("registry {}: listed {} as a source of model {} rank {} (generation {}, checksums digest {})",
                describe(), address, modelId, rank, f.generation(), f.checksumsDigest());
    }

    /**
     * A relay that serves while it loads ({@code source-strategy = chain}): lists {@code rank} at {@code address}, not
     * ready, and joins the end of the rank's chain in the registry; its loader then reads from the link before it.
     *
     * @return the relay it follows, or empty when it is the chain's first (it reads from a ready source)
     */
    synchronized Optional<String> joinChain(String address, RankKey rank, Manifest served) {
        Fingerprint f = fingerprint(rank, served);
        withdraw(rank);
        this.address = address;
        SourceRegistry.Registration r = registry.register(new SourceEntry(address, modelId, f, false));
        entries.put(rank, r);
        loading.put(rank, f);
        try {
            Optional<String> after = r.joinChain();
            LOG.info("registry {}: {} serves model {} rank {} while it loads, in the chain after {}", describe(),
                    address, modelId, rank, after.orElse("none (it reads from a ready source)"));
            return after;
        } catch (RegistryException e) {
            throw new WeightLoaderException("registry " + describe() + " (weight-loader.directory): relay " + address
                    + " could not join the chain of model " + modelId + " rank " + rank + ": " + e.getMessage(), e);
        }
    }

    private Fingerprint fingerprint(RankKey rank, Manifest published) {
        try {
            return Fingerprint.of(published);
        } catch (IllegalArgumentException e) {
            throw new WeightLoaderConfigException("weight-loader.tp-layout", "rank " + rank + " cannot be listed in"
                    + " registry " + describe() + ": " + e.getMessage());
        }
    }

    /** Removes {@code rank}'s entry (its weights change, or the seed stops). */
    synchronized void withdraw(RankKey rank) {
        loading.remove(rank);
        SourceRegistry.Registration r = entries.remove(rank);
        if (r != null) {
            r.close();
            LOG.info("registry {}: {} is no longer a source of model {} rank {}", describe(), address, modelId, rank);
        }
    }

    /** Withdraws every entry and disconnects. */
    @Override
    public synchronized void close() {
        for (RankKey rank : entries.keySet().toArray(RankKey[]::new)) {
            withdraw(rank);
        }
        registry.close();
    }
}
