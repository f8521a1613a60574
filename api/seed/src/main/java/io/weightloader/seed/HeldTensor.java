package io.weightloader.seed;

import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorSpec;
import java.util.Objects;

/** A tensor a seed holds in memory, ready to be published: what it is and where its bytes are. */
public record HeldTensor(TensorSpec spec, MemoryRegion region) {
    public HeldTensor {
        Objects.requireNonNull(spec, "spec is null");
        Objects.requireNonNull(region, "region is null");
        if (region.length() < spec.byteSize()) {
            throw new IllegalArgumentException("region of " + spec.describe() + " holds " + region.length()
                    + " bytes, fewer than the tensor's " + spec.byteSize());
        }
    }

    /** Exactly the tensor's bytes (the region may be longer). */
    public MemoryRegion bytes() {
        return region.slice(0, spec.byteSize());
    }
}
