package io.weightloader.api;

import java.util.List;

/**
 * One loaded tensor in a {@link LoadReport}: the tensor's full name, and the shape, size and SHA-256 of what was
 * loaded (a tensor-parallel rank's slice, when it loaded one).
 *
 * @param dtype  the safetensors dtype string
 * @param sha256 lower-case hex SHA-256 of the loaded bytes, or null when checksums were not asked for
 * @param slice  the part of the tensor loaded, or null for the whole tensor
 */
public record TensorReport(String name, String dtype, List<Long> shape, long bytes, String sha256, TensorSlice slice) {
    public TensorReport(String name, String dtype, List<Long> shape, long bytes, String sha256) {
        this(name, dtype, shape, bytes, sha256, null);
    }

    public static TensorReport of(TensorSpec spec, String sha256) {
        return new TensorReport(spec.name(), spec.dtype().safetensorsName(), spec.shape(), spec.byteSize(), sha256);
    }

    /** What {@code d} holds: its slice's shape and bytes when it is a slice. */
    public static TensorReport of(TensorDestination d, String sha256) {
        TensorSpec held = d.held();
        return new TensorReport(held.name(), held.dtype().safetensorsName(), held.shape(), held.byteSize(), sha256,
                d.slice());
    }
}
