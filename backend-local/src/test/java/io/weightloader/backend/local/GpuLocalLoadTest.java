package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.memory.TensorArena;
import io.weightloader.api.TensorReport;
import io.weightloader.api.WeightLoader;
import io.weightloader.api.DType;
import io.weightloader.memory.HostMemory;
import io.weightloader.api.TensorSpec;
import io.weightloader.testing.Gpus;
import io.weightloader.testing.TestWeights;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Checkpoints loaded into GPU memory (pinned staging, async copies) keep their checksums. */
class GpuLocalLoadTest {
    @org.junit.jupiter.api.io.TempDir
    Path tmp;

    /** Pieces of several staging chunks, tensors that end mid-chunk, and both buffers reused many times. */
    @org.junit.jupiter.api.Test
    void piecesLargerThanTheStagingBuffersArriveWhole() throws Exception {
        Gpus.require("GpuLocalLoadTest", 1);
        List<TensorSpec> specs = List.of(TensorSpec.of("a", DType.U8, (3 << 20) + 5), TensorSpec.of("b", DType.F32, 1 << 18),
                TensorSpec.of("c", DType.U8, 17), TensorSpec.of("d", DType.BF16, 40_000));
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        try (HostMemory src = TestWeights.arena(specs)) {
            List<io.weightloader.api.MemoryRegion> slices = TestWeights.slices(src, specs);
            for (int i = 0; i < specs.size(); i++) {
                TestWeights.fill(specs.get(i), slices.get(i), 11);
                tensors.add(SafetensorsWriter.Tensor.of(specs.get(i), slices.get(i).byteBuffer(0,
                        (int) specs.get(i).byteSize())));
            }
            SafetensorsWriter.write(tmp.resolve("model.safetensors"), tensors, Map.of());
        }
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of(
                "weight-loader.model-path", tmp.resolve("model.safetensors").toString(),
                "weight-loader.device", "cuda:0",
                "weight-loader.checksum", "sha256",
                "weight-loader.backends.local.threads", "2",
                "weight-loader.backends.local.piece-size", "1 MiB",
                "weight-loader.backends.local.staging-size", "64 KiB")));
             TensorArena arena = TensorArena.allocate(Device.cuda(0), specs)) {
            LoadReport report = loader.load(LoadRequest.of(arena.destinations()));
            assertThat(report.tensors()).hasSize(specs.size());
            for (TensorReport t : report.tensors()) {
                TensorSpec s = specs.stream().filter(x -> x.name().equals(t.name())).findFirst().orElseThrow();
                assertThat(t.sha256()).as(t.name()).isEqualTo(TestWeights.sha256(s, 11));
            }
        }
    }

    @org.junit.jupiter.api.Test
    void withoutAGpuAGpuDestinationFailsNamingWhatIsMissing() {
        if (io.weightloader.memory.cuda.Cuda.available()) {
            System.err.println("SKIPPED withoutAGpuAGpuDestinationFailsNamingWhatIsMissing: this machine has CUDA");
            org.junit.jupiter.api.Assumptions.abort("this machine has CUDA");
        }
        org.assertj.core.api.Assertions.assertThatThrownBy(() -> TensorArena.allocate(Device.cuda(0),
                        java.util.List.of(io.weightloader.api.TensorSpec.of("w", io.weightloader.api.DType.BF16, 4))))
                .isInstanceOf(io.weightloader.api.WeightLoaderException.class)
                .hasMessageContaining("libcuda.so.1").hasMessageContaining("libcudart.so.13")
                .hasMessageContaining("weight-loader.device = cpu");
    }

    @ParameterizedTest
    @ValueSource(strings = {"all_dtypes.safetensors", "sharded"})
    void fixturesLoadIntoGpuMemoryWithTheReferenceChecksums(String name) throws Exception {
        Gpus.require("GpuLocalLoadTest", 1);
        Map<String, JsonNode> exp = ReferenceFixturesTest.expected(name);
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of(
                "weight-loader.model-path", ReferenceFixturesTest.FIXTURES.resolve(name).toString(),
                "weight-loader.device", "cuda:0",
                "weight-loader.checksum", "sha256",
                "weight-loader.backends.local.piece-size", "4096")));
             TensorArena arena = TensorArena.allocate(Device.cuda(0), loader.available())) {
            LoadReport report = loader.load(LoadRequest.of(arena.destinations()));
            assertThat(report.device()).isEqualTo("cuda:0");
            for (TensorReport t : report.tensors()) {
                assertThat(t.sha256()).as(t.name()).isEqualTo(exp.get(t.name()).get("sha256").textValue());
            }
        }
    }
}
