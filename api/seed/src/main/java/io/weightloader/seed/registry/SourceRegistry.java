package io.weightloader.seed.registry;

import io.weightloader.api.config.RankKey;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Where the sources of a model are found (docs/PROTOCOL.md, "Registry"): sources register under a model id and a
 * fingerprint with a lease they renew; a source that stops renewing (it died, or lost the registry) disappears within
 * {@link #ttlMillis()}; clients list the live sources of (model id, fingerprint). Entries are hints: a client checks
 * every byte it reads from one against the root's checksums.
 *
 * <p>Assignments ({@code source-strategy = tree}): a client claims a source it picked ({@link #claim}); a source is
 * held by one client at a time, as in a root's in-process directory, and the claim is a lease of the client's, so a
 * client that dies frees its source within {@link #ttlMillis()}. A client that finds every source held waits for a
 * change ({@link #watch}): a claim released, a new source listed.
 *
 * <p>Chains ({@code source-strategy = chain}): a relay that serves while it loads is listed not ready and joins the end
 * of its model's rank's chain ({@link Registration#joinChain()}); it reads from the link before it, and a client from
 * the end ({@link #chain}).
 *
 * <p>Implementations: the in-process directory ({@link InProcessRegistry}, {@code weight-loader.directory = ""}) and
 * etcd ({@code weightloader-registry-etcd}, {@code weight-loader.directory = "etcd://host:port"}). A registry that
 * cannot hold assignments refuses them ({@link RegistryException} naming it), and its clients read as with
 * {@code star}. Thread-safe.
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

    /**
     * Claims {@code source} of {@code modelId} at {@code rank} for {@code client} if no client holds it now; of two
     * clients claiming one source at once, one gets it. The claim lives on a lease of the client's that this registry
     * renews until {@link Assignment#close()} (the client's load ended) or until this registry is closed (the lease
     * then ends within {@link #ttlMillis()}, as when the client's process dies).
     *
     * @param client the client's id ({@link Assignments#checkClient}: a relay's {@code host:port}, or a random id)
     * @return the claim, or empty when another client holds {@code source}
     * @throws RegistryException the registry could not be reached, or holds no assignments (the message names it)
     */
    default Optional<Assignment> claim(String modelId, RankKey rank, String source, String client) {
        throw noAssignments();
    }

    /**
     * Who holds each source of {@code modelId} at {@code rank} now (claims that do not parse are skipped and named in a
     * log line), for messages and operators.
     */
    default List<Assignments.Held> assignments(String modelId, RankKey rank) {
        throw noAssignments();
    }

    /**
     * A watch on the entries and assignments of {@code modelId} at {@code rank}, from now on: open it before reading
     * them, and {@link Changes#await} returns once anything changed after (a claim released or made, a source listed,
     * one gone).
     */
    default Changes watch(String modelId, RankKey rank) {
        throw noAssignments();
    }

    /**
     * The chain of {@code modelId} at {@code rank} ({@code source-strategy = chain}): its end and what each link joined
     * after, as listed now (keys that do not parse are skipped and named in a log line).
     *
     * @throws RegistryException the registry could not be reached, or holds no chains (the message names it)
     */
    default Chains.Chain chain(String modelId, RankKey rank) {
        throw noChains("registry " + describe());
    }

    private static RegistryException noChains(String registry) {
        return new RegistryException(registry + " holds no chains, so its relays cannot serve one"
                + " another while they load (weight-loader.backends.transfer_engine.source-strategy = chain); use tree"
                + " or star with it");
    }

    private RegistryException noAssignments() {
        return new RegistryException("registry " + describe() + " holds no assignments, so it cannot give each source"
                + " one client at a time (weight-loader.backends.transfer_engine.source-strategy = tree); use star with"
                + " it");
    }

    /** A client's claim on a source ({@link #claim}). */
    interface Assignment extends AutoCloseable {
        String source();

        String client();

        /** The client is done with its source: the source is free again now. Safe twice. */
        @Override
        void close();
    }

    /** Changes under a model's rank since the watch was opened ({@link #watch}). */
    interface Changes extends AutoCloseable {
        /**
         * Waits until something changed since the watch was opened or since the last call that returned true, or until
         * {@code deadlineNanos} ({@link System#nanoTime()}). May return true without a change (look again).
         *
         * @return false when the deadline passed first
         */
        boolean await(long deadlineNanos) throws InterruptedException;

        @Override
        void close();
    }

    /** Stops renewing this registry's leases (without revoking them) and releases its connections. Safe twice. */
    @Override
    void close();

    /** A source's lease. */
    interface Registration extends AutoCloseable {
        /** Re-publishes the entry with {@code ready} (a relay that finished loading). */
        void update(boolean ready);

        /**
         * This source, a relay that serves while it loads, joins the end of its model's rank's chain: atomically (of
         * relays joining at once, each follows another) it becomes the end and its link names the end it follows. Both
         * live as long as this registration.
         *
         * @return the end it follows, its source; empty when the chain was empty (it reads from a ready source)
         * @throws RegistryException the registry could not be reached, or holds no chains (the message names it)
         */
        default java.util.Optional<String> joinChain() {
            throw noChains("this registry");
        }

        /** The source leaves: its entry is removed now. Safe twice. */
        @Override
        void close();
    }
}
