package io.weightloader.seed;

import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.spi.BackendContext;
import java.util.List;

/**
 * Implemented by a {@link io.weightloader.api.spi.WeightLoaderBackendProvider} whose backend reads from a seed
 * without the seed's participation: the seed side registers its weights once with the provider's engine.
 */
public interface SeedPublisherProvider {
    SeedPublisher publish(BackendContext context, RankKey rank, List<TensorDestination> tensors);

    /**
     * Checks, before the seed loads anything, that this provider can serve weights held on {@code device} with
     * the settings given: a seed that could never serve fails in a second, not after loading a checkpoint.
     *
     * @throws io.weightloader.api.config.WeightLoaderConfigException naming the setting to change
     */
    default void validateSeed(BackendContext context, io.weightloader.api.Device device) {
    }
}
