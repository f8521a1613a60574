package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;

import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorSpec;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.RepeatedTest;
import org.junit.jupiter.api.io.TempDir;

/**
 * Progress as a host's progress bar sees it: pieces finish on several threads, yet the bytes and tensors reported
 * never go back, and the last call reports every byte and tensor (an older count reported after a newer one left
 * a finished load at less than 100%: seen once in CI).
 */
class ProgressOrderTest {
    @TempDir
    Path dir;

    @RepeatedTest(5)
    void progressNeverGoesBackAndEndsAtEveryByte() {
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (int i = 0; i < 400; i++) {
            TensorSpec s = new TensorSpec("t" + i, DType.F32, List.of(64L + i % 7));
            tensors.add(SafetensorsWriter.Tensor.of(s, new byte[(int) s.byteSize()]));
        }
        Path file = dir.resolve("model.safetensors");
        SafetensorsWriter.write(file, tensors, Map.of());
        List<long[]> calls = new ArrayList<>();
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseString("""
                weight-loader { model-path = "%s", backends.local.threads = 8 }""".formatted(file))
                .withFallback(ConfigFactory.load()).resolve());
             TensorArena arena = TensorArena.allocate(Device.CPU, loader.available())) {
            LoadRequest request = LoadRequest.of(arena.destinations()).withProgress((done, total, n, of) -> {
                synchronized (calls) {
                    calls.add(new long[] {done, total, n, of});
                }
            });
            loader.load(request);
            long[] last = calls.get(calls.size() - 1);
            assertThat(last[0]).as("bytes at the last call").isEqualTo(request.totalBytes());
            assertThat(last[2]).as("tensors at the last call").isEqualTo(400);
            for (int i = 1; i < calls.size(); i++) {
                assertThat(calls.get(i)[0]).as("bytes at call %d", i).isGreaterThanOrEqualTo(calls.get(i - 1)[0]);
                assertThat(calls.get(i)[2]).as("tensors at call %d", i).isGreaterThanOrEqualTo(calls.get(i - 1)[2]);
            }
        }
    }
}
