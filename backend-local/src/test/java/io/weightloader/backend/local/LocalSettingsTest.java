package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.ConfigFactory;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.host.WeightLoader;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** The local backend's settings are checked when it is opened, and a bad one is named by its config path. */
class LocalSettingsTest {
    @ParameterizedTest
    @CsvSource({"threads, 300, must be in 0..256", "piece-size, 100, between 4 KiB and 1 GiB",
            "staging-size, 1024, between 4 KiB and 1 GiB", "staging-size, 2 GiB, between 4 KiB and 1 GiB",
            "staging-size, lots, is not a size", "piece-size, lots, is not a size", "threads, 1.5, whole number",
            "io, fast, must be buffered or direct or auto", "io, DIRECT, must be buffered or direct or auto",
            "allow-empty, maybe, must be true or false"})
    void aBadSettingIsNamedByItsPath(String key, String value, String why) {
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseMap(Map.of(
                "weight-loader.model-path", ReferenceFixturesTest.FIXTURES.resolve("all_dtypes.safetensors").toString(),
                "weight-loader.backends.local." + key, value))))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.backends.local." + key)
                .hasMessageContaining(why);
    }

    @Test
    void theDefaultThreadCountFollowsTheCoresAndTheDestination() {
        assertThat(LocalBackendProvider.defaultThreads(2, io.weightloader.api.Device.CPU)).isEqualTo(2);
        assertThat(LocalBackendProvider.defaultThreads(32, io.weightloader.api.Device.CPU)).isEqualTo(32);
        assertThat(LocalBackendProvider.defaultThreads(128, io.weightloader.api.Device.CPU)).isEqualTo(64);
        assertThat(LocalBackendProvider.defaultThreads(32, io.weightloader.api.Device.cuda(0))).isEqualTo(16);
        assertThat(LocalBackendProvider.defaultThreads(4, io.weightloader.api.Device.cuda(0))).isEqualTo(4);
        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of("weight-loader.model-path",
                ReferenceFixturesTest.FIXTURES.resolve("all_dtypes.safetensors").toString())))) {
            assertThat(loader.backend().engine()).isEqualTo("pread x" + LocalBackendProvider.defaultThreads(
                    Runtime.getRuntime().availableProcessors(), io.weightloader.api.Device.CPU));
        }
    }
}
