package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.TensorArena;
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

    /** A rank's slices gathered row by row through small staging buffers equal slicing the whole tensors. */
    @org.junit.jupiter.api.Test
    void aTensorParallelRanksSlicesArriveInGpuMemoryAsSlicingGivesThem() throws Exception {
        Gpus.require("GpuLocalLoadTest", 1);
        List<TensorSpec> specs = io.weightloader.testing.Slicing.llama(2, 256, 128, 512, 1024, DType.BF16);
        Map<String, byte[]> whole = new java.util.HashMap<>();
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (TensorSpec s : specs) {
            byte[] b = io.weightloader.testing.Slicing.bytes(s, 5);
            whole.put(s.name(), b);
            tensors.add(SafetensorsWriter.Tensor.of(s, b));
        }
        SafetensorsWriter.write(tmp.resolve("model.safetensors"), tensors, Map.of());
        for (int rank = 0; rank < 4; rank++) {
            try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of(
                    "weight-loader.model-path", tmp.resolve("model.safetensors").toString(),
                    "weight-loader.device", "cuda:0", "weight-loader.checksum", "sha256",
                    "weight-loader.rank.tp-size", "4", "weight-loader.rank.tp", Integer.toString(rank),
                    "weight-loader.tp-layout", "llama",
                    "weight-loader.backends.local.piece-size", "96 KiB",
                    "weight-loader.backends.local.staging-size", "5 KiB")))) {
                var slices = io.weightloader.api.TpLayout.LLAMA.plan(specs, 4, rank);
                try (TensorArena arena = TensorArena.allocate(Device.cuda(0),
                        io.weightloader.api.TpLayout.heldSpecs(specs, slices))) {
                    LoadReport report = loader.load(LoadRequest.of(io.weightloader.api.TpLayout.destinations(specs,
                            arena.destinations(), slices)));
                    for (int i = 0; i < specs.size(); i++) {
                        TensorSpec s = specs.get(i);
                        byte[] want = io.weightloader.testing.Slicing.slice(whole.get(s.name()), s, slices.get(s.name()));
                        assertThat(report.tensors().get(i).sha256()).as("%s rank %d", s.name(), rank)
                                .isEqualTo(io.weightloader.memory.Checksums.sha256(want));
                    }
                }
            }
        }
    }

    /** One request, tensors on two GPUs: each lands on its own device, whole. */
    @org.junit.jupiter.api.Test
    void oneLoadPlacesEachTensorOnTheGpuItsDestinationNames() throws Exception {
        Gpus.require("GpuLocalLoadTest", 2);
        List<TensorSpec> specs = TestWeights.specs(8, 3 << 20);
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        try (HostMemory src = TestWeights.arena(specs)) {
            List<io.weightloader.api.MemoryRegion> slices = TestWeights.slices(src, specs);
            for (int i = 0; i < specs.size(); i++) {
                TestWeights.fill(specs.get(i), slices.get(i), 13);
                tensors.add(SafetensorsWriter.Tensor.of(specs.get(i), slices.get(i).byteBuffer(0,
                        (int) specs.get(i).byteSize())));
            }
            SafetensorsWriter.write(tmp.resolve("model.safetensors"), tensors, Map.of());
        }
        List<TensorSpec> even = new ArrayList<>();
        List<TensorSpec> odd = new ArrayList<>();
        for (int i = 0; i < specs.size(); i++) {
            (i % 2 == 0 ? even : odd).add(specs.get(i));
        }
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of(
                "weight-loader.model-path", tmp.resolve("model.safetensors").toString(),
                "weight-loader.device", "cuda:0", "weight-loader.checksum", "sha256")));
             TensorArena a0 = TensorArena.allocate(Device.cuda(0), even);
             TensorArena a1 = TensorArena.allocate(Device.cuda(1), odd)) {
            List<io.weightloader.api.TensorDestination> dest = new ArrayList<>(a0.destinations());
            dest.addAll(a1.destinations());
            LoadReport report = loader.load(LoadRequest.of(dest));
            for (int i = 0; i < dest.size(); i++) {
                io.weightloader.api.TensorDestination d = dest.get(i);
                assertThat(report.tensors().get(i).sha256()).as(d.spec().name())
                        .isEqualTo(TestWeights.sha256(d.spec(), 13));
                if (d.byteSize() == 0) {
                    continue; // no memory to ask about
                }
                org.bytedeco.cuda.cudart.cudaPointerAttributes attr = new org.bytedeco.cuda.cudart.cudaPointerAttributes();
                io.weightloader.memory.cuda.Cuda.check(org.bytedeco.cuda.global.cudart.cudaPointerGetAttributes(attr,
                        io.weightloader.memory.cuda.Cuda.pointer(d.region().address())), "cudaPointerGetAttributes");
                assertThat(attr.device()).as("device of %s", d.spec().name()).isEqualTo(d.region().device().index());
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
