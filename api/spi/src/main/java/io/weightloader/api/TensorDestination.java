package io.weightloader.api;

import java.util.Objects;

/** Where the host wants one tensor's bytes: a region at least as long as the tensor. */
public record TensorDestination(TensorSpec spec, MemoryRegion region) {
    public TensorDestination {
        Objects.requireNonNull(spec, "spec is null");
        Objects.requireNonNull(region, "region is null");
        if (region.length() < spec.byteSize()) {
            throw new IllegalArgumentException("destination of " + spec.describe() + " holds " + region.length()
                    + " bytes, the tensor needs " + spec.byteSize());
        }
    }
}
