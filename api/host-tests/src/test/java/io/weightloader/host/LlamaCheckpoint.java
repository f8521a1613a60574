package io.weightloader.host;

import io.weightloader.api.DType;
import io.weightloader.api.TensorSpec;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.testing.Slicing;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/** A small two-layer Llama checkpoint in two shards, and its whole tensors' bytes to slice expectations from. */
final class LlamaCheckpoint {
    final Path path;
    final Map<String, byte[]> whole = new HashMap<>();

    private LlamaCheckpoint(Path dir, long seed) {
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (TensorSpec s : Slicing.llama(2, 64, 32, 96, 128, DType.BF16)) {
            byte[] b = Slicing.bytes(s, seed);
            whole.put(s.name(), b);
            tensors.add(SafetensorsWriter.Tensor.of(s, b));
        }
        path = dir.resolve("ckpt");
        SafetensorsWriter.writeSharded(path, SafetensorsWriter.split(tensors, 2), Map.of());
    }

    /** Writes it under {@code dir}/ckpt with pseudo-random bytes from {@code seed}. */
    static LlamaCheckpoint write(Path dir, long seed) {
        return new LlamaCheckpoint(dir, seed);
    }
}
