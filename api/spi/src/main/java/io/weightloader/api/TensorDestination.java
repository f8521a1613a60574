package io.weightloader.api;

import java.util.Objects;

/**
 * A tensor and the memory that holds (or will hold) its bytes: where a host wants a tensor loaded, and what a seed
 * publishes. The region is at least as long as the tensor.
 */
public record TensorDestination(TensorSpec spec, MemoryRegion region) {
    public TensorDestination {
        Objects.requireNonNull(spec, "spec is null");
        Objects.requireNonNull(region, "region is null");
        if (region.length() < spec.byteSize()) {
            throw new IllegalArgumentException("destination of " + spec.describe() + " holds " + region.length()
                    + " bytes, the tensor needs " + spec.byteSize());
        }
    }

    /** Exactly the tensor's bytes (the region may be longer). */
    public MemoryRegion bytes() {
        return region.slice(0, spec.byteSize());
    }
}
