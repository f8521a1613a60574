package io.weightloader.host;

import io.weightloader.api.Device;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.NativePart;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import io.weightloader.seed.SeedPublisherProvider;
import java.util.List;

/**
 * One installed backend as an operator checks it ({@code weightloader backends}): what it can do, which jar it came
 * from, and whether the native libraries it can use are present on this machine (where they were found, or why
 * not).
 *
 * @param devices      {@code cpu} and/or {@code cuda:N}
 * @param servesAsSeed whether a seed can publish its weights to this backend's clients
 * @param jar          the file name of the jar the provider was loaded from, or {@code unknown}
 * @param nativeParts  the provider's own check of its native libraries; a check that throws is reported as one
 *                     missing part named {@code (its native check)} with the error, never thrown
 */
public record InstalledBackend(String name, boolean readsFromSeed, boolean disturbsSeed, List<String> devices,
                               boolean servesAsSeed, String jar, List<NativePart> nativeParts) {

    static InstalledBackend of(WeightLoaderBackendProvider p, BackendContext context) {
        BackendCapabilities c = p.capabilities();
        List<NativePart> parts;
        try {
            parts = p.nativeParts(context);
        } catch (RuntimeException | LinkageError e) {
            parts = List.of(new NativePart("(its native check)", "diagnostics", false, e.toString()));
        }
        var cs = p.getClass().getProtectionDomain().getCodeSource();
        String jar = cs != null && cs.getLocation() != null ? cs.getLocation().getPath() : "unknown";
        return new InstalledBackend(p.name(), c.readsFromSeed(), c.disturbsSeed(),
                c.devices().stream().map(k -> k == Device.Kind.CPU ? "cpu" : "cuda:N").sorted().toList(),
                p.extension(SeedPublisherProvider.class).isPresent(), jar.substring(jar.lastIndexOf('/') + 1),
                List.copyOf(parts));
    }
}
