package io.weightloader.backend.local;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * What a safetensors checkpoint holds, tensor by tensor, as a person or a tool listing it wants to see it: the list
 * {@code weightloader inspect} prints. Opening the checkpoint checks it as a load would ({@link SafetensorsCheckpoint}).
 *
 * @param path       the checkpoint as given (a file, or a directory of shards)
 * @param tensors    every tensor, in the checkpoint's order
 * @param totalBytes bytes of all tensors
 */
public record CheckpointListing(String path, List<Tensor> tensors, long totalBytes) {
    /**
     * One tensor.
     *
     * @param dtype the safetensors dtype string ({@code BF16}, {@code F32}, ...)
     * @param file  the name (not the path) of the file that holds it
     */
    public record Tensor(String name, String dtype, List<Long> shape, long bytes, String file) {
    }

    public CheckpointListing {
        tensors = List.copyOf(tensors);
    }

    /** Opens and checks the checkpoint at {@code path} and lists its tensors. */
    public static CheckpointListing of(Path path) {
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(path);
        List<Tensor> tensors = new ArrayList<>();
        cp.tensors().values().forEach(l -> tensors.add(new Tensor(l.spec().name(),
                l.spec().dtype().safetensorsName(), l.spec().shape(), l.entry().bytes(),
                l.file().path().getFileName().toString())));
        return new CheckpointListing(path.toString(), tensors, cp.totalBytes());
    }
}
