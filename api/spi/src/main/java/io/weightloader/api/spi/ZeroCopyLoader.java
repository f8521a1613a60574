package io.weightloader.api.spi;

import io.weightloader.api.MappedWeights;
import io.weightloader.api.TensorSpec;
import java.util.List;

/** Optional: a backend that can hand out tensors as views of memory it already has (no copy). */
public interface ZeroCopyLoader {
    /** Maps the requested tensors (matched as in {@link WeightLoaderBackend#load}) without copying. */
    MappedWeights map(List<TensorSpec> expected, boolean checksum);
}
