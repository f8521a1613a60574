package io.weightloader.backend.te;

import io.weightloader.api.LoadRequest;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.registry.Fingerprint;
import io.weightloader.seed.registry.RegistryException;
import io.weightloader.seed.registry.RegistrySources;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The sources a registry lists for a client that reads from several at once (docs/PROTOCOL.md, "Registry"): the ready
 * sources of the fingerprint the load started with ({@link RegistrySources#find}), in the registry's (random) order.
 * There is no privileged root: the reference manifest is the first source's whose manifest matched the registry's
 * fingerprint, and every other source's manifest must match that same fingerprint (checksums digest included) before
 * it is read from; every unit any source sends is checked against the reference's checksums. {@code tree} claims
 * each source ({@link SourceRegistry#claim}, a lease the registry renews) while it is read from and releases it when
 * the reader is done; {@code star} claims nothing. A source that sent wrong bytes is not taken again by this load, and
 * named loudly with the registry.
 */
final class RegistrySourceList implements SourceList {
    private static final Logger LOG = LoggerFactory.getLogger(RegistrySourceList.class);

    private final SourceRegistry registry;
    private final String directory;
    private final String modelId;
    private final RankKey rank;
    private final Supplier<RegistrySources.Candidates> find;
    private final Fingerprint fingerprint;
    private final SeedReads backend;
    private final SeedClient reference;
    private final Manifest referenceManifest;
    private final LoadRequest request;
    private final String client;
    private final boolean claims;
    private final Map<String, SourceRegistry.Assignment> held = new ConcurrentHashMap<>();
    private final Set<String> wrong = ConcurrentHashMap.newKeySet();

    /**
     * @param find       the registry's candidates now ({@link RegistrySources#find})
     * @param reference  a client of the source whose manifest is the reference ({@code referenceManifest})
     * @param claims     claim each source while it is read from ({@code tree})
     */
    RegistrySourceList(SourceRegistry registry, String directory, String modelId, RankKey rank,
                       Supplier<RegistrySources.Candidates> find, Fingerprint fingerprint, SeedReads backend,
                       SeedClient reference, Manifest referenceManifest, LoadRequest request, String client,
                       boolean claims) {
        this.registry = registry;
        this.directory = directory;
        this.modelId = modelId;
        this.rank = rank;
        this.find = find;
        this.fingerprint = fingerprint;
        this.backend = backend;
        this.reference = reference;
        this.referenceManifest = referenceManifest;
        this.request = request;
        this.client = client;
        this.claims = claims;
    }

    @Override
    public String describe() {
        return "registry " + directory + " (model " + modelId + ")";
    }

    /**
     * {@inheritDoc} A registry that does not answer, or lists no ready source now, gives none (a WARN line): the load
     * goes on with the sources it holds, and fails naming the registry only when it holds none.
     */
    @Override
    public List<String> take(int max, Set<String> exclude) {
        List<String> out = new ArrayList<>();
        try {
            return take(max, exclude, out);
        } catch (WeightLoaderException | RegistryException e) {
            LOG.warn("model {} from registry {}: no more sources from the registry ({}); going on with those this load"
                    + " holds", modelId, directory, e.getMessage());
            return out;
        }
    }

    private List<String> take(int max, Set<String> exclude, List<String> out) {
        RegistrySources.Candidates c = find.get();
        if (!c.fingerprint().equals(fingerprint)) {
            LOG.warn("model {} from registry {}: the registry now lists other weights for this rank than this load"
                    + " reads; taking no more sources for it", modelId, directory);
            return out;
        }
        for (SourceEntry e : c.sources()) {
            String a = e.address();
            if (out.size() >= max || !e.ready() || exclude.contains(a) || wrong.contains(a) || held.containsKey(a)) {
                continue;
            }
            if (claims) {
                Optional<SourceRegistry.Assignment> claim = registry.claim(modelId, rank, a, client);
                if (claim.isEmpty()) {
                    continue; // another client reads from it (tree: one client per source)
                }
                held.put(a, claim.get());
            }
            out.add(a);
        }
        return out;
    }

    @Override
    public void renew(String source) {
        // a claim lives on a lease the registry renews itself; star holds nothing
    }

    @Override
    public void release(String source) {
        SourceRegistry.Assignment a = held.remove(source);
        if (a != null) {
            try {
                a.close();
            } catch (RuntimeException e) {
                LOG.debug("releasing the claim on {} in registry {}: {}", source, directory, e.getMessage());
            }
        }
    }

    @Override
    public void reportWrongBytes(String source, String reason) {
        wrong.add(source);
        LOG.error("WRONG BYTES: source {} listed in registry {} for model {} rank {} sent bytes that do not match the"
                + " checksums the registry vouches for ({}); this load drops it and takes it no more. Its entry stays"
                + " in the registry: check that source", source, directory, modelId, rank, reason);
    }

    @Override
    public String name(String source) {
        return "source " + source;
    }

    @Override
    public Manifest manifest(String source) {
        SeedClient s = reference.peer().equals(source) ? reference : reference.at(source).withRetries(0);
        Manifest m = RelayManifests.checked(backend, s, rank, referenceManifest, request);
        return RegistrySources.check(m, fingerprint, source, directory);
    }

    @Override
    public boolean checksEveryUnit() {
        return true; // the registry's trust chain: its digest, then the checksums, then every byte
    }

    @Override
    public void finished() {
        // every unit matched the checksums whose digest the registry lists: no source's generation is needed as proof
    }
}
