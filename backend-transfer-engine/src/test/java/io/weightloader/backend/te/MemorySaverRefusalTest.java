package io.weightloader.backend.te;

import static io.weightloader.backend.te.SeedServiceTest.seedContext;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.host.WeightLoader;
import io.weightloader.seed.SeedService;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * transfer_engine declares the memory-saver capability for its built-in engine on host memory (a seed unregisters
 * its memory on release and registers it again on resume); with Mooncake the setting is still refused at start-up,
 * naming the setting, the backend, the engine and the capability, for a client, an instance that will serve via
 * transfer_engine, and a seed, before Mooncake's library is looked for.
 */
class MemorySaverRefusalTest {
    private static final String MOONCAKE = "weight-loader.backends.transfer_engine.engine = mooncake\n";

    @Test
    void theMemorySaverIsRefusedWithMooncakeNamingTheSettingTheBackendTheEngineAndTheCapability() {
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString(MOONCAKE + """
                weight-loader { load-format = remote_instance, enable-memory-saver = true
                  remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = 1,
                    backend = transfer_engine } }""")))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.enable-memory-saver")
                .hasMessageContaining("backend 'transfer_engine'")
                .hasMessageContaining("weight-loader.backends.transfer_engine.engine")
                .hasMessageContaining("BackendCapabilities.memorySaver");
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString(MOONCAKE + """
                weight-loader { model-path = /nonexistent, enable-memory-saver = true
                  remote-instance { start-seed-via-transfer-engine = true } }""")))
                .hasMessageContaining("weight-loader.enable-memory-saver")
                .hasMessageContaining("mooncake");
        assertThatThrownBy(() -> Seeds.bind(seedContext(MOONCAKE + "weight-loader.enable-memory-saver = true"),
                BackendRegistry.discover(), List.of(Device.CPU)))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.enable-memory-saver")
                .hasMessageContaining("backend 'transfer_engine'")
                .hasMessageContaining("mooncake");
    }

    @Test
    void theRefusalSaysWhyForEachMooncakeTransportAndThatTheFallbackIsNotImplemented() {
        // a seed: its configured transport only (tcp when none is set)
        assertThatThrownBy(() -> Seeds.bind(seedContext(MOONCAKE + """
                weight-loader.enable-memory-saver = true
                weight-loader.backends.transfer_engine.protocol = nvlink_intra"""),
                BackendRegistry.discover(), List.of(Device.cuda(0))))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("cudaIpcGetMemHandle")
                .hasMessageContaining("IntraNodeNvlinkTransport::registerLocalMemory")
                .hasMessageContaining("cuMemCreate")
                .hasMessageContaining("Mooncake 3b5a5941")
                .hasMessageContaining("fresh allocations at new addresses").hasMessageContaining("not implemented")
                .hasMessageContaining("weight-loader.seed.serve = [nccl]")
                .hasMessageNotContaining("RdmaContext");
        assertThatThrownBy(() -> Seeds.bind(seedContext(MOONCAKE + """
                weight-loader.enable-memory-saver = true
                weight-loader.backends.transfer_engine.protocol = rdma"""), BackendRegistry.discover(),
                List.of(Device.CPU)))
                .hasMessageContaining("RdmaContext::exportDmabuf").hasMessageContaining("ibv_reg_dmabuf_mr")
                .hasMessageContaining("GPUDirect-RDMA-capable").hasMessageNotContaining("cudaIpcGetMemHandle");
        assertThatThrownBy(() -> Seeds.bind(seedContext(MOONCAKE + "weight-loader.enable-memory-saver = true"),
                BackendRegistry.discover(), List.of(Device.CPU)))
                .hasMessageContaining("TcpTransport::registerLocalMemory").hasMessageContaining("not been run");
        // a client that takes its seed's transport: every reason
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString(MOONCAKE + """
                weight-loader { load-format = remote_instance, enable-memory-saver = true
                  remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = 1,
                    backend = transfer_engine } }""")))
                .hasMessageContaining("IntraNodeNvlinkTransport::registerLocalMemory")
                .hasMessageContaining("RdmaContext::exportDmabuf")
                .hasMessageContaining("TcpTransport::registerLocalMemory");
    }

    @Test
    void theBuiltinEngineOnHostMemoryTakesTheMemorySaver() {
        assertThat(new TransferEngineProvider().capabilities().memorySaver()).isTrue();
        try (SeedService seed = Seeds.bind(seedContext("weight-loader.enable-memory-saver = true"),
                BackendRegistry.discover(), List.of(Device.CPU))) {
            assertThat(seed.port()).isPositive();
        }
    }
}
