package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.TensorArena;
import io.weightloader.memory.cuda.Cuda;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.seed.Manifest;
import io.weightloader.testing.Gpus;
import io.weightloader.testing.Slicing;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The memory saver on a GPU (skipped without one, the reason printed; run by examples/scripts/device-tests.sh): a
 * releasable GPU arena ({@code VirtualDeviceArena}) gives its memory back to the GPU on release ({@code cudaMemGetInfo}:
 * at least 95% of it) and takes it again on resume at the same addresses, three times, refilled byte-exact from the
 * checkpoint or from a host copy; and a seed on {@code cuda:0} serving nccl does the same through
 * {@link SeedHost#releaseMemory}/{@link SeedHost#resumeMemory}, publishing a new generation whose manifest carries the
 * same addresses and the new weights' checksums. With two GPUs a client on {@code cuda:1} loads over nccl after each
 * resume (NCCL cannot put the seed and the client on one GPU).
 */
class GpuMemorySaverTest {
    private static final Device GPU = Device.cuda(0);
    private static final RankKey RANK = new RankKey(0, 0);
    private static final String TOKEN = "gpu-saver-token";

    @TempDir
    Path dir;

    /** About 107 MiB: whole granules freed dominate anything else the GPU's free memory might show. */
    private static List<TensorSpec> specs() {
        return Slicing.llama(2, 1024, 256, 2816, 16384, DType.BF16);
    }

    /** Writes version {@code version} of the checkpoint (other bytes per version) and returns its tensors' bytes. */
    private static Map<String, byte[]> writeCheckpoint(Path ckpt, long version) {
        Map<String, byte[]> out = new HashMap<>();
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (TensorSpec s : specs()) {
            byte[] b = Slicing.bytes(s, 500 + version);
            out.put(s.name(), b);
            tensors.add(SafetensorsWriter.Tensor.of(s, b));
        }
        SafetensorsWriter.writeSharded(ckpt, SafetensorsWriter.split(tensors, 2), Map.of());
        return out;
    }

    private static Config config(String hocon) {
        return ConfigFactory.parseString(hocon).withFallback(ConfigFactory.load()).resolve();
    }

    /** Each GPU tensor copied back and compared with what it should hold. */
    private static void assertHolds(List<TensorDestination> held, Map<String, byte[]> want) {
        for (TensorDestination d : held) {
            byte[] got = read(d);
            assertThat(got).as(d.spec().name()).isEqualTo(want.get(d.spec().name()));
        }
    }

    private static byte[] read(TensorDestination d) {
        try (HostMemory h = HostMemory.allocate(d.byteSize())) {
            DeviceCopies.copy(h, 0, d.region(), 0, d.byteSize());
            byte[] got = new byte[(int) d.byteSize()];
            h.byteBuffer(0, got.length).get(got);
            return got;
        }
    }

    private static String sha256(byte[] b) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
    }

    private static List<Long> addresses(List<TensorDestination> held) {
        return held.stream().map(d -> d.region().address()).toList();
    }

    /** Free GPU memory gained by {@code release}, checked against the bytes it should give back. */
    private static long assertFreed(Runnable release, long bytes, String what) {
        long before = Cuda.memoryInfo(GPU).free();
        release.run();
        long after = Cuda.memoryInfo(GPU).free();
        long freed = after - before;
        System.err.printf("%s: cudaMemGetInfo free %d -> %d: %.1f MiB freed of %.1f MiB (%.1f%%)%n", what, before,
                after, freed / 1048576.0, bytes / 1048576.0, 100.0 * freed / bytes);
        assertThat(freed).as(what + ": bytes freed on the GPU").isGreaterThanOrEqualTo((long) (0.95 * bytes));
        return freed;
    }

    @Test
    void aReleasableGpuArenaGivesItsMemoryBackAndResumesAtTheSameAddressesThreeTimes() throws Exception {
        Gpus.require("GpuMemorySaverTest", 1);
        Path ckpt = dir.resolve("ckpt");
        Map<String, byte[]> current = writeCheckpoint(ckpt, 0);
        Config local = config("weight-loader { model-path = \"%s\", device = \"cuda:0\" }".formatted(ckpt));
        try (TensorArena arena = TensorArena.allocate(GPU, specs(), true)) {
            assertThat(arena.releasable()).isTrue();
            assertThat(arena.releasableBytes()).isGreaterThanOrEqualTo(arena.region().length());
            try (WeightLoader loader = WeightLoader.open(local)) {
                loader.load(LoadRequest.of(arena.destinations()));
            }
            assertHolds(arena.destinations(), current);
            long base = arena.region().address();
            List<Long> tensors = addresses(arena.destinations());
            for (int cycle = 1; cycle <= 3; cycle++) {
                boolean fromCopy = cycle == 2;
                HostMemory copy = fromCopy ? arena.copyToHost() : null;
                try {
                    assertFreed(arena::releasePages, arena.releasableBytes(), "arena, release " + cycle);
                    assertThat(arena.released()).isTrue();
                    assertThatThrownBy(arena::copyToHost).isInstanceOf(IllegalStateException.class)
                            .hasMessageContaining("released");
                    assertThat(arena.region().address()).as("the range stays reserved").isEqualTo(base);
                    long free = Cuda.memoryInfo(GPU).free();
                    assertThat(arena.populate()).isTrue();
                    assertThat(free - Cuda.memoryInfo(GPU).free()).as("resume takes the memory again")
                            .isGreaterThanOrEqualTo((long) (0.95 * arena.releasableBytes()));
                    assertThat(read(arena.destinations().get(0))).as("new memory reads zeros").containsOnly(0);
                    if (fromCopy) {
                        arena.copyFrom(copy);
                    } else {
                        current = writeCheckpoint(ckpt, cycle); // the refill reads the checkpoint as it is now
                        try (WeightLoader loader = WeightLoader.open(local)) {
                            loader.load(LoadRequest.of(arena.destinations()));
                        }
                    }
                } finally {
                    if (copy != null) {
                        copy.close();
                    }
                }
                assertThat(arena.region().address()).as("base address after cycle " + cycle).isEqualTo(base);
                assertThat(addresses(arena.destinations())).as("tensor addresses after cycle " + cycle)
                        .isEqualTo(tensors);
                assertHolds(arena.destinations(), current);
            }
        }
    }

    @Test
    void aGpuSeedServingNcclReleasesAndResumesInPlaceThreeTimesUnderNewGenerations() throws Exception {
        Gpus.require("GpuMemorySaverTest", 1);
        Path ckpt = dir.resolve("ckpt");
        Map<String, byte[]> current = writeCheckpoint(ckpt, 0);
        boolean client = Cuda.deviceCount() >= 2;
        if (!client) {
            System.err.println("GpuMemorySaverTest: the client loads over nccl after each resume need a second GPU"
                    + " (NCCL refuses two ranks on one GPU): the seed's side only on this machine");
        }
        try (SeedHost seed = SeedHost.start(config("""
                weight-loader { model-path = "%s", device = "cuda:0", enable-memory-saver = true
                  remote-instance.token = "%s", seed { serve = [nccl], bind-address = "127.0.0.1" } }"""
                .formatted(ckpt, TOKEN)))) {
            List<TensorDestination> held = seed.held().get(RANK);
            List<Long> tensors = addresses(held);
            Manifest first = seed.service().manifest(RANK).orElseThrow();
            List<Long> published = first.tensors().stream().map(Manifest.Entry::address).toList();
            String generation = first.generation();
            assertHolds(held, current);
            if (client) {
                loadOnSecondGpu(seed, current);
            }
            for (int cycle = 1; cycle <= 3; cycle++) {
                boolean keepCopy = cycle == 2;
                SeedHost.MemoryReport[] released = new SeedHost.MemoryReport[1];
                long weights = seed.bytes();
                assertFreed(() -> released[0] = seed.releaseMemory(Duration.ofSeconds(2), keepCopy), weights,
                        "seed, release " + cycle);
                assertThat(released[0].bytes()).isGreaterThanOrEqualTo(weights);
                assertThat(seed.released()).isTrue();
                HttpResponse<String> m = get(seed.service().port(), "/v1/manifest?tp=0");
                assertThat(m.statusCode()).isEqualTo(503);
                assertThat(m.body()).contains("weights released");
                if (!keepCopy) {
                    current = writeCheckpoint(ckpt, cycle);
                }
                SeedHost.MemoryReport resumed = seed.resumeMemory();
                assertThat(resumed.source()).isEqualTo(keepCopy ? "host copy" : "checkpoint");
                String next = resumed.generations().get(RANK.toString());
                assertThat(next).as("a new generation").isNotEqualTo(generation);
                generation = next;
                Manifest manifest = seed.service().manifest(RANK).orElseThrow();
                assertThat(manifest.generation()).isEqualTo(next);
                assertThat(manifest.tensors().stream().map(Manifest.Entry::address).toList())
                        .as("the new manifest carries the same addresses").isEqualTo(published);
                assertThat(addresses(seed.held().get(RANK))).as("the host's pointers after cycle " + cycle)
                        .isEqualTo(tensors);
                assertHolds(seed.held().get(RANK), current);
                for (Manifest.Entry e : manifest.tensors()) {
                    assertThat(e.sha256()).as("published checksum of " + e.name())
                            .isEqualTo(sha256(current.get(e.name())));
                }
                if (client) {
                    loadOnSecondGpu(seed, current);
                }
            }
        }
    }

    /** A client on cuda:1 loads everything over nccl; its checksums must be those of {@code want}. */
    private static void loadOnSecondGpu(SeedHost seed, Map<String, byte[]> want) throws Exception {
        String before = seed.service().manifest(RANK).orElseThrow().generation();
        try (WeightLoader loader = WeightLoader.open(config("""
                weight-loader { load-format = remote_instance, device = "cuda:1", checksum = sha256
                  remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = %d, backend = nccl
                    token = "%s", transfer-timeout = 60s } }""".formatted(seed.service().port(), TOKEN)));
             TensorArena arena = TensorArena.allocate(Device.cuda(1), loader.available())) {
            LoadReport report = loader.load(LoadRequest.of(arena.destinations()));
            for (TensorReport t : report.tensors()) {
                assertThat(t.sha256()).as(t.name()).isEqualTo(sha256(want.get(t.name())));
            }
            assertThat(seed.service().manifest(RANK).orElseThrow().generation()).isEqualTo(before);
            System.err.println("nccl client on cuda:1: " + report.summary());
        }
    }

    private static HttpResponse<String> get(int port, String path) throws Exception {
        return HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                .header("Authorization", "Bearer " + TOKEN).build(), HttpResponse.BodyHandlers.ofString());
    }
}
