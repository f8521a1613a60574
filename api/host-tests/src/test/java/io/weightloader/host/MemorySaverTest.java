package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.ProgressListener;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.memory.TensorArena;
import io.weightloader.testing.Slicing;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The memory saver on a real seed (SeedHost, built-in engine, host memory) with real clients in this process:
 * release and resume through the library and the control plane, loads between and across releases, and what is
 * refused.
 */
class MemorySaverTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final RankKey RANK = new RankKey(0, 0);
    private static final String TOKEN = "saver-token";

    @TempDir
    Path dir;

    /** Writes the checkpoint's version {@code version} (other bytes per version) and returns its tensors' bytes. */
    private Map<String, byte[]> writeCheckpoint(Path ckpt, int vocab, long version) {
        Map<String, byte[]> out = new HashMap<>();
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (TensorSpec s : Slicing.llama(2, 64, 32, 96, vocab, DType.BF16)) {
            byte[] b = Slicing.bytes(s, 1000 + version);
            out.put(s.name(), b);
            tensors.add(SafetensorsWriter.Tensor.of(s, b));
        }
        SafetensorsWriter.writeSharded(ckpt, SafetensorsWriter.split(tensors, 2), Map.of());
        return out;
    }

    private static Config config(String hocon) {
        return ConfigFactory.parseString(hocon).withFallback(ConfigFactory.load()).resolve();
    }

    private static SeedHost seed(Path ckpt, boolean saver) throws Exception {
        return SeedHost.start(config("""
                weight-loader { model-path = "%s", enable-memory-saver = %s
                  remote-instance.token = "%s" }""".formatted(ckpt, saver, TOKEN)));
    }

    private static WeightLoader client(int port, String extra) {
        return WeightLoader.open(config("""
                weight-loader { load-format = remote_instance, checksum = sha256
                  remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = %d, token = "%s"
                    retries = 1, transfer-timeout = 20s }
                  %s }""".formatted(port, TOKEN, extra)));
    }

    private static void assertHolds(List<TensorDestination> held, Map<String, byte[]> want) {
        for (TensorDestination d : held) {
            byte[] got = new byte[(int) d.byteSize()];
            d.region().byteBuffer(0, got.length).get(got);
            assertThat(got).as(d.spec().name()).isEqualTo(want.get(d.spec().name()));
        }
    }

    /** A client's whole load; the bytes it got are checked against what the generation it saw stands for. */
    private static void loadAndCheck(SeedHost seed, Map<String, Map<String, byte[]>> byGeneration) {
        String before = seed.service().manifest(RANK).orElseThrow().generation();
        try (WeightLoader loader = client(seed.service().port(), "");
             TensorArena arena = TensorArena.allocate(Device.CPU, loader.available())) {
            loader.load(LoadRequest.of(arena.destinations()));
            String after = seed.service().manifest(RANK).orElseThrow().generation();
            assertThat(after).isEqualTo(before);
            assertThat(byGeneration).containsKey(after);
            assertHolds(arena.destinations(), byGeneration.get(after));
        }
    }

    private static HttpResponse<String> post(int port, String path, String body, String token) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                .POST(HttpRequest.BodyPublishers.ofString(body)).timeout(Duration.ofSeconds(30));
        if (token != null) {
            b.header("Authorization", "Bearer " + token);
        }
        return HttpClient.newHttpClient().send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    private static HttpResponse<String> get(int port, String path) throws Exception {
        return HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                .header("Authorization", "Bearer " + TOKEN).build(), HttpResponse.BodyHandlers.ofString());
    }

    @Test
    void threeReleaseResumeCyclesWithClientsLoadingInBetweenEachByteExactAgainstItsGeneration() throws Exception {
        Path ckpt = dir.resolve("ckpt");
        Map<String, byte[]> v0 = writeCheckpoint(ckpt, 128, 0);
        try (SeedHost seed = seed(ckpt, true)) {
            int port = seed.service().port();
            Map<String, Map<String, byte[]>> byGeneration = new HashMap<>();
            byGeneration.put(seed.service().manifest(RANK).orElseThrow().generation(), v0);
            loadAndCheck(seed, byGeneration);
            List<TensorDestination> held = seed.held().get(RANK);
            long address = held.get(0).region().address();
            Map<String, byte[]> current = v0;
            for (int cycle = 1; cycle <= 3; cycle++) {
                boolean keepCopy = cycle == 2;
                SeedHost.MemoryReport released = seed.releaseMemory(Duration.ofSeconds(5), keepCopy);
                assertThat(released.bytes()).isGreaterThanOrEqualTo(seed.bytes());
                assertThat(seed.released()).isTrue();
                // the pages are gone: the same addresses read zeros
                byte[] first = new byte[(int) held.get(0).byteSize()];
                held.get(0).region().byteBuffer(0, first.length).get(first);
                assertThat(first).containsOnly(0);
                // new clients are told, and give up
                assertThat(get(port, "/v1/manifest?tp=0").statusCode()).isEqualTo(503);
                assertThat(get(port, "/v1/session?tp=0").body()).contains("weights released");
                assertThat(get(port, "/get_remote_instance_transfer_engine_info?rank=0").statusCode()).isEqualTo(503);
                assertThatThrownBy(() -> loadAndCheck(seed, byGeneration)).hasMessageContaining("weights released");
                // resume: from the host copy (the same weights) or from the checkpoint, rewritten meanwhile
                if (!keepCopy) {
                    current = writeCheckpoint(ckpt, 128, cycle);
                }
                SeedHost.MemoryReport resumed = seed.resumeMemory();
                assertThat(resumed.source()).isEqualTo(keepCopy ? "host copy" : "checkpoint");
                String generation = resumed.generations().get(RANK.toString());
                assertThat(byGeneration).doesNotContainKey(generation);
                assertThat(seed.service().manifest(RANK).orElseThrow().generation()).isEqualTo(generation);
                byGeneration.put(generation, current);
                assertThat(seed.held().get(RANK).get(0).region().address()).as("addresses kept").isEqualTo(address);
                assertHolds(seed.held().get(RANK), current);
                loadAndCheck(seed, byGeneration);
                loadAndCheck(seed, byGeneration);
            }
            assertThat(seed.resumeMemory().action()).isEqualTo("already resumed");
        }
    }

    @Test
    void aLoadOverlappingAReleaseFailsOrReloadsAndNeverReportsReleasedOrRefilledBytes() throws Exception {
        Path ckpt = dir.resolve("ckpt");
        writeCheckpoint(ckpt, 8192, 0); // ~2.3 MiB
        try (SeedHost seed = seed(ckpt, true)) {
            int port = seed.service().port();
            CountDownLatch firstBytes = new CountDownLatch(1);
            try (WeightLoader loader = client(port, """
                    backends.transfer_engine { bandwidth-limit = 1MiB, slice-size = 64KiB }""");
                 TensorArena arena = TensorArena.allocate(Device.CPU, loader.available())) {
                LoadRequest request = LoadRequest.of(arena.destinations()).withProgress(new ProgressListener() {
                    @Override
                    public void onProgress(long bytesDone, long bytesTotal, int tensorsDone, int tensorsTotal) {
                        if (bytesDone > 0) {
                            firstBytes.countDown();
                        }
                    }
                });
                CompletableFuture<LoadReport> load = CompletableFuture.supplyAsync(() -> loader.load(request));
                assertThat(firstBytes.await(20, TimeUnit.SECONDS)).as("the load started").isTrue();
                assertThat(load).isNotDone();
                SeedHost.MemoryReport r = seed.releaseMemory(Duration.ZERO, false);
                assertThat(r.quiet()).isFalse(); // the slow load was still reading: cut
                // refilled under the load with other weights, under a new generation
                Map<String, byte[]> v1 = writeCheckpoint(ckpt, 8192, 1);
                String generation = seed.resumeMemory().generations().get(RANK.toString());
                LoadReport report;
                try {
                    report = load.get(60, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    // failed cleanly: a load error naming what happened, never a report
                    assertThat(e.getCause()).isInstanceOf(WeightLoaderException.class);
                    return;
                }
                // or it noticed the new generation and read everything again: only the refilled weights
                assertThat(report.phases()).containsKey("stale-manifest");
                assertThat(seed.service().manifest(RANK).orElseThrow().generation()).isEqualTo(generation);
                assertHolds(arena.destinations(), v1);
            }
        }
    }

    /** The addresses of the relays the root's directory lists as ready for rank 0 (what it assigns clients to). */
    private static List<String> readyRelays(int rootPort) throws Exception {
        HttpResponse<String> r = get(rootPort, "/v1/relays?tp=0&pp=0");
        assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
        List<String> out = new ArrayList<>();
        JSON.readTree(r.body()).path("relays").forEach(n -> {
            if (n.path("ready").asBoolean()) {
                out.add(n.path("address").asText());
            }
        });
        return out;
    }

    @Test
    void aRelayReleasesLeavesItsRootsDirectoryAndResumesFromAnotherSeedNeverFromAStaleCopy() throws Exception {
        Path ckpt = dir.resolve("ckpt");
        Map<String, byte[]> v0 = writeCheckpoint(ckpt, 128, 0);
        try (SeedHost root = seed(ckpt, true)) {
            int rootPort = root.service().port();
            SeedHost relay = SeedHost.start(config("""
                    weight-loader { load-format = remote_instance, enable-memory-saver = true, checksum = sha256
                      remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = %d, token = "%s" }
                      backends.transfer_engine.source-strategy = tree }""".formatted(rootPort, TOKEN)));
            try {
                String address = relay.relayAddress().orElseThrow();
                String g0 = root.service().manifest(RANK).orElseThrow().generation();
                assertThat(readyRelays(rootPort)).containsExactly(address);
                loadAndCheck(relay, Map.of(g0, v0));

                // released: out of the directory (no client is sent to it), its own clients refused
                SeedHost.MemoryReport released = relay.releaseMemory();
                long weights = v0.values().stream().mapToLong(b -> b.length).sum();
                assertThat(released.bytes()).isGreaterThanOrEqualTo(weights);
                assertThat(readyRelays(rootPort)).as("a released relay is not assigned").isEmpty();
                HttpResponse<String> refused = get(relay.service().port(), "/v1/manifest?tp=0&pp=0");
                assertThat(refused.statusCode()).isEqualTo(503);
                assertThat(refused.body()).contains("released");

                // resumed from another seed (its root), under the root's generation, and back in the directory
                SeedHost.MemoryReport resumed = relay.resumeMemory();
                assertThat(resumed.source()).isEqualTo("root seed");
                assertThat(resumed.generations()).containsEntry(RANK.toString(), g0);
                assertHolds(relay.held().get(RANK), v0);
                assertThat(readyRelays(rootPort)).containsExactly(address);
                loadAndCheck(relay, Map.of(g0, v0));

                // released with a host copy, and the root's weights change meanwhile: the copy is stale, so the relay
                // refills from the root and serves the root's new weights under their generation
                relay.releaseMemory(Duration.ofSeconds(5), true);
                root.releaseMemory();
                Map<String, byte[]> v1 = writeCheckpoint(ckpt, 128, 1);
                String g1 = root.resumeMemory().generations().get(RANK.toString());
                assertThat(g1).isNotEqualTo(g0);
                resumed = relay.resumeMemory();
                assertThat(resumed.source()).isEqualTo("root seed (the host copy was stale)");
                assertThat(resumed.generations()).containsEntry(RANK.toString(), g1);
                assertHolds(relay.held().get(RANK), v1);
                loadAndCheck(relay, Map.of(g1, v1));
            } finally {
                relay.stop(Duration.ofSeconds(10));
            }
        }
    }

    @Test
    void theControlPlaneReleasesAndResumesWithSGLangsNamesTokenAndStrictBodies() throws Exception {
        Path ckpt = dir.resolve("ckpt");
        Map<String, byte[]> v0 = writeCheckpoint(ckpt, 128, 0);
        try (SeedHost seed = seed(ckpt, true)) {
            int port = seed.service().port();
            String release = "/release_memory_occupation";
            String resume = "/resume_memory_occupation";
            assertThat(post(port, release, "{\"tags\":[\"weights\"]}", null).statusCode()).isEqualTo(401);
            assertThat(post(port, release, "{\"tags\":[\"weights\"]}", "wrong").statusCode()).isEqualTo(401);
            for (String bad : List.of("", "not json", "[]", "{\"tags\":\"weights\"}", "{\"tags\":[]}", "{\"tags\":[1]}",
                    "{\"tag\":[\"weights\"]}", "{\"keep_host_copy\":\"yes\"}")) {
                HttpResponse<String> r = post(port, release, bad, TOKEN);
                assertThat(r.statusCode()).as(bad).isEqualTo(400);
            }
            HttpResponse<String> kv = post(port, release, "{\"tags\":[\"weights\",\"kv_cache\"]}", TOKEN);
            assertThat(kv.statusCode()).isEqualTo(400);
            assertThat(kv.body()).contains("kv_cache").contains("tags accepted: [weights]");
            assertThat(post(port, release + "?tp=0", "{}", TOKEN).statusCode()).isEqualTo(400);
            assertThat(post(port, resume, "{\"keep_host_copy\":true}", TOKEN).statusCode()).as("release only")
                    .isEqualTo(400);
            assertThat(seed.released()).isFalse();

            HttpResponse<String> r = post(port, release, "{\"tags\":[\"weights\"]}", TOKEN);
            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            JsonNode n = JSON.readTree(r.body());
            assertThat(n.path("success").asBoolean()).isTrue();
            assertThat(n.path("bytes").asLong()).isGreaterThanOrEqualTo(seed.bytes());
            assertThat(seed.released()).isTrue();
            assertThat(get(port, "/v1/manifest?tp=0").body()).contains("weights released");
            assertThat(post(port, release, "{}", TOKEN).body()).contains("already released");

            r = post(port, resume, "{\"tags\":null}", TOKEN);
            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            n = JSON.readTree(r.body());
            assertThat(n.path("source").asText()).isEqualTo("checkpoint");
            assertThat(n.path("generations").path(RANK.toString()).asText())
                    .isEqualTo(seed.service().manifest(RANK).orElseThrow().generation());
            assertThat(seed.released()).isFalse();
            loadAndCheck(seed, Map.of(seed.service().manifest(RANK).orElseThrow().generation(), v0));
        }
    }

    @Test
    void aSeedWithoutTheMemorySaverRefusesToRelease() throws Exception {
        Path ckpt = dir.resolve("ckpt");
        writeCheckpoint(ckpt, 128, 0);
        try (SeedHost seed = seed(ckpt, false)) {
            assertThatThrownBy(seed::releaseMemory).isInstanceOf(WeightLoaderConfigException.class)
                    .hasMessageContaining("weight-loader.enable-memory-saver");
            HttpResponse<String> r = post(seed.service().port(), "/release_memory_occupation", "{}", TOKEN);
            assertThat(r.statusCode()).isEqualTo(501);
            assertThat(r.body()).contains("enable-memory-saver");
            assertThat(get(seed.service().port(), "/v1/manifest?tp=0").statusCode()).isEqualTo(200);
        }
    }
}
