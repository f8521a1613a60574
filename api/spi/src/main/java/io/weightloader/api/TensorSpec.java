package io.weightloader.api;

import java.util.List;
import java.util.Objects;

/**
 * What a tensor is, independent of where its bytes live: name, element type and shape.
 *
 * <p>A scalar has an empty shape (one element); a tensor with a zero dimension has no bytes.
 */
public record TensorSpec(String name, DType dtype, List<Long> shape) {

    public TensorSpec {
        Objects.requireNonNull(name, "name is null");
        Objects.requireNonNull(dtype, "dtype is null");
        Objects.requireNonNull(shape, "shape is null");
        if (name.isEmpty()) {
            throw new IllegalArgumentException("tensor name is empty");
        }
        shape = List.copyOf(shape);
        for (Long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("tensor '" + name + "' has a negative dimension in " + shape);
            }
        }
        // validates that the element count and byte size are representable and whole
        try {
            dtype.byteSize(numel(shape));
        } catch (ArithmeticException e) {
            throw overflow(dtype, shape, e);
        }
    }

    public static TensorSpec of(String name, DType dtype, long... shape) {
        Long[] boxed = new Long[shape.length];
        for (int i = 0; i < shape.length; i++) {
            boxed[i] = shape[i];
        }
        return new TensorSpec(name, dtype, List.of(boxed));
    }

    /** Number of elements (1 for a scalar). */
    public long numel() {
        return numel(shape);
    }

    /** Number of bytes the tensor occupies. */
    public long byteSize() {
        return dtype.byteSize(numel());
    }

    private static long numel(List<Long> shape) {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /**
     * Without the tensor's name: the parsers that meet such shapes (safetensors headers, manifests) name the tensor
     * (and its file or seed) themselves, so the name would be said twice.
     */
    private static IllegalArgumentException overflow(DType dtype, List<Long> shape, ArithmeticException e) {
        return new IllegalArgumentException("shape " + shape + " of " + dtype + " is more than 2^63 bytes (its size"
                + " overflows 64 bits)", e);
    }

    /** Human-readable form, e.g. {@code model.embed BF16[32000, 4096]}. */
    public String describe() {
        return name + " " + dtype + shape;
    }
}
