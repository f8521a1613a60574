package io.weightloader.api;

import java.util.ArrayList;
import java.util.List;

/**
 * The part of a tensor that one tensor-parallel rank holds: indices {@code [start, start + length)} of dimension
 * {@code dim}, every index of the other dimensions. Its bytes are laid out exactly as slicing the full tensor
 * would give them ({@code full.narrow(dim, start, length).contiguous()}): contiguous, in C order.
 */
public record TensorSlice(int dim, long start, long length) {
    public TensorSlice {
        if (dim < 0 || start < 0 || length < 0) {
            throw new IllegalArgumentException("slice dim " + dim + " [" + start + ", +" + length + ") has a negative"
                    + " field");
        }
    }

    /** The slice of rank {@code rank} of {@code size} equal parts of {@code dim}. */
    public static TensorSlice part(TensorSpec full, int dim, int size, int rank) {
        long len = full.shape().get(dim) / size;
        return new TensorSlice(dim, rank * len, len);
    }

    /**
     * The slice's own spec: the full tensor's name and dtype, its shape with {@code dim} narrowed to {@code length}.
     *
     * @throws IllegalArgumentException when the slice does not fit the tensor
     */
    public TensorSpec applyTo(TensorSpec full) {
        checkWithin(full);
        List<Long> shape = new ArrayList<>(full.shape());
        shape.set(dim, length);
        return new TensorSpec(full.name(), full.dtype(), shape);
    }

    /** @throws IllegalArgumentException when the slice does not fit the tensor */
    public void checkWithin(TensorSpec full) {
        if (dim >= full.shape().size()) {
            throw new IllegalArgumentException("slice of dimension " + dim + " of tensor " + full.describe()
                    + ", which has " + full.shape().size() + " dimension(s)");
        }
        long extent = full.shape().get(dim);
        if (start + length > extent || start + length < 0) {
            throw new IllegalArgumentException("slice [" + start + ", " + (start + length) + ") of dimension " + dim
                    + " lies outside tensor " + full.describe());
        }
    }

    /** Whether the slice covers the whole tensor. */
    public boolean isWhole(TensorSpec full) {
        return start == 0 && length == full.shape().get(dim);
    }

    @Override
    public String toString() {
        return "dim " + dim + " [" + start + ", " + (start + length) + ")";
    }
}
