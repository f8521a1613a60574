package io.weightloader.backend.te;

import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import java.util.Map;

/** A relay's manifest, fetched and checked against its root's before a client reads from it. */
final class RelayManifests {
    private RelayManifests() {
    }

    /**
     * The manifest of {@code relay}'s {@code rank}, checked: the root's generation, the root's engine, the tensors the
     * request asks for, and the root's slices of each. Only its addresses and session are its own.
     */
    static Manifest checked(SeedReads backend, SeedClient relay, RankKey rank, Manifest root, LoadRequest request) {
        Manifest m = backend.checkManifest(relay.manifest(rank));
        if (!m.generation().equals(root.generation())) {
            throw new WeightLoaderException("relay " + relay.peer() + " serves generation " + m.generation()
                    + ", the root " + root.generation() + ": not the root's weights");
        }
        if (!SeedReads.servedEngine(m).equals(SeedReads.servedEngine(root))) {
            throw new WeightLoaderException("relay " + relay.peer() + " serves with " + SeedReads.servedEngine(m)
                    + ", the root with " + SeedReads.servedEngine(root));
        }
        TensorMatcher.check("relay " + relay.peer(), m.specs(), request.specs(), request.ignoreExtraTensors());
        Map<String, Manifest.Entry> entries = m.entriesByName();
        for (TensorDestination d : request.tensors()) {
            if (!d.holdsSameAs(entries.get(d.spec().name()).slice())) {
                throw new WeightLoaderException("relay " + relay.peer() + " holds other slices of tensor '"
                        + d.spec().name() + "' than the root");
            }
        }
        return m;
    }
}
