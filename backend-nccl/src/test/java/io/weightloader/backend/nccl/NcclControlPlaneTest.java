package io.weightloader.backend.nccl;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.cuda.Cuda;
import io.weightloader.seed.SeedService;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.junit.jupiter.api.Test;

/**
 * The nccl control-plane exchange between a real seed service and a real client, with NCCL itself replaced by a
 * recorder (no GPU here): the unique id travels over the control plane, the seed sends in its manifest order,
 * the client receives by name, a busy seed is reported, and settings are validated. The NCCL data path itself
 * runs on two GPUs (see docs/PERFORMANCE.md).
 */
class NcclControlPlaneTest {
    static final List<TensorSpec> SPECS = List.of(TensorSpec.of("embed", DType.BF16, 64, 8),
            TensorSpec.of("layer.0.w", DType.F32, 16), TensorSpec.of("layer.1.w", DType.F32, 16),
            TensorSpec.of("empty", DType.I8, 0));

    static List<TensorDestination> fakeGpuTensors(long base) {
        List<TensorDestination> out = new ArrayList<>();
        long at = base;
        for (TensorSpec s : SPECS) {
            out.add(new TensorDestination(s, MemoryRegion.of(at, s.byteSize(), Device.cuda(0))));
            at += 4096;
        }
        return out;
    }

    static Config seedConfig(String extra) {
        return ConfigFactory.parseString("""
                weight-loader.seed { bind-address = "127.0.0.1", serve = [nccl], publish-checksums = false }
                weight-loader.remote-instance.token = "tok"
                """ + extra).withFallback(ConfigFactory.defaultReference()).resolve();
    }

    static SeedService seed(FakeNccl nccl, String extra) {
        Config c = seedConfig(extra);
        return Seeds.start(new BackendContext(WeightLoaderSettings.from(c), c),
                BackendRegistry.of(List.of(new NcclProvider(nccl))), Map.of(new RankKey(0, 0), fakeGpuTensors(0x10000)));
    }

    static WeightLoader client(FakeNccl nccl, int port, String extra) {
        Config c = ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance, device = "cuda:1"
                  remote-instance { seed-instance-ip = "127.0.0.1", backend = nccl, token = "tok", retries = 1 } }
                weight-loader.remote-instance.seed-instance-service-port = %d
                %s""".formatted(port, extra));
        return WeightLoader.open(c, BackendRegistry.of(List.of(new NcclProvider(nccl))), ConfigFactory.defaultReference());
    }

    @Test
    void theUniqueIdTravelsOverTheControlPlaneAndTensorsAreMatchedByName() throws InterruptedException {
        FakeNccl seedNccl = new FakeNccl();
        FakeNccl clientNccl = new FakeNccl();
        try (SeedService svc = seed(seedNccl, "");
             WeightLoader loader = client(clientNccl, svc.port(), "")) {
            // the host asks in another order than the seed holds, and not for every tensor
            List<TensorDestination> dest = new ArrayList<>();
            long at = 0x900000;
            for (String n : List.of("layer.1.w", "embed", "empty")) {
                TensorSpec s = SPECS.stream().filter(x -> x.name().equals(n)).findFirst().orElseThrow();
                dest.add(new TensorDestination(s, MemoryRegion.of(at, s.byteSize(), Device.cuda(1))));
                at += 8192;
            }
            var report = loader.load(LoadRequest.of(dest).withIgnoreExtraTensors(true));
            assertThat(report.backend()).isEqualTo("nccl");
            assertThat(report.engine()).isEqualTo("nccl-send-recv");
            // the seed sends on its own thread: wait (bounded, without spinning on a busy machine's cores) for it
            long until = System.nanoTime() + 30_000_000_000L;
            while (seedNccl.calls.isEmpty() && System.nanoTime() < until) {
                Thread.sleep(5);
            }
            assertThat(seedNccl.calls).as("the seed's send within 30 s").isNotEmpty();
            FakeNccl.Call sent = seedNccl.calls.get(0);
            FakeNccl.Call received = clientNccl.calls.get(0);
            assertThat(sent.rank()).isZero();
            assertThat(received.rank()).isEqualTo(1);
            assertThat(received.id()).isEqualTo(sent.id());
            assertThat(sent.device()).isEqualTo(Device.cuda(0));
            assertThat(sent.primitive()).isEqualTo(received.primitive()).isEqualTo(NcclRuntime.Primitive.SEND_RECV);
            assertThat(received.device()).isEqualTo(Device.cuda(1));
            // seed order = manifest order, restricted to the request; the client receives the same names in it
            assertThat(sent.ops().stream().map(NcclOp::tensor)).containsExactly("embed", "layer.1.w", "empty");
            assertThat(received.ops().stream().map(NcclOp::tensor)).containsExactly("embed", "layer.1.w", "empty");
            for (NcclOp op : received.ops()) {
                TensorDestination d = dest.stream().filter(x -> x.spec().name().equals(op.tensor())).findFirst().orElseThrow();
                assertThat(op.address()).as(op.tensor()).isEqualTo(d.region().address());
                assertThat(op.bytes()).isEqualTo(d.spec().byteSize());
            }
        }
    }

    @Test
    void ncclLoadsTheSeedRanksSlicesRankToRankAndRefusesOtherTpSizesNamingTransferEngine() {
        Config c = seedConfig("weight-loader { rank.tp-size = 2, tp-layout = llama }");
        TensorSpec embed = TensorSpec.of("model.embed_tokens.weight", DType.BF16, 64, 8);
        TensorSlice half = new TensorSlice(0, 0, 32);
        List<TensorDestination> held = List.of(new TensorDestination(embed, MemoryRegion.of(0x10000, 512, Device.cuda(0)),
                half));
        try (SeedService svc = Seeds.start(new BackendContext(WeightLoaderSettings.from(c), c),
                BackendRegistry.of(List.of(new NcclProvider(new FakeNccl()))), Map.of(new RankKey(0, 0), held))) {
            FakeNccl clientNccl = new FakeNccl();
            try (WeightLoader loader = client(clientNccl, svc.port(), "weight-loader.rank.tp-size = 2")) {
                var report = loader.load(LoadRequest.of(List.of(new TensorDestination(embed,
                        MemoryRegion.of(0x900000, 512, Device.cuda(1)), half))));
                assertThat(report.tensors().get(0).shape()).containsExactly(32L, 8L);
                assertThat(clientNccl.calls.get(0).ops().get(0).bytes()).isEqualTo(512);
            }
            try (WeightLoader loader = client(new FakeNccl(), svc.port(), "")) {
                assertThatThrownBy(() -> loader.load(LoadRequest.of(List.of(new TensorDestination(embed,
                        MemoryRegion.of(0x900000, 1024, Device.cuda(1)))))))
                        .hasMessageContaining("model.embed_tokens.weight").hasMessageContaining("tp size 2")
                        .hasMessageContaining("transfer_engine to reshard");
            }
            try (WeightLoader loader = client(new FakeNccl(), svc.port(), "weight-loader.rank { tp-size = 2, tp = 1 }")) {
                assertThatThrownBy(loader::available).hasMessageContaining("holds no rank tp1")
                        .hasMessageContaining("transfer_engine");
            }
        }
    }

    @Test
    void aBusySeedIsReportedAsBusy() throws Exception {
        FakeNccl seedNccl = new FakeNccl();
        seedNccl.hold = new CountDownLatch(1);
        try (SeedService svc = seed(seedNccl, "");
             WeightLoader first = client(new FakeNccl(), svc.port(), "");
             WeightLoader second = client(new FakeNccl(), svc.port(), "")) {
            List<TensorDestination> d = List.of(new TensorDestination(SPECS.get(1),
                    MemoryRegion.of(0x900000, 64, Device.cuda(1))));
            first.load(LoadRequest.of(d).withIgnoreExtraTensors(true)); // the seed now holds its sender busy
            assertThatThrownBy(() -> second.load(LoadRequest.of(d).withIgnoreExtraTensors(true)))
                    .hasMessageContaining("busy");
            seedNccl.hold.countDown();
            // the seed frees its sender once the held transfer has returned; until then it answers busy (409), the
            // state this waits on (bounded), not a fixed time a slow machine can outlast
            long until = System.nanoTime() + 30_000_000_000L;
            while (true) {
                try {
                    second.load(LoadRequest.of(d).withIgnoreExtraTensors(true)); // served one after another
                    break;
                } catch (RuntimeException e) {
                    if (!String.valueOf(e.getMessage()).contains("busy") || System.nanoTime() > until) {
                        throw new AssertionError("the seed did not serve the second client within 30 s of releasing"
                                + " the first", e);
                    }
                    Thread.sleep(50);
                }
            }
            assertThat(seedNccl.calls).hasSize(2);
        }
    }

    @Test
    void closingThePublisherWaitsForTheSendInFlightSoTheSeedMayFreeOrReleaseItsMemoryNext() throws Exception {
        FakeNccl nccl = new FakeNccl();
        nccl.hold = new CountDownLatch(1); // a client that never finishes receiving
        nccl.lingerNanos = 500_000_000L; // and an abort that takes its time
        NcclSeedPublisher p = new NcclSeedPublisher(new RankKey(0, 0), fakeGpuTensors(0x10000), nccl,
                java.util.Optional.empty(), "g", java.time.Duration.ofSeconds(30), java.time.Duration.ofSeconds(30));
        io.weightloader.seed.SeedEndpoint.Reply r = p.endpoints().get(NcclSeedPublisher.PATH)
                .handle(Map.of(), "{\"tensors\": [\"embed\"]}".getBytes(java.nio.charset.StandardCharsets.UTF_8));
        assertThat(r.status()).isEqualTo(200);
        long until = System.nanoTime() + 10_000_000_000L;
        while (nccl.calls.isEmpty() && System.nanoTime() < until) {
            Thread.sleep(5);
        }
        assertThat(nccl.calls).as("the send started").hasSize(1);
        p.close();
        assertThat(nccl.ended.get()).as("the send ended before close returned").isEqualTo(1);
    }

    @Test
    void theSendEndpointChecksTokenAndNames() throws Exception {
        try (SeedService svc = seed(new FakeNccl(), "")) {
            HttpClient http = HttpClient.newHttpClient();
            String url = "http://127.0.0.1:" + svc.port() + "/v1/nccl/send?tp=0";
            HttpResponse<String> noToken = http.send(HttpRequest.newBuilder(URI.create(url))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"tensors\":[\"embed\"]}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertThat(noToken.statusCode()).isEqualTo(401);
            HttpResponse<String> unknown = http.send(HttpRequest.newBuilder(URI.create(url))
                    .header("Authorization", "Bearer tok")
                    .POST(HttpRequest.BodyPublishers.ofString("{\"tensors\":[\"nope\"]}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertThat(unknown.statusCode()).isEqualTo(400);
            assertThat(unknown.body()).contains("nope");
            HttpResponse<String> garbage = http.send(HttpRequest.newBuilder(URI.create(url))
                    .header("Authorization", "Bearer tok")
                    .POST(HttpRequest.BodyPublishers.ofString("[1,2")).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(garbage.statusCode()).isEqualTo(400);
        }
    }

    @Test
    void groupPortsPlaceNcclsBootstrapAndMustCoverTheRank() {
        FakeNccl nccl = new FakeNccl();
        try (SeedService svc = seed(nccl, "weight-loader.remote-instance.send-weights-group-ports = [29500]");
             WeightLoader c = client(new FakeNccl(), svc.port(), "")) {
            c.load(LoadRequest.of(List.of(new TensorDestination(SPECS.get(1),
                    MemoryRegion.of(0x900000, 64, Device.cuda(1))))).withIgnoreExtraTensors(true));
            assertThat(nccl.bootstraps).containsExactly(java.util.Optional.of("127.0.0.1:29500"));
        }
        Config c = seedConfig("weight-loader.remote-instance.send-weights-group-ports = [29500]\nweight-loader.rank.tp = 1");
        assertThatThrownBy(() -> Seeds.start(new BackendContext(WeightLoaderSettings.from(c), c),
                BackendRegistry.of(List.of(new NcclProvider(nccl))), Map.of(new RankKey(1, 0), fakeGpuTensors(0x10000))))
                .hasMessageContaining("weight-loader.remote-instance.send-weights-group-ports");
    }

    @Test
    void ncclNeedsGpuMemoryOnBothSides() {
        Config c = seedConfig("");
        List<TensorDestination> host = List.of(new TensorDestination(SPECS.get(1), MemoryRegion.of(0x1000, 64, Device.CPU)));
        assertThatThrownBy(() -> Seeds.start(new BackendContext(WeightLoaderSettings.from(c), c),
                BackendRegistry.of(List.of(new NcclProvider(new FakeNccl()))), Map.of(new RankKey(0, 0), host)))
                .isInstanceOf(WeightLoaderConfigException.class).hasMessageContaining("GPU memory");
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance, device = cpu
                  remote-instance { seed-instance-ip = h, seed-instance-service-port = 1, backend = nccl } }""")))
                .hasMessageContaining("weight-loader.device").hasMessageContaining("nccl");
    }

    @Test
    void ncclSettingsAreValidated() {
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance, device = "cuda:0", remote-instance.backend = nccl }""")))
                .hasMessageContaining("weight-loader.remote-instance.seed-instance-ip");
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance, device = "cuda:0"
                  remote-instance { seed-instance-ip = h, seed-instance-service-port = 1, backend = nccl
                    send-weights-group-ports = [0] } }""")))
                .hasMessageContaining("weight-loader.remote-instance.send-weights-group-ports[0]");
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance, device = "cuda:0", backends.nccl.init-timeout = 0s
                  remote-instance { seed-instance-ip = h, seed-instance-service-port = 1, backend = nccl } }"""),
                BackendRegistry.of(List.of(new NcclProvider(new FakeNccl()))), ConfigFactory.defaultReference()))
                .hasMessageContaining("weight-loader.backends.nccl.init-timeout");
    }

    @Test
    void withoutCudaTheErrorNamesTheMissingLibraries() {
        if (Cuda.available()) {
            System.err.println("SKIPPED withoutCudaTheErrorNamesTheMissingLibraries: this machine has CUDA");
            org.junit.jupiter.api.Assumptions.abort("this machine has CUDA");
        }
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance, device = "cuda:0"
                  remote-instance { seed-instance-ip = h, seed-instance-service-port = 1, backend = nccl } }""")))
                .hasMessageContaining("libcuda.so.1").hasMessageContaining("libcudart.so.13")
                .isNotInstanceOf(UnsatisfiedLinkError.class);
    }
}
