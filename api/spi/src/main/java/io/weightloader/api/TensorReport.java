package io.weightloader.api;

import java.util.List;

/**
 * One loaded tensor in a {@link LoadReport}.
 *
 * @param dtype  the safetensors dtype string
 * @param sha256 lower-case hex SHA-256 of the loaded bytes, or null when checksums were not asked for
 */
public record TensorReport(String name, String dtype, List<Long> shape, long bytes, String sha256) {
    public static TensorReport of(TensorSpec spec, String sha256) {
        return new TensorReport(spec.name(), spec.dtype().safetensorsName(), spec.shape(), spec.byteSize(), sha256);
    }
}
