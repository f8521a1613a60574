package io.weightloader.backend.te;

import io.weightloader.seed.Manifest;
import java.util.List;
import java.util.Set;

/**
 * Where a load from several sources finds them, and how it holds each: ready sources of the root's weights (the root
 * and relays that hold every byte, checked), each held by this client only while it reads from it. Today the root's
 * directory ({@link DirectorySources}); a registry can list the same sources later (the client checks what each sends
 * against the root's checksums whatever lists it), or a registry ({@link RegistrySourceList}: the sources of the
 * fingerprint the registry lists, with no privileged root).
 */
interface SourceList {
    /** The root's own name among the sources ({@code root}). */
    String ROOT = io.weightloader.seed.Directory.ROOT;

    /** What lists the sources, for messages. */
    String describe();

    /**
     * Up to {@code max} ready sources, none of {@code exclude}; each is now held by this client (a lease it renews with
     * {@link #renew} while it reads, and ends with {@link #release}). Fewer (or none) when no more are ready.
     *
     * @return {@link #ROOT} or a relay's control-plane {@code host:port}, each once
     */
    List<String> take(int max, Set<String> exclude);

    /** The client still reads from {@code source} (best effort). */
    void renew(String source);

    /** The client is done with {@code source}: it has no more work for it, or dropped it (best effort). */
    void release(String source);

    /** {@code source} as messages and the report's tally name it. */
    String name(String source);

    /**
     * The manifest of {@code source}, fetched and checked against the load's reference manifest (the root's, or the
     * one whose checksums the registry vouched for): same weights, engine, tensors and slices.
     */
    Manifest manifest(String source);

    /** Whether every unit, whoever sent it, is checked (a registry's trust chain), whatever verify-relays says. */
    boolean checksEveryUnit();

    /**
     * After every unit arrived and matched: the root still serves the generation the load read (a directory); nothing
     * for a registry, whose every unit was checked against the checksums it vouches for.
     */
    void finished();

    /** {@code source} sent bytes that do not match the reference's checksums: it should be no one's source again. */
    void reportWrongBytes(String source, String reason);
}
