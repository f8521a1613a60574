package io.weightloader.backend.te;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import java.time.Duration;
import java.util.Map;

/**
 * What a load strategy ({@link DirectoryLoad}) needs from the transfer_engine client: checked manifests, the engine,
 * its transfers and connections, and the rank-to-rank load. {@link TransferEngineBackend} implements it, so the
 * strategy depends on this contract and not on the backend class (which creates the strategy).
 */
interface SeedReads {
    /** The backend's name, for reports. */
    String name();

    /** The seed, as named in messages. */
    String source();

    Duration transferTimeout();

    /** The seed's manifest for this client's rank, fetched and checked. */
    Manifest checkedManifest(SeedClient seed);

    /** {@code m} checked: it serves transfer_engine with this client's engine family and a transport it can use. */
    Manifest checkManifest(Manifest m);

    /** Keeps {@code m} for the next load. */
    void remember(Manifest m);

    /** The transport of a checked manifest. */
    String transport(Manifest m);

    /** Refuses destinations the transport cannot fill. */
    void checkDestinations(LoadRequest request, String transport);

    /** The engine for {@code transport}, started on first use. */
    OneSidedEngine engineFor(String transport);

    long sliceSize(String transport);

    Transfers transfers();

    Peers peers();

    /** A load from {@code m}'s seed alone, rank to rank or resharded. */
    LoadReport loadWith(SeedClient bounded, Manifest m, LoadRequest request, long t0, Map<String, Double> phases);

    /** The engine a manifest serves transfer_engine clients with (older seeds name only one engine). */
    static String servedEngine(Manifest m) {
        return m.serves() != null ? m.serves().get(TransferEngineSettings.NAME) : m.engine();
    }
}
