package io.weightloader.backend.te;

import io.weightloader.testing.SeedProcess;
import io.weightloader.testing.TestWeights;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import java.util.List;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The whole flow over Mooncake's real Transfer Engine (tcp on loopback): a seed JVM registers its weights with
 * Mooncake, this JVM reads them. Needs WEIGHTLOADER_MOONCAKE_LIB; skipped, with the reason printed, without it.
 */
class MooncakeTwoProcessTest {
    static final String LIB = System.getenv("WEIGHTLOADER_MOONCAKE_LIB");
    static final String SEED_MOONCAKE = "weight-loader.remote-instance.start-seed-via-transfer-engine = true\n"
            + "weight-loader.backends.transfer_engine.engine = mooncake";

    @BeforeEach
    void needsMooncake() {
        boolean present = LIB != null && !LIB.isBlank() && new java.io.File(LIB).isFile();
        if (!present) {
            System.err.println("SKIPPED MooncakeTwoProcessTest (needs Mooncake's libtransfer_engine.so): "
                    + "set WEIGHTLOADER_MOONCAKE_LIB=/path/libtransfer_engine.so");
        }
        assumeTrue(present, "WEIGHTLOADER_MOONCAKE_LIB is not set to Mooncake's libtransfer_engine.so");
    }

    @Test
    void aClientReadsTheSeedsBytesThroughMooncake() throws Exception {
        List<TensorSpec> specs = TestWeights.specs(6, 8 << 20);
        try (SeedProcess seed = new SeedProcess(6, 8 << 20, 11, "tok", "cpu", SEED_MOONCAKE);
             WeightLoader loader = WeightLoader.open(TwoProcessTransferTest.client(seed.port, "tok",
                     "weight-loader.backends.transfer_engine.engine = mooncake"));
             HostMemory arena = TestWeights.arena(specs)) {
            LoadReport report = TwoProcessTransferTest.loadAll(loader, specs, arena);
            assertThat(report.engine()).isEqualTo("mooncake-tcp");
            for (TensorReport t : report.tensors()) {
                assertThat(t.sha256()).as(t.name()).isEqualTo(TestWeights.sha256(
                        specs.stream().filter(s -> s.name().equals(t.name())).findFirst().orElseThrow(), 11));
            }
        }
    }

    @Test
    void aClientOnTheOtherEngineIsToldSoInsteadOfSwitching() throws Exception {
        try (SeedProcess seed = new SeedProcess(1, 1 << 20, 11, "tok", "cpu", SEED_MOONCAKE);
             WeightLoader loader = WeightLoader.open(TwoProcessTransferTest.client(seed.port, "tok"))) {
            org.assertj.core.api.Assertions.assertThatThrownBy(loader::available)
                    .hasMessageContaining("mooncake-tcp").hasMessageContaining("builtin-tcp")
                    .hasMessageContaining("weight-loader.backends.transfer_engine.engine");
        }
    }

    @Test
    void aClientConfiguredForATransportTheSeedDoesNotServeIsRefusedNamingBoth() throws Exception {
        try (SeedProcess seed = new SeedProcess(1, 1 << 20, 11, "tok", "cpu", SEED_MOONCAKE);
             WeightLoader loader = WeightLoader.open(TwoProcessTransferTest.client(seed.port, "tok",
                     "weight-loader.backends.transfer_engine { engine = mooncake, protocol = rdma }"))) {
            org.assertj.core.api.Assertions.assertThatThrownBy(loader::available)
                    .hasMessageContaining("serves transport tcp, but this client is configured for rdma")
                    .hasMessageContaining("weight-loader.backends.transfer_engine.protocol");
        }
    }
}
