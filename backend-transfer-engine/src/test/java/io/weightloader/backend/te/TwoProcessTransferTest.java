package io.weightloader.backend.te;

import io.weightloader.testing.SeedProcess;
import io.weightloader.testing.TestWeights;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMismatchException;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.backend.te.builtin.BuiltinEngine;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.HostMemory;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** A seed JVM and this (client) JVM on loopback with the built-in engine. */
class TwoProcessTransferTest {
    static final long SEED = 42;
    static final String TOKEN = "s3cret-token";
    static final List<TensorSpec> SPECS = TestWeights.specs(8, 4 << 20);
    static SeedProcess seed;
    static Map<String, String> expected = new HashMap<>();
    long live;

    @BeforeAll
    static void startSeed() throws Exception {
        seed = new SeedProcess(8, 4 << 20, SEED, TOKEN);
        for (TensorSpec s : SPECS) {
            expected.put(s.name(), TestWeights.sha256(s, SEED));
        }
    }

    @AfterAll
    static void stopSeed() throws Exception {
        seed.close();
    }

    @BeforeEach
    void before() {
        live = HostMemory.liveBytes();
    }

    @AfterEach
    void noLeak() {
        assertThat(HostMemory.liveBytes()).as("leaked host memory").isEqualTo(live);
    }

    static Config client(int port, String token, String... extra) {
        StringBuilder sb = new StringBuilder("""
                weight-loader {
                  load-format = remote_instance
                  checksum = sha256
                  remote-instance { seed-instance-ip = "127.0.0.1", backend = transfer_engine
                    request-timeout = 5s, transfer-timeout = 20s, retries = 1 }
                }
                """);
        sb.append("weight-loader.remote-instance.seed-instance-service-port = ").append(port).append('\n');
        sb.append("weight-loader.remote-instance.token = \"").append(token).append("\"\n");
        for (String e : extra) {
            sb.append(e).append('\n');
        }
        return ConfigFactory.parseString(sb.toString());
    }

    static LoadReport loadAll(WeightLoader loader, List<TensorSpec> specs, HostMemory arena) {
        return loadAll(loader, specs, arena, null);
    }

    /** A load that counts {@code moving} down once its first bytes arrived (null: none). */
    static LoadReport loadAll(WeightLoader loader, List<TensorSpec> specs, HostMemory arena,
                              java.util.concurrent.CountDownLatch moving) {
        List<TensorDestination> d = new ArrayList<>();
        List<MemoryRegion> r = TestWeights.slices(arena, specs);
        for (int i = 0; i < specs.size(); i++) {
            d.add(new TensorDestination(specs.get(i), r.get(i)));
        }
        LoadRequest request = LoadRequest.of(d);
        return loader.load(moving == null ? request : request.withProgress((done, total, t, n) -> {
            if (done > 0) {
                moving.countDown();
            }
        }));
    }

    @Test
    void theClientsBytesEqualTheSeeds() {
        try (WeightLoader loader = WeightLoader.open(client(seed.port, TOKEN));
             HostMemory arena = TestWeights.arena(SPECS)) {
            assertThat(loader.available()).containsExactlyInAnyOrderElementsOf(SPECS);
            LoadReport report = loadAll(loader, SPECS, arena);
            assertThat(report.backend()).isEqualTo("transfer_engine");
            assertThat(report.engine()).isEqualTo("builtin-tcp");
            assertThat(report.totalBytes()).isEqualTo(SPECS.stream().mapToLong(TensorSpec::byteSize).sum());
            for (TensorReport t : report.tensors()) {
                assertThat(t.sha256()).as(t.name()).isEqualTo(expected.get(t.name()));
            }
            // and independently of the report: hash the destination memory here
            List<MemoryRegion> r = TestWeights.slices(arena, SPECS);
            for (int i = 0; i < SPECS.size(); i++) {
                assertThat(Checksums.sha256(r.get(i), SPECS.get(i).byteSize())).isEqualTo(expected.get(SPECS.get(i).name()));
            }
        }
    }

    @Test
    void otherShapesAreListedBeforeAnyTransfer() {
        List<TensorSpec> wrong = new ArrayList<>(SPECS);
        wrong.set(0, TensorSpec.of(SPECS.get(0).name(), DType.BF16, 64, 1));
        wrong.set(1, TensorSpec.of(SPECS.get(1).name(), DType.F16, SPECS.get(1).shape().get(0), 64));
        wrong.add(TensorSpec.of("lm_head.weight", DType.BF16, 8, 8));
        try (WeightLoader loader = WeightLoader.open(client(seed.port, TOKEN));
             HostMemory arena = TestWeights.arena(wrong)) {
            arena.zero();
            assertThatThrownBy(() -> loadAll(loader, wrong, arena))
                    .isInstanceOfSatisfying(TensorMismatchException.class, e -> {
                        assertThat(e.missing()).containsExactly("lm_head.weight BF16[8, 8]");
                        assertThat(e.mismatched()).hasSize(2);
                    })
                    .hasMessageContaining("seed 127.0.0.1:" + seed.port);
            byte[] probe = new byte[4096];
            arena.byteBuffer(0, 4096).get(probe);
            assertThat(probe).as("no byte may move before the check").containsOnly(0);
        }
    }

    @Test
    void aWrongTokenIsRefused() {
        assertThatThrownBy(() -> {
            try (WeightLoader loader = WeightLoader.open(client(seed.port, "wrong"))) {
                loader.available();
            }
        }).isInstanceOf(WeightLoaderException.class).hasMessageContaining("401")
                .hasMessageContaining("weight-loader.remote-instance.token");
        // the engine checks the token too, independently of the control plane
        Manifest m = new SeedClient("127.0.0.1", seed.port, Optional.of(TOKEN), Duration.ofSeconds(2),
                Duration.ofSeconds(5), 0).manifest(new RankKey(0, 0));
        try (BuiltinEngine engine = BuiltinEngine.client("wrong", 1, Duration.ofSeconds(2))) {
            assertThatThrownBy(() -> engine.open(m.session())).hasMessageContaining("wrong token");
        }
    }

    @Test
    void aReadOutsideRegisteredMemoryIsRefused() throws InterruptedException {
        Manifest m = new SeedClient("127.0.0.1", seed.port, Optional.of(TOKEN), Duration.ofSeconds(2),
                Duration.ofSeconds(5), 0).manifest(new RankKey(0, 0));
        Manifest.Entry first = m.tensors().get(0);
        try (BuiltinEngine engine = BuiltinEngine.client(TOKEN, 1, Duration.ofSeconds(2));
             HostMemory dst = HostMemory.allocate(8192);
             OneSidedEngine.Peer peer = engine.open(m.session())) {
            long lastByte = m.tensors().stream().mapToLong(e -> e.address() + e.bytes()).max().orElseThrow();
            OneSidedEngine.Batch b = peer.submit(List.of(
                    new OneSidedEngine.ReadOp(dst.address(), first.address(), 4096),          // inside: fine
                    new OneSidedEngine.ReadOp(dst.address(), lastByte + (1 << 20), 4096),     // beyond the weights
                    new OneSidedEngine.ReadOp(dst.address(), first.address() - 4096, 8192),   // straddles the start
                    new OneSidedEngine.ReadOp(dst.address(), 8, 4096)));                       // a null-ish pointer
            // bounded, without spinning on a busy machine's cores
            long until = System.nanoTime() + 30_000_000_000L;
            while (!(b.status(0).isFinal() && b.status(1).isFinal() && b.status(2).isFinal() && b.status(3).isFinal())
                    && System.nanoTime() < until) {
                Thread.sleep(5);
            }
            assertThat(b.status(0).state()).isEqualTo(OneSidedEngine.OpState.COMPLETED);
            for (int i = 1; i < 4; i++) {
                assertThat(b.status(i).state()).as("op " + i).isEqualTo(OneSidedEngine.OpState.FAILED);
                assertThat(b.status(i).detail()).contains("outside registered weight memory");
            }
            b.release();
        }
    }

    @Test
    void twoClientsAtOnceBothSucceed() {
        CompletableFuture<LoadReport>[] runs = new CompletableFuture[2];
        for (int i = 0; i < runs.length; i++) {
            runs[i] = CompletableFuture.supplyAsync(() -> {
                try (WeightLoader loader = WeightLoader.open(client(seed.port, TOKEN));
                     HostMemory arena = TestWeights.arena(SPECS)) {
                    return loadAll(loader, SPECS, arena);
                }
            });
        }
        for (CompletableFuture<LoadReport> r : runs) {
            LoadReport report = r.join();
            for (TensorReport t : report.tensors()) {
                assertThat(t.sha256()).as(t.name()).isEqualTo(expected.get(t.name()));
            }
        }
    }

    @Test
    void sglangClientsGetTheirJsonShape() throws Exception {
        HttpClient http = HttpClient.newHttpClient();
        for (String path : List.of("/get_remote_instance_transfer_engine_info", "/remote_instance_transfer_engine_info")) {
            HttpResponse<String> ok = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + seed.port + path
                    + "?rank=0")).header("Authorization", "Bearer " + TOKEN).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(ok.statusCode()).isEqualTo(200);
            JsonNode body = new ObjectMapper().readTree(ok.body());
            assertThat(body.get("rank").asInt()).isZero();
            JsonNode info = body.get("remote_instance_transfer_engine_info");
            assertThat(info.get(0).asText()).matches("127\\.0\\.0\\.1:\\d+");
            JsonNode w = info.get(1).get("model.layers.0.weight");
            assertThat(w.get(1).asLong() * w.get(2).asLong()).isEqualTo(4 << 20);
            assertThat(w.get(2).asInt()).isEqualTo(2);
            HttpResponse<String> bad = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + seed.port + path
                    + "?rank=7")).header("Authorization", "Bearer " + TOKEN).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(bad.statusCode()).isEqualTo(400);
            assertThat(bad.body()).contains("rank");
        }
    }

    @Test
    void unknownQueryParametersAreRefusedAsProtocolMdSays() throws Exception {
        HttpClient http = HttpClient.newHttpClient();
        for (String pathAndQuery : List.of("/v1/manifest?tp=0&debug=1", "/v1/session?tp=0&rank=0",
                "/get_remote_instance_transfer_engine_info?rank=0&tp=0")) {
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + seed.port
                    + pathAndQuery)).header("Authorization", "Bearer " + TOKEN).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertThat(r.statusCode()).as(pathAndQuery).isEqualTo(400);
            assertThat(r.body()).contains("unknown query parameter");
        }
    }

    @Test
    void aSeedKilledMidTransferFailsClearlyWithinTheDeadline() throws Exception {
        List<TensorSpec> big = TestWeights.specs(4, 32 << 20);
        try (SeedProcess doomed = new SeedProcess(4, 32 << 20, 7, TOKEN);
             WeightLoader loader = WeightLoader.open(client(doomed.port, TOKEN,
                     "weight-loader.backends.transfer_engine.bandwidth-limit = 16 MiB"));
             HostMemory arena = TestWeights.arena(big)) {
            java.util.concurrent.CountDownLatch moving = new java.util.concurrent.CountDownLatch(1);
            CompletableFuture<LoadReport> load = CompletableFuture.supplyAsync(() -> loadAll(loader, big, arena, moving));
            // mid-transfer: its first bytes arrived (128 MiB at 16 MiB/s: about 8 s to go)
            assertThat(moving.await(60, java.util.concurrent.TimeUnit.SECONDS)).as("the load moved its first bytes")
                    .isTrue();
            assertThat(load).isNotDone();
            long t0 = System.nanoTime();
            doomed.kill();
            assertThatThrownBy(load::join).hasCauseInstanceOf(WeightLoaderException.class)
                    .hasMessageContaining("127.0.0.1");
            assertThat((System.nanoTime() - t0) / 1e9).as("seconds to fail").isLessThan(20);
        }
    }
}
