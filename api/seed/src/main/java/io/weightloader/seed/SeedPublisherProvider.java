package io.weightloader.seed;

import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.spi.BackendContext;
import java.util.List;

/**
 * The seed side of a backend: registers a seed's weights so that the backend's clients can read them. A seed finds
 * it through its backend's provider, {@code provider.extension(SeedPublisherProvider.class)} (a provider that
 * implements this interface is found by the default {@code extension}); its version is the provider's
 * {@link io.weightloader.api.spi.WeightLoaderBackendProvider#SPI_VERSION}.
 */
public interface SeedPublisherProvider {
    SeedPublisher publish(BackendContext context, RankKey rank, List<TensorDestination> tensors);

    /**
     * As {@link #publish(BackendContext, RankKey, List)} for a relay that serves while it loads: reads of bytes the
     * {@code gate} does not call ready yet must wait for them. A publisher that cannot wait (one-sided engines that
     * never see a read) ignores the gate and says so with {@link SeedPublisher#gatesReads()} = false: the relay is
     * then announced only once it holds every byte.
     */
    default SeedPublisher publish(BackendContext context, RankKey rank, List<TensorDestination> tensors,
                                  ReadyGate gate) {
        return publish(context, rank, tensors);
    }

    /**
     * Checks, before the seed loads anything, that this provider can serve weights held on {@code device} with
     * the settings given: a seed that could never serve fails in a second, not after loading a checkpoint.
     *
     * @throws io.weightloader.api.config.WeightLoaderConfigException naming the setting to change
     */
    default void validateSeed(BackendContext context, io.weightloader.api.Device device) {
    }
}
