package io.weightloader.backend.te;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.TensorMismatchException;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.registry.Fingerprint;
import io.weightloader.seed.registry.RegistrySources;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.function.BiFunction;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A registry client's load from several sources at once ({@code backends.transfer_engine.sources} other than 1): the
 * ready sources of the fingerprint the registry lists ({@link RegistrySourceList}) read by a {@link MultiSourceLoad}.
 */
final class RegistrySeveral {
    private static final Logger LOG = LoggerFactory.getLogger(RegistrySeveral.class);

    /** A source that failed: logged, and added to the list of failures as {@code host:port: why}. */
    interface Failure {
        void accept(String address, WeightLoaderException e, List<String> failed);
    }

    private final WeightLoaderSettings settings;
    private final TransferEngineSettings te;
    private final SourceRegistry registry;
    private final String directory;
    private final String modelId;
    private final RegistryReports reports;
    private final Supplier<RegistrySources.Candidates> candidates;
    private final BiFunction<String, Fingerprint, ChosenSource> open;
    private final Failure onFailure;

    /**
     * @param candidates the registry's candidates now
     * @param open       a client of a source and its manifest, checked against a fingerprint
     */
    RegistrySeveral(WeightLoaderSettings settings, TransferEngineSettings te, SourceRegistry registry, String directory,
                    String modelId, RegistryReports reports, Supplier<RegistrySources.Candidates> candidates,
                    BiFunction<String, Fingerprint, ChosenSource> open, Failure onFailure) {
        this.settings = settings;
        this.te = te;
        this.registry = registry;
        this.directory = directory;
        this.modelId = modelId;
        this.reports = reports;
        this.candidates = candidates;
        this.open = open;
        this.onFailure = onFailure;
    }

    /**
     * {@code sources} other than 1: every ready source of the registry's fingerprint at once ({@link MultiSourceLoad}
     * over a {@link RegistrySourceList}); the reference whose checksums every unit is checked against is the first
     * source whose manifest matched the registry's fingerprint. Null (one source at a time, as before) when the
     * fingerprint has no checksums or this client's slices differ from the sources' (resharding).
     */
    LoadReport load(LoadRequest request, long t0) {
        RegistrySources.Candidates c = candidates.get();
        if (c.fingerprint().checksumsDigest().isEmpty()) {
            LOG.warn("model {} rank {} from registry {}: its sources publish no checksums, so bytes from several"
                    + " sources could not be checked; reading from one ({}.sources not used)", modelId,
                    settings.rank(), directory, TransferEngineSettings.PATH);
            return null;
        }
        Map<String, Double> phases = new LinkedHashMap<>(Map.of("registry", (System.nanoTime() - t0) / 1e9));
        long deadline = t0 + settings.remote().transferTimeout().toNanos();
        List<String> failed = new ArrayList<>();
        for (SourceEntry e : c.sources()) {
            if (failed.size() >= reports.maxTries()) {
                break;
            }
            if (!e.ready()) {
                continue;
            }
            ChosenSource s;
            try {
                s = open.apply(e.address(), c.fingerprint());
            } catch (TensorMismatchException ex) {
                throw ex;
            } catch (WeightLoaderException ex) {
                onFailure.accept(e.address(), ex, failed);
                continue;
            }
            try {
                TensorMatcher.check(s.backend().source(), s.manifest().specs(), request.specs(),
                        request.ignoreExtraTensors());
                Map<String, Manifest.Entry> published = s.manifest().entriesByName();
                if (request.tensors().stream().anyMatch(d -> !d.holdsSameAs(published.get(d.spec().name()).slice()))) {
                    LOG.info("model {} rank {} from registry {}: this client's slices differ from the sources'; one"
                            + " source at a time, resharded", modelId, settings.rank(), directory);
                    return null;
                }
                SeedClient ref = s.backend().seed().until(deadline + settings.remote().requestTimeout().toNanos());
                RegistrySourceList list = new RegistrySourceList(registry, directory, modelId, settings.rank(),
                        candidates, c.fingerprint(), s.backend(), ref, s.manifest(), request,
                        te.clientId().orElseGet(() -> "client-" + UUID.randomUUID()),
                        te.sourceStrategy().equals("tree"));
                LoadReport r = new MultiSourceLoad(s.backend(), te, ref, request, s.manifest(), te.sourceStrategy(), t0,
                        deadline, phases, list).run();
                // the multi-source line is "<reference> (N sources: a B, ...)": the registry's line names the reference
                int per = r.source().lastIndexOf(" (" + r.sources().size() + " sources:");
                return reports.report(r, request, c, failed, "checksums of " + e.address() + ", "
                        + (per < 0 ? r.source() : r.source().substring(per + 2, r.source().length() - 1)));
            } finally {
                s.backend().close();
            }
        }
        throw reports.noSource(c, failed, failed.size(), null);
    }
}
