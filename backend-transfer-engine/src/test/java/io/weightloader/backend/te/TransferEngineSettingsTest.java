package io.weightloader.backend.te;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.Test;

/** Every bad transfer_engine setting is refused up front, naming its config path. */
class TransferEngineSettingsTest {

    private static TransferEngineSettings settings(String extra) {
        Config c = ConfigFactory.parseString(extra).withFallback(ConfigFactory.defaultReference()).resolve();
        return TransferEngineSettings.from(new BackendContext(WeightLoaderSettings.from(c), c));
    }

    @Test
    void defaultsKeepTwoFullBatchesInFlight() {
        TransferEngineSettings s = settings("");
        assertThat(s.batchSize()).isEqualTo(256);
        assertThat(s.batchesInFlight()).isEqualTo(2);
    }

    @Test
    void autoSlicesAreLargestOverNvlink() {
        assertThat(settings("").sliceSizeFor("tcp")).isEqualTo(64L << 20);
        assertThat(settings("").sliceSizeFor("nvlink_intra")).isEqualTo(1L << 30);
        assertThat(settings("""
                weight-loader.backends.transfer_engine { engine = mooncake, slice-size = 256 MiB }""")
                .sliceSizeFor("nvlink_intra")).isEqualTo(256L << 20);
        assertThat(settings("").protocol()).isEmpty();
        assertThat(settings("").seedProtocol()).isEqualTo("tcp");
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "batches-in-flight = 0      | batches-in-flight | 1..16",
        "batches-in-flight = 17     | batches-in-flight | 1..16",
        "batch-size = 0             | batch-size        | 1..1024",
        "slice-size = 1             | slice-size        | 4 KiB",
        "slice-size = big           | slice-size        | or auto",
        "bandwidth-limit = fast     | bandwidth-limit   | size",
        "engine = rdma              | engine            | builtin or mooncake",
        "sources = 0                | sources           | 1..64 or auto",
        "sources = 65               | sources           | 1..64 or auto",
        "sources = many             | sources           | or auto; got 'many'",
        "segment-size = 64 KiB      | segment-size      | between 1 MiB and 1 GiB",
        "stall-timeout = 10ms       | stall-timeout     | between PT0.1S and PT10M",
        "stall-timeout = soon       | stall-timeout     | duration",
    })
    void badValuesNameTheirPath(String setting, String key, String expected) {
        assertThatThrownBy(() -> settings("weight-loader.backends.transfer_engine." + setting))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.backends.transfer_engine." + key)
                .hasMessageContaining(expected);
    }

    @Test
    void oneSourceByDefaultSeveralOrAutoOnRequestAndNeverWithChain() {
        MultiSourceSettings one = settings("").multiSource();
        assertThat(one.several()).isFalse();
        assertThat(one.segmentSize()).isEqualTo(16L << 20);
        assertThat(one.stallTimeout()).hasSeconds(5);
        MultiSourceSettings four = settings("""
                weight-loader.backends.transfer_engine { sources = 4, segment-size = 4 MiB, stall-timeout = 500ms }""")
                .multiSource();
        assertThat(four.several()).isTrue();
        assertThat(four.target()).isEqualTo(4);
        assertThat(four.segmentSize()).isEqualTo(4L << 20);
        assertThat(four.stallTimeout()).hasMillis(500);
        MultiSourceSettings auto = settings("weight-loader.backends.transfer_engine.sources = auto").multiSource();
        assertThat(auto.several()).isTrue();
        assertThat(auto.target()).isEqualTo(MultiSourceSettings.AUTO_MAX);
        assertThatThrownBy(() -> settings("""
                weight-loader.backends.transfer_engine { sources = 2, source-strategy = chain }"""))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.backends.transfer_engine.sources")
                .hasMessageContaining("weight-loader.backends.transfer_engine.source-strategy = chain");
        assertThat(settings("weight-loader.backends.transfer_engine { sources = 3, source-strategy = tree }")
                .multiSource().target()).isEqualTo(3);
    }

    @Test
    void theDirectorysSettingsAreTheBackendsOwnAndTheirOldPathsSayWhereTheyMoved() {
        TransferEngineSettings s = settings("""
                weight-loader.backends.transfer_engine { source-strategy = chain, client-id = "10.0.0.7:30000"
                  verify-relays = false }""");
        assertThat(s.sourceStrategy()).isEqualTo("chain");
        assertThat(s.clientId()).contains("10.0.0.7:30000");
        assertThat(s.verifyRelays()).isFalse();
        assertThat(settings("").sourceStrategy()).isEqualTo("star");
        assertThatThrownBy(() -> settings("weight-loader.backends.transfer_engine.source-strategy = ring"))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.backends.transfer_engine.source-strategy");
        assertThatThrownBy(() -> settings("weight-loader.backends.transfer_engine.client-id = \"a b\""))
                .hasMessageContaining("weight-loader.backends.transfer_engine.client-id");
        for (String moved : new String[] {"source-strategy = tree", "client-id = x", "verify-relays = false"}) {
            assertThatThrownBy(() -> settings("weight-loader.remote-instance." + moved))
                    .isInstanceOf(WeightLoaderConfigException.class)
                    .hasMessageContaining("moved to weight-loader.backends.transfer_engine."
                            + moved.substring(0, moved.indexOf(' ')));
        }
    }
}
