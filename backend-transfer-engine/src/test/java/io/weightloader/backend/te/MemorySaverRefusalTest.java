package io.weightloader.backend.te;

import static io.weightloader.backend.te.SeedServiceTest.seedContext;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.WeightLoader;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.spi.BackendRegistry;
import io.weightloader.seed.SeedService;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * transfer_engine registers seed memory with its engine, so it does not declare the memory-saver capability: the
 * setting is refused at start-up, for a client, for an instance that will serve via transfer_engine, and for a seed.
 */
class MemorySaverRefusalTest {
    @Test
    void theMemorySaverIsRefusedWithTransferEngineNamingTheSettingTheBackendAndTheCapability() {
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance, enable-memory-saver = true
                  remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = 1,
                    backend = transfer_engine } }""")))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.enable-memory-saver")
                .hasMessageContaining("backend 'transfer_engine'")
                .hasMessageContaining("BackendCapabilities.memorySaver");
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("""
                weight-loader { model-path = /nonexistent, enable-memory-saver = true, backend = transfer_engine
                  remote-instance { start-seed-via-transfer-engine = true } }""")))
                .hasMessageContaining("weight-loader.enable-memory-saver");
        assertThatThrownBy(() -> SeedService.bind(seedContext("weight-loader.enable-memory-saver = true"),
                BackendRegistry.discover(), List.of(Device.CPU)))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.enable-memory-saver")
                .hasMessageContaining("backend 'transfer_engine'");
    }
}
