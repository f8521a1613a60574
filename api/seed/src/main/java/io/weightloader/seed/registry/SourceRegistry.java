package io.weightloader.seed.registry;

import io.weightloader.api.config.RankKey;
import java.util.List;

/**
 * Where the sources of a model are found (docs/PROTOCOL.md, "Registry"): sources register under a model id and a
 * fingerprint with a lease they renew; a source that stops renewing (it died, or lost the registry) disappears within
 * {@link #ttlMillis()}; clients list the live sources of (model id, fingerprint). Entries are hints: a client checks
 * every byte it reads from one against the root's checksums.
 *
 * <p>Implementations: the in-process directory ({@link InProcessRegistry}, {@code weight-loader.directory = ""}) and
 * etcd ({@code weightloader-registry-etcd}, {@code weight-loader.directory = "etcd://host:port"}). Thread-safe.
 */
public interface SourceRegistry extends AutoCloseable {
    /** What this registry is, for messages: {@code in-process} or {@code etcd://host:port}. */
    String describe();

    /** How long a registration lives without renewal. */
    long ttlMillis();

    /**
     * Registers {@code source} with a lease that this registry renews until the registration is closed (the source
     * leaves) or the registry is closed (the lease then ends within {@link #ttlMillis()}, as when the process dies).
     * Registering an address again replaces its entry.
     *
     * @throws RegistryException the registry could not be reached (the message names it)
     */
    Registration register(SourceEntry source);

    /**
     * The live sources of {@code modelId} for {@code fingerprint}'s rank whose fingerprint equals {@code fingerprint},
     * in a stable order. Entries whose fingerprint differs (another generation, another split) are skipped and named
     * in a log line, as are entries that do not parse.
     *
     * @throws RegistryException the registry could not be reached (the message names it)
     */
    default List<SourceEntry> list(String modelId, Fingerprint fingerprint) {
        return Entries.matching(describe(), modelId, fingerprint, listAll(modelId, fingerprint.rank()));
    }

    /**
     * Every live source of {@code modelId} at {@code rank}, whatever its fingerprint (entries that do not parse are
     * skipped and named in a log line): how a client that knows only the model id finds the generation to load.
     */
    List<SourceEntry> listAll(String modelId, RankKey rank);

    /** Stops renewing this registry's leases (without revoking them) and releases its connections. Safe twice. */
    @Override
    void close();

    /** A source's lease. */
    interface Registration extends AutoCloseable {
        /** Re-publishes the entry with {@code ready} (a relay that finished loading). */
        void update(boolean ready);

        /** The source leaves: its entry is removed now. Safe twice. */
        @Override
        void close();
    }
}
