package io.weightloader.backend.te;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.TpLayout;
import io.weightloader.api.config.RankKey;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.HostMemory;
import io.weightloader.seed.SeedService;
import io.weightloader.testing.Slicing;
import io.weightloader.testing.TestWeights;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Seeds of one tp size serve clients of another over the built-in engine: every client rank's slices equal slicing
 * the whole tensors, checked byte for byte and against the seed's block checksums.
 */
class ReshardingTest {
    private static final List<TensorSpec> SPECS = Slicing.llama(2, 64, 32, 96, 128, DType.F32);
    private final Map<String, byte[]> whole = new HashMap<>();
    private final List<HostMemory> memory = new ArrayList<>();

    ReshardingTest() {
        for (TensorSpec s : SPECS) {
            whole.put(s.name(), Slicing.bytes(s, 11));
        }
    }

    @AfterEach
    void free() {
        memory.forEach(HostMemory::close);
    }

    /** A seed holding every rank of {@code tp} under {@code layout}, each rank's memory filled with its slices. */
    private SeedService seed(int tp, TpLayout layout, String layoutSetting) {
        return seed(tp, layout, layoutSetting, "");
    }

    private SeedService seed(int tp, TpLayout layout, String layoutSetting, String extra) {
        Map<RankKey, List<TensorDestination>> held = new LinkedHashMap<>();
        for (int r = 0; r < tp; r++) {
            held.put(new RankKey(r, 0), hold(layout.isNone() ? Map.of() : layout.plan(SPECS, tp, r), true));
        }
        return Seeds.start(SeedServiceTest.seedContext("weight-loader.rank.tp-size = " + tp
                + "\nweight-loader.tp-layout = " + layoutSetting + "\n" + extra), BackendRegistry.discover(), held);
    }

    /** Memory for the slices, filled with what slicing the whole tensors gives when {@code fill}. */
    private List<TensorDestination> hold(Map<String, TensorSlice> slices, boolean fill) {
        List<TensorSpec> heldSpecs = TpLayout.heldSpecs(SPECS, slices);
        HostMemory arena = TestWeights.arena(heldSpecs);
        memory.add(arena);
        List<TensorDestination> out = new ArrayList<>();
        var regions = TestWeights.slices(arena, heldSpecs);
        for (int i = 0; i < SPECS.size(); i++) {
            TensorSpec s = SPECS.get(i);
            TensorDestination d = new TensorDestination(s, regions.get(i), slices.get(s.name()));
            if (fill) {
                d.region().byteBuffer(0, (int) d.byteSize()).put(Slicing.slice(whole.get(s.name()), s, d.slice()));
            }
            out.add(d);
        }
        return out;
    }

    /** Loads rank {@code r} of {@code tp} under llama from the seed and checks every byte and checksum. */
    private LoadReport loadAndCheck(SeedService svc, int tp, int r, String layout, boolean checksum) {
        return loadAndCheck(svc, tp, r, layout, checksum, "auto");
    }

    private LoadReport loadAndCheck(SeedService svc, int tp, int r, String layout, boolean checksum, String staging) {
        return loadAndCheck(svc, tp, r, layout, checksum, staging, "");
    }

    private LoadReport loadAndCheck(SeedService svc, int tp, int r, String layout, boolean checksum, String staging,
                                    String engine) {
        String extra = "weight-loader { rank { tp-size = " + tp + ", tp = " + r + " }, tp-layout = " + layout
                + ", checksum = " + (checksum ? "sha256" : "none") + " }\n"
                + "weight-loader.backends.transfer_engine.reshard-staging = " + staging + "\n" + engine;
        try (WeightLoader loader = WeightLoader.open(SeedServiceTest.client(svc.port(), extra)
                .withFallback(ConfigFactory.defaultReference()).resolve())) {
            TpLayout l = loader.settings().tpLayout();
            List<TensorDestination> dest = hold(l.isNone() ? Map.of() : l.plan(loader.available(), tp, r), false);
            LoadReport report = loader.load(LoadRequest.of(dest));
            for (int i = 0; i < dest.size(); i++) {
                TensorDestination d = dest.get(i);
                byte[] want = Slicing.slice(whole.get(d.spec().name()), d.spec(), d.slice());
                byte[] got = new byte[want.length];
                d.region().byteBuffer(0, got.length).get(got);
                assertThat(got).as("%s, rank %d of %d", d.spec().name(), r, tp).isEqualTo(want);
                TensorReport t = report.tensors().get(i);
                assertThat(t.shape()).isEqualTo(d.held().shape());
                if (checksum) {
                    assertThat(t.sha256()).isEqualTo(Checksums.sha256(want));
                }
            }
            return report;
        }
    }

    @ParameterizedTest(name = "seed tp {0} -> client tp {1}")
    @CsvSource({"2,1", "2,2", "2,4", "4,2", "1,2"})
    void aClientOfAnyTpSizeLoadsExactlyItsSlicesFromTheSeedRanks(int seedTp, int clientTp) {
        try (SeedService svc = seed(seedTp, TpLayout.LLAMA, "llama")) {
            for (int r = 0; r < clientTp; r++) {
                LoadReport report = loadAndCheck(svc, clientTp, r, "llama", true);
                assertThat(report.source()).contains(seedTp == clientTp ? "rank tp" + r : "resharded into rank tp" + r);
            }
        }
    }

    /** The path Mooncake takes (rows as spans through a staging buffer, a 2-D copy), forced with the built-in engine. */
    @ParameterizedTest(name = "seed tp {0} -> client tp {1}, staged")
    @CsvSource({"2,1", "2,4", "4,2"})
    void rowsStagedAsSpansArriveAsSlicingGivesThem(int seedTp, int clientTp) {
        try (SeedService svc = seed(seedTp, TpLayout.LLAMA, "llama")) {
            for (int r = 0; r < clientTp; r++) {
                loadAndCheck(svc, clientTp, r, "llama", true, "always");
            }
        }
    }

    /** Over Mooncake (tcp, two engines in this JVM): rows staged as spans, as on GPUs. */
    @ParameterizedTest(name = "Mooncake tcp: seed tp {0} -> client tp {1}")
    @CsvSource({"2,1", "2,4", "4,2"})
    void overMooncakeAClientOfAnyTpSizeLoadsExactlyItsSlices(int seedTp, int clientTp) {
        String lib = System.getenv("WEIGHTLOADER_MOONCAKE_LIB");
        if (lib == null || lib.isBlank()) {
            System.err.println("SKIPPED overMooncakeAClientOfAnyTpSizeLoadsExactlyItsSlices: needs Mooncake: set"
                    + " WEIGHTLOADER_MOONCAKE_LIB=/path/libtransfer_engine.so");
            org.junit.jupiter.api.Assumptions.abort("needs WEIGHTLOADER_MOONCAKE_LIB");
        }
        String engine = "weight-loader.backends.transfer_engine { engine = mooncake, protocol = tcp, mooncake.library = \""
                + lib + "\" }";
        try (SeedService svc = seed(seedTp, TpLayout.LLAMA, "llama", engine)) {
            for (int r = 0; r < clientTp; r++) {
                LoadReport report = loadAndCheck(svc, clientTp, r, "llama", true, "auto", engine);
                assertThat(report.engine()).isEqualTo("mooncake-tcp");
            }
        }
    }

    @Test
    void aWholeTensorClientOfASlicedSeedReadsEverySliceAndAChecksummedOneIsChecked() {
        try (SeedService svc = seed(2, TpLayout.LLAMA, "llama")) {
            loadAndCheck(svc, 1, 0, "none", true);
        }
    }

    @Test
    void aSlicedClientOfAWholeTensorSeedLoadsButCannotCheckRowsAgainstWholeTensorBlocks() {
        try (SeedService svc = seed(1, TpLayout.NONE, "none")) {
            loadAndCheck(svc, 2, 1, "llama", false);
            // o_proj is split on dim 1 here; a seed of whole tensors has blocks of rows only
            assertThatThrownBy(() -> loadAndCheck(svc, 2, 1, "llama", true))
                    .hasMessageContaining("o_proj.weight").hasMessageContaining("cannot be checked")
                    .hasMessageContaining("load without checksums");
        }
    }

    @Test
    void aSeedByteThatChangedAfterPublishingFailsTheLoadNamingTheTensorAndBlock() {
        try (SeedService svc = seed(2, TpLayout.LLAMA, "llama")) {
            // corrupt one byte of seed rank 1's slice of layer 1's down_proj (its block checksums were published)
            var held = svc.held(new RankKey(1, 0));
            TensorDestination down = held.stream().filter(d -> d.spec().name().equals("model.layers.1.mlp.down_proj.weight"))
                    .findFirst().orElseThrow();
            var b = down.region().byteBuffer(100, 1);
            b.put(0, (byte) (b.get(0) ^ 0x5a));
            assertThatThrownBy(() -> loadAndCheck(svc, 4, 3, "llama", true))
                    .hasMessageContaining("model.layers.1.mlp.down_proj.weight").hasMessageContaining("block 8 of 16")
                    .hasMessageContaining("rank tp1").hasMessageContaining("nothing was loaded");
        }
    }
}
