package io.weightloader.host;

import io.weightloader.api.Device;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import io.weightloader.seed.SeedPublisherProvider;
import io.weightloader.seed.SeedService;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A seed's control plane over tensors the host already holds: which installed backends serve them
 * ({@code weight-loader.seed.serve}, each found through its provider's {@link SeedPublisherProvider} extension), then
 * {@link SeedService}. {@link SeedHost} does this and the loading before it; a host that loads its weights itself
 * calls this directly.
 */
public final class Seeds {
    private static final String SERVE = "weight-loader.seed.serve";

    private Seeds() {
    }

    /** Publishes {@code held} with every backend of {@code weight-loader.seed.serve} and starts the control plane. */
    public static SeedService start(BackendContext context, BackendRegistry registry,
                                    Map<RankKey, List<TensorDestination>> held) {
        return SeedService.start(context, publishers(context.settings(), registry), held);
    }

    /** Checks the seed's settings against the installed backends and binds its port; see {@link SeedService#bind}. */
    public static SeedService bind(BackendContext context, BackendRegistry registry, Collection<Device> devices) {
        return SeedService.bind(context, publishers(context.settings(), registry), devices);
    }

    /**
     * The publishers of {@code weight-loader.seed.serve}, by backend name, in the order listed.
     *
     * @throws WeightLoaderConfigException naming {@code weight-loader.seed.serve} for a backend that is not installed
     *     or cannot publish a seed's weights (listing those that can), or {@code weight-loader.enable-memory-saver}
     *     for one without the memory-saver capability
     */
    public static Map<String, SeedPublisherProvider> publishers(WeightLoaderSettings s, BackendRegistry registry) {
        if (s.seed().serve().isEmpty()) {
            throw new WeightLoaderConfigException(SERVE, "a seed must serve some backend's clients: list "
                    + "transfer_engine and/or nccl (nothing would be served otherwise)");
        }
        List<String> able = registry.providers().values().stream()
                .filter(x -> x.extension(SeedPublisherProvider.class).isPresent())
                .map(WeightLoaderBackendProvider::name).toList();
        Map<String, SeedPublisherProvider> out = new LinkedHashMap<>();
        for (String name : s.seed().serve()) {
            WeightLoaderBackendProvider p;
            try {
                p = registry.provider(name);
            } catch (WeightLoaderConfigException e) {
                throw new WeightLoaderConfigException(SERVE, e.problem() + ". Backends that can serve a seed's"
                        + " weights here: " + able);
            }
            SeedPublisherProvider publisher = p.extension(SeedPublisherProvider.class).orElseThrow(() ->
                    new WeightLoaderConfigException(SERVE, "backend '" + name + "' (" + p.getClass().getName()
                            + ") cannot publish a seed's weights; backends that can: " + able));
            WeightLoader.refuseMemorySaverUnlessCapable(s, name, p.capabilities());
            out.put(name, publisher);
        }
        return out;
    }
}
