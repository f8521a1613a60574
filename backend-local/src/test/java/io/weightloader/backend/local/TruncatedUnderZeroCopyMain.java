package io.weightloader.backend.local;

import io.weightloader.api.DType;
import io.weightloader.api.MappedWeights;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Run in its own JVM by {@link ZeroCopyTruncationTest}: a zero-copy load with checksums of a checkpoint whose first
 * shard is cut short under its mapping, while the second shard's tensors are still to be hashed. Exit 1 with the error
 * on stderr is the clean refusal; 0 would be a load that did not notice, and a crash kills the JVM (134).
 */
public final class TruncatedUnderZeroCopyMain {
    /** Tensors of the shard that stays whole, 1 MiB each: hashing them outlasts the failure of the cut one. */
    static final int WHOLE_TENSORS = 64;

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[0]);
        Path cut = dir.resolve("a.safetensors");
        SafetensorsWriter.write(cut, List.of(tensor("a", 1 << 20)), Map.of());
        List<SafetensorsWriter.Tensor> whole = new ArrayList<>();
        for (int i = 0; i < WHOLE_TENSORS; i++) {
            whole.add(tensor("b." + i, 1 << 20));
        }
        SafetensorsWriter.write(dir.resolve("b.safetensors"), whole, Map.of());
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(dir);
        long keep = cp.tensors().get("a").fileOffset() + 4096; // every page of 'a' after its first is gone
        List<TensorSpec> specs = cp.specs(); // 'a' first: its failure comes while b's tensors are hashed
        try (LocalBackend backend = new LocalBackend(cp, 2, 1 << 20, true)) {
            backend.afterMapping = () -> {
                try (FileChannel ch = FileChannel.open(cut, StandardOpenOption.WRITE)) {
                    ch.truncate(keep);
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            };
            try (MappedWeights w = backend.map(specs, true)) {
                System.out.println("LOADED " + w.regions().size() + " tensors");
                System.exit(0);
            }
        } catch (WeightLoaderException e) {
            System.err.println("weightloader: " + e.getMessage());
            System.exit(1);
        } catch (Throwable t) {
            t.printStackTrace();
            System.exit(2);
        }
    }

    private static SafetensorsWriter.Tensor tensor(String name, int bytes) {
        byte[] data = new byte[bytes];
        for (int i = 0; i < bytes; i++) {
            data[i] = (byte) (i * 31 + name.hashCode());
        }
        return SafetensorsWriter.Tensor.of(TensorSpec.of(name, DType.U8, bytes), data);
    }
}
