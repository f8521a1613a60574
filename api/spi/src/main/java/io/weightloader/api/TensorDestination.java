package io.weightloader.api;

import java.util.Objects;

/**
 * A tensor and the memory that holds (or will hold) its bytes: where a host wants a tensor loaded, and what a seed
 * publishes. With a {@link TensorSlice}, only that part of the tensor (a tensor-parallel rank's share), stored
 * contiguously in C order; {@code spec} is always the whole tensor's, so sources are matched by the full shape.
 * The region is at least as long as what it holds.
 *
 * @param slice the part held, or null for the whole tensor
 */
public record TensorDestination(TensorSpec spec, MemoryRegion region, TensorSlice slice) {
    public TensorDestination {
        Objects.requireNonNull(spec, "spec is null");
        Objects.requireNonNull(region, "region is null");
        long needed;
        try {
            needed = slice == null ? spec.byteSize() : slice.applyTo(spec).byteSize();
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("destination of " + spec.describe() + ": " + e.getMessage(), e);
        }
        if (region.length() < needed) {
            throw new IllegalArgumentException("destination of " + (slice == null ? spec.describe()
                    : slice.applyTo(spec).describe() + " (" + slice + " of " + spec.shape() + ")") + " holds "
                    + region.length() + " bytes, the tensor needs " + needed);
        }
    }

    /** The whole tensor. */
    public TensorDestination(TensorSpec spec, MemoryRegion region) {
        this(spec, region, null);
    }

    /** What the region holds: the tensor's spec, or its slice's (same name and dtype, the narrowed shape). */
    public TensorSpec held() {
        return slice == null ? spec : slice.applyTo(spec);
    }

    /** Bytes held: the tensor's, or its slice's. */
    public long byteSize() {
        return held().byteSize();
    }

    /** Exactly the bytes held (the region may be longer). */
    public MemoryRegion bytes() {
        return region.slice(0, byteSize());
    }

    /** Whether this holds the same part of the tensor as {@code slice} (null and whole-tensor slices agree). */
    public boolean holdsSameAs(TensorSlice other) {
        boolean mineWhole = slice == null || slice.isWhole(spec);
        boolean otherWhole = other == null || other.isWhole(spec);
        return mineWhole && otherWhole || !mineWhole && slice.equals(other);
    }
}
