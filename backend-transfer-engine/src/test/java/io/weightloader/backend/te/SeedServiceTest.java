package io.weightloader.backend.te;

import io.weightloader.host.Seeds;
import io.weightloader.testing.TestWeights;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.backend.te.engine.RegionMerger;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.seed.SeedService;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.Test;

/** The seed service in this JVM: start-up checks, pipeline-stage keys, generation changes. */
class SeedServiceTest {

    static BackendContext seedContext(String extra) {
        Config c = ConfigFactory.parseString("""
                weight-loader.remote-instance.start-seed-via-transfer-engine = true
                weight-loader.seed.bind-address = "127.0.0.1"
                """ + extra).withFallback(ConfigFactory.defaultReference()).resolve();
        return new BackendContext(WeightLoaderSettings.from(c), c);
    }

    @Test
    void aSeedBeyondLoopbackNeedsAToken() {
        BackendContext ctx = seedContext("weight-loader.seed.bind-address = \"0.0.0.0\"");
        assertThatThrownBy(() -> Seeds.start(ctx, BackendRegistry.discover(), Map.of()))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.remote-instance.token");
    }

    @Test
    void aSeedMustServeSomeBackend() {
        Config c = ConfigFactory.parseString("weight-loader.seed { bind-address = \"127.0.0.1\", serve = [] }")
                .withFallback(ConfigFactory.defaultReference()).resolve();
        BackendContext ctx = new BackendContext(WeightLoaderSettings.from(c), c);
        assertThatThrownBy(() -> Seeds.start(ctx, BackendRegistry.discover(), Map.of()))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.seed.serve");
    }

    @Test
    void aSeedServesOnlyBackendsThatCanPublishAndAreInstalled() {
        BackendContext alpha = seedContext("weight-loader.seed.serve = [transfer_engine, alpha]");
        BackendRegistry withAlpha = BackendRegistry.of(List.of(new TransferEngineProvider(),
                new io.weightloader.host.TestProviders.Alpha()));
        assertThatThrownBy(() -> Seeds.bind(alpha, withAlpha, List.of(Device.CPU)))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.seed.serve")
                .hasMessageContaining("'alpha'").hasMessageContaining("cannot publish a seed's weights")
                .hasMessageContaining("[transfer_engine]");
        BackendContext nccl = seedContext("weight-loader.seed.serve = \"transfer_engine,nccl\"");
        assertThatThrownBy(() -> Seeds.bind(nccl, BackendRegistry.discover(), List.of(Device.CPU)))
                .hasMessageContaining("weight-loader.seed.serve")
                .hasMessageContaining("No backend 'nccl'")
                .hasMessageContaining("io.weightloader:weightloader-backend-nccl");
    }

    @Test
    void aGpuSeedWithTheBuiltinEngineIsRefusedBeforeLoadingNamingBothWaysOut() {
        BackendContext ctx = seedContext("");
        assertThatThrownBy(() -> Seeds.bind(ctx, BackendRegistry.discover(), List.of(Device.cuda(0))))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.backends.transfer_engine.engine")
                .hasMessageContaining("host memory only").hasMessageContaining("cuda:0")
                .hasMessageContaining("engine = mooncake").hasMessageContaining("serve = [nccl]");
    }

    @Test
    void aClientSetToAnotherTransportOrAMissingLibraryIsRefusedAtOpen() {
        List<TensorSpec> a = List.of(TensorSpec.of("w", DType.F32, 256));
        try (HostMemory ma = TestWeights.arena(a);
             SeedService svc = Seeds.start(seedContext(""), BackendRegistry.discover(),
                     Map.of(new RankKey(0, 0), TestWeights.held(ma, a, 1)))) {
            assertThatThrownBy(() -> WeightLoader.open(client(svc.port(),
                    "weight-loader.backends.transfer_engine.protocol = rdma")))
                    .isInstanceOf(WeightLoaderConfigException.class)
                    .hasMessageContaining("weight-loader.backends.transfer_engine.protocol")
                    .hasMessageContaining("the builtin engine speaks tcp only");
            assertThatThrownBy(() -> WeightLoader.open(client(svc.port(), """
                    weight-loader.backends.transfer_engine { engine = mooncake,
                      mooncake.library = /nonexistent/libtransfer_engine.so }""")))
                    .hasMessageContaining("/nonexistent/libtransfer_engine.so").hasMessageContaining("no such file");
            try (WeightLoader loader = WeightLoader.open(client(svc.port(),
                    "weight-loader.backends.transfer_engine.protocol = tcp"));
                 HostMemory dst = TestWeights.arena(a)) {
                assertThat(load(loader, a, dst).engine()).isEqualTo("builtin-tcp");
            }
        }
    }

    @Test
    void aMultiRankSeedGivesEachRankItsOwnEngineOnTheNextPort() throws Exception {
        int base;
        try (java.net.ServerSocket probe = new java.net.ServerSocket(0)) {
            base = probe.getLocalPort() < 65000 ? probe.getLocalPort() : 40000;
        }
        List<TensorSpec> a = List.of(TensorSpec.of("w", DType.F32, 256));
        try (HostMemory m0 = TestWeights.arena(a); HostMemory m1 = TestWeights.arena(a);
             SeedService svc = Seeds.start(seedContext("weight-loader.rank.tp-size = 2\n"
                     + "weight-loader.backends.transfer_engine.builtin.port = " + base), BackendRegistry.discover(),
                     Map.of(new RankKey(0, 0), TestWeights.held(m0, a, 1), new RankKey(1, 0), TestWeights.held(m1, a, 2)))) {
            assertThat(svc.manifest(new RankKey(0, 0)).orElseThrow().session()).endsWith(":" + base);
            assertThat(svc.manifest(new RankKey(1, 0)).orElseThrow().session()).endsWith(":" + (base + 1));
            for (int tp = 0; tp < 2; tp++) {
                try (WeightLoader loader = WeightLoader.open(client(svc.port(), "weight-loader.rank.tp = " + tp));
                     HostMemory dst = TestWeights.arena(a)) {
                    assertThat(load(loader, a, dst).tensors().get(0).sha256())
                            .isEqualTo(TestWeights.sha256(a.get(0), tp + 1));
                }
            }
        }
    }

    @Test
    void theManifestSaysWhatTheSeedServes() {
        List<TensorSpec> a = List.of(TensorSpec.of("w", DType.F32, 256));
        try (HostMemory ma = TestWeights.arena(a);
             SeedService svc = Seeds.start(seedContext(""), BackendRegistry.discover(),
                     Map.of(new RankKey(0, 0), TestWeights.held(ma, a, 1)))) {
            assertThat(svc.manifest(new RankKey(0, 0)).orElseThrow().serves())
                    .containsExactly(Map.entry("transfer_engine", "builtin-tcp"));
        }
    }

    @Test
    void pipelineStagesWithTheSameTpRankDoNotCollide() {
        List<TensorSpec> a = List.of(TensorSpec.of("stage0.w", DType.F32, 256));
        List<TensorSpec> b = List.of(TensorSpec.of("stage1.w", DType.F32, 512));
        try (HostMemory ma = TestWeights.arena(a); HostMemory mb = TestWeights.arena(b);
             SeedService svc = Seeds.start(seedContext(""), BackendRegistry.discover(), Map.of(
                     new RankKey(0, 0), TestWeights.held(ma, a, 1), new RankKey(0, 1), TestWeights.held(mb, b, 2)))) {
            for (int pp = 0; pp < 2; pp++) {
                List<TensorSpec> want = pp == 0 ? a : b;
                try (WeightLoader loader = WeightLoader.open(client(svc.port(), "weight-loader.rank.pp = " + pp));
                     HostMemory dst = TestWeights.arena(want)) {
                    assertThat(loader.available()).containsExactlyElementsOf(want);
                    LoadReport r = load(loader, want, dst);
                    assertThat(r.tensors().get(0).sha256()).isEqualTo(TestWeights.sha256(want.get(0), pp + 1));
                }
            }
            assertThatThrownBy(() -> {
                try (WeightLoader loader = WeightLoader.open(client(svc.port(), "weight-loader.rank.pp = 5"))) {
                    loader.available();
                }
            }).hasMessageContaining("404").hasMessageContaining("tp0-pp5");
        }
    }

    @Test
    void weightsChangingDuringALoadFailTheLoad() throws Exception {
        List<TensorSpec> specs = TestWeights.specs(2, 8 << 20);
        try (HostMemory m = TestWeights.arena(specs);
             SeedService svc = Seeds.start(seedContext(""), BackendRegistry.discover(),
                     Map.of(new RankKey(0, 0), TestWeights.held(m, specs, 3)));
             WeightLoader loader = WeightLoader.open(client(svc.port(),
                     "weight-loader.backends.transfer_engine.bandwidth-limit = 8 MiB"));
             HostMemory dst = TestWeights.arena(specs)) {
            java.util.concurrent.CountDownLatch moving = new java.util.concurrent.CountDownLatch(1);
            CompletableFuture<LoadReport> f = CompletableFuture.supplyAsync(() -> TwoProcessTransferTest.loadAll(loader,
                    specs, dst, moving));
            // during the load: its first bytes arrived (16 MiB at 8 MiB/s: about 2 s to go)
            assertThat(moving.await(60, java.util.concurrent.TimeUnit.SECONDS)).as("the load moved its first bytes")
                    .isTrue();
            svc.weightsChanged(new RankKey(0, 0));
            assertThatThrownBy(f::join).hasCauseInstanceOf(WeightLoaderException.class)
                    .hasMessageContaining("changed its weights during the load");
        }
    }

    @Test
    void aReloadUsesTheHeldManifestAndRecoversWhenTheSeedChanged() {
        List<TensorSpec> specs = TestWeights.specs(3, 64 << 10);
        try (HostMemory m = TestWeights.arena(specs);
             SeedService svc = Seeds.start(seedContext(""), BackendRegistry.discover(),
                     Map.of(new RankKey(0, 0), TestWeights.held(m, specs, 5)));
             WeightLoader loader = WeightLoader.open(client(svc.port(), ""));
             HostMemory dst = TestWeights.arena(specs)) {
            LoadReport first = load(loader, specs, dst);
            assertThat(first.phases()).containsKeys("manifest", "prepare", "transfer", "verify");
            // the manifest is held: the next load goes straight to the reads and checks the generation after
            LoadReport second = load(loader, specs, dst);
            assertThat(second.phases()).doesNotContainKey("manifest").containsKeys("transfer", "verify");
            assertThat(second.tensors().get(2).sha256()).isEqualTo(TestWeights.sha256(specs.get(2), 5));
            // the seed changes after the manifest was fetched: that load is thrown away and done again
            svc.weightsChanged(new RankKey(0, 0));
            dst.zero();
            LoadReport third = load(loader, specs, dst);
            assertThat(third.phases()).containsKeys("stale-manifest", "manifest", "transfer", "verify");
            for (int i = 0; i < specs.size(); i++) {
                assertThat(third.tensors().get(i).sha256()).isEqualTo(TestWeights.sha256(specs.get(i), 5));
            }
        }
    }

    @Test
    void manyBatchesInFlightStillDeliverEveryByte() {
        List<TensorSpec> specs = TestWeights.specs(24, (64 << 10) + 8); // sizes that do not fill whole slices
        try (HostMemory m = TestWeights.arena(specs);
             SeedService svc = Seeds.start(seedContext(""), BackendRegistry.discover(),
                     Map.of(new RankKey(0, 0), TestWeights.held(m, specs, 6)));
             WeightLoader loader = WeightLoader.open(client(svc.port(), """
                     weight-loader.backends.transfer_engine { slice-size = 16 KiB, batch-size = 3,
                       batches-in-flight = 5 }"""));
             HostMemory dst = TestWeights.arena(specs)) {
            LoadReport r = load(loader, specs, dst);
            for (int i = 0; i < specs.size(); i++) {
                assertThat(r.tensors().get(i).sha256()).as(specs.get(i).name())
                        .isEqualTo(TestWeights.sha256(specs.get(i), 6));
            }
        }
    }

    @Test
    void duringAnUpdateNoLoadStartsAndAfterItLoadsSeeTheNewGeneration() {
        List<TensorSpec> specs = TestWeights.specs(2, 64 << 10);
        RankKey rank = new RankKey(0, 0);
        try (HostMemory m = TestWeights.arena(specs);
             SeedService svc = Seeds.start(seedContext(""), BackendRegistry.discover(),
                     Map.of(rank, TestWeights.held(m, specs, 7)));
             WeightLoader loader = WeightLoader.open(client(svc.port(), "weight-loader.remote-instance.retries = 1"));
             HostMemory dst = TestWeights.arena(specs)) {
            load(loader, specs, dst);
            String before = svc.manifest(rank).orElseThrow().generation();
            svc.weightsChanging(rank);
            // the held manifest's reads succeed, but the final check is refused while the update runs
            assertThatThrownBy(() -> load(loader, specs, dst))
                    .hasMessageContaining("503")
                    .hasMessageContaining("the weights of rank tp0-pp0 are being updated");
            TestWeights.fill(specs.get(1), TestWeights.slices(m, specs).get(1), 8); // the update itself
            svc.weightsChanged(rank);
            assertThat(svc.manifest(rank).orElseThrow().generation()).isNotEqualTo(before);
            LoadReport r = load(loader, specs, dst);
            assertThat(r.tensors().get(0).sha256()).isEqualTo(TestWeights.sha256(specs.get(0), 7));
            assertThat(r.tensors().get(1).sha256()).isEqualTo(TestWeights.sha256(specs.get(1), 8));
        }
    }

    @Test
    void theBandwidthCapBoundsTheAverageRate() {
        List<TensorSpec> specs = TestWeights.specs(4, 8 << 20); // 32 MiB
        try (HostMemory m = TestWeights.arena(specs);
             SeedService svc = Seeds.start(seedContext(""), BackendRegistry.discover(),
                     Map.of(new RankKey(0, 0), TestWeights.held(m, specs, 4)));
             WeightLoader loader = WeightLoader.open(client(svc.port(),
                     "weight-loader.backends.transfer_engine.bandwidth-limit = 64 MiB"));
             HostMemory dst = TestWeights.arena(specs)) {
            LoadReport r = load(loader, specs, dst);
            // a lower bound only: 32 MiB at 64 MiB/s cannot take less than half a second
            assertThat(r.seconds()).isGreaterThanOrEqualTo(0.49);
            assertThat(r.tensors().get(0).sha256()).isEqualTo(TestWeights.sha256(specs.get(0), 4));
        }
    }

    @Test
    void tenThousandAdjacentTensorsRegisterAsOneRegion() {
        List<MemoryRegion> ranges = new ArrayList<>();
        for (int i = 0; i < 10_000; i++) {
            ranges.add(MemoryRegion.of(1_000_000 + i * 128L, 128, io.weightloader.api.Device.CPU));
        }
        ranges.add(MemoryRegion.of(1_000_000 + 64, 64, io.weightloader.api.Device.CPU)); // a view inside another
        ranges.add(MemoryRegion.of(50_000_000, 10, io.weightloader.api.Device.CPU));
        ranges.add(MemoryRegion.of(1_000_000, 10, io.weightloader.api.Device.cuda(0)));
        List<MemoryRegion> merged = RegionMerger.merge(ranges);
        assertThat(merged).containsExactlyInAnyOrder(
                MemoryRegion.of(1_000_000, 10_000 * 128L, io.weightloader.api.Device.CPU),
                MemoryRegion.of(50_000_000, 10, io.weightloader.api.Device.CPU),
                MemoryRegion.of(1_000_000, 10, io.weightloader.api.Device.cuda(0)));
    }

    static Config client(int port, String extra) {
        return ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance, checksum = sha256
                  remote-instance { seed-instance-ip = "127.0.0.1", request-timeout = 5s, transfer-timeout = 30s } }
                weight-loader.remote-instance.seed-instance-service-port = %d
                %s""".formatted(port, extra));
    }

    static LoadReport load(WeightLoader loader, List<TensorSpec> specs, HostMemory arena) {
        List<TensorDestination> d = new ArrayList<>();
        List<MemoryRegion> r = TestWeights.slices(arena, specs);
        for (int i = 0; i < specs.size(); i++) {
            d.add(new TensorDestination(specs.get(i), r.get(i)));
        }
        return loader.load(LoadRequest.of(d));
    }
}
