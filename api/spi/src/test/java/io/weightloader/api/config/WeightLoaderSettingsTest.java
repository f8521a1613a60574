package io.weightloader.api.config;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import java.time.Duration;
import org.junit.jupiter.api.Test;

class WeightLoaderSettingsTest {

    static WeightLoaderSettings settings(String hocon) {
        Config c = ConfigFactory.parseString(hocon).withFallback(ConfigFactory.defaultReference()).resolve();
        return WeightLoaderSettings.from(c);
    }

    @Test
    void defaultsSelectTheLocalBackend() {
        WeightLoaderSettings s = settings("weight-loader.model-path = /m");
        assertThat(s.backend()).isEqualTo("local");
        assertThat(s.loadFormat()).isEqualTo(LoadFormat.AUTO);
        assertThat(s.device()).isEqualTo(Device.CPU);
        assertThat(s.fallback()).isEqualTo(WeightLoaderSettings.Fallback.NONE);
        assertThat(s.remote().requestTimeout()).isEqualTo(Duration.ofSeconds(30));
        assertThat(s.rank()).isEqualTo(new RankKey(0, 0));
    }

    @Test
    void remoteInstanceSelectsTheRemoteBackend() {
        WeightLoaderSettings s = settings("""
                weight-loader { load-format = remote_instance
                  remote-instance { seed-instance-ip = "10.0.0.2", seed-instance-service-port = 30000 }
                  rank { tp = 3, pp = 1 } }""");
        assertThat(s.backend()).isEqualTo("transfer_engine");
        assertThat(s.remote().seedIp()).contains("10.0.0.2");
        assertThat(s.remote().seedPort()).isEqualTo(30000);
        assertThat(s.rank()).isEqualTo(new RankKey(3, 1));
    }

    @Test
    void remoteWithoutSeedAddressIsAnError() {
        assertThatThrownBy(() -> settings("weight-loader.load-format = remote_instance"))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.remote-instance.seed-instance-ip");
        assertThatThrownBy(() -> settings("""
                weight-loader { load-format = remote_instance, remote-instance.seed-instance-ip = h }"""))
                .hasMessageContaining("weight-loader.remote-instance.seed-instance-service-port");
    }

    @Test
    void memorySaverWithNcclIsAllowed() {
        WeightLoaderSettings s = settings("""
                weight-loader { load-format = remote_instance, enable-memory-saver = true
                  remote-instance { seed-instance-ip = h, seed-instance-service-port = 1, backend = nccl } }""");
        assertThat(s.enableMemorySaver()).isTrue();
        assertThat(s.backend()).isEqualTo("nccl");
    }

    @Test
    void unknownKeysAreRejectedWithTheirPath() {
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, remote-instance.seed-ip = x }"))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.remote-instance.seed-ip")
                .hasMessageContaining("unknown setting");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, backends.nosuch.x = 1 }"))
                .hasMessageContaining("weight-loader.backends.nosuch.x");
    }

    @Test
    void everyValueIsValidatedWithItsPath() {
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, load-format = gguf }"))
                .hasMessageContaining("weight-loader.load-format");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, device = gpu0 }"))
                .hasMessageContaining("weight-loader.device");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, checksum = md5 }"))
                .hasMessageContaining("weight-loader.checksum");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, remote-instance.request-timeout = 0s }"))
                .hasMessageContaining("weight-loader.remote-instance.request-timeout");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, remote-instance.connect-timeout = soon }"))
                .hasMessageContaining("weight-loader.remote-instance.connect-timeout");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, remote-instance.send-weights-group-ports = [1, 70000] }"))
                .hasMessageContaining("weight-loader.remote-instance.send-weights-group-ports[1]");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, rank.tp = -1 }"))
                .hasMessageContaining("weight-loader.rank.tp");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, remote-instance.backend = \"g rpc\" }"))
                .hasMessageContaining("weight-loader.remote-instance.backend");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, rank { tp = 2, tp-size = 2 } }"))
                .hasMessageContaining("weight-loader.rank.tp").hasMessageContaining("below rank.tp-size (2)");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, rank.tp-size = 0 }"))
                .hasMessageContaining("weight-loader.rank.tp-size");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, seed.serve = [\"nccl; rm\"] }"))
                .hasMessageContaining("weight-loader.seed.serve");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, seed.serve = [nccl, nccl] }"))
                .hasMessageContaining("weight-loader.seed.serve").hasMessageContaining("twice");
        assertThatThrownBy(() -> settings("""
                weight-loader { model-path = /m, seed.serve = [nccl], remote-instance.start-seed-via-transfer-engine = true }"""))
                .hasMessageContaining("weight-loader.seed.serve").hasMessageContaining("start-seed-via-transfer-engine");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, enable-memory-saver = maybe }"))
                .hasMessageContaining("weight-loader.enable-memory-saver");
    }

    @Test
    void numbersAreWholeAndInTheirRangeAndErrorsSayWhereTheValueWasSet() {
        Config fromFile = ConfigFactory.parseString("weight-loader { model-path = /m, rank.tp = 1.5 }",
                com.typesafe.config.ConfigParseOptions.defaults().setOriginDescription("host.conf"));
        assertThatThrownBy(() -> WeightLoaderSettings.from(fromFile.withFallback(ConfigFactory.defaultReference())
                .resolve()))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.rank.tp").hasMessageContaining("whole number")
                .hasMessageContaining("'1.5'").hasMessageContaining("set in host.conf: 1");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, remote-instance.retries = 1000000 }"))
                .hasMessageContaining("weight-loader.remote-instance.retries").hasMessageContaining("0..100");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, seed.service-port = 70000 }"))
                .hasMessageContaining("weight-loader.seed.service-port").hasMessageContaining("0..65535");
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, remote-instance.seed-instance-ip = \"not a host!\" }"))
                .hasMessageContaining("weight-loader.remote-instance.seed-instance-ip");
        assertThatThrownBy(() -> settings("weightloader.checksum = sha256"))
                .hasMessageContaining("weightloader.checksum").hasMessageContaining("did you mean weight-loader.checksum");
    }

    @Test
    void listsAsNumberedKeysLongSizeUnitsAndTheRenamedServeNcclAreUnderstood() {
        // what -Dweight-loader.seed.serve.0=nccl -Dweight-loader.seed.serve.1=transfer_engine make
        assertThat(settings("weight-loader { model-path = /m, seed.serve { 0 = nccl, 1 = transfer_engine } }")
                .seed().serve()).containsExactly("nccl", "transfer_engine");
        assertThat(SettingsReader.parseSize("16 megabytes")).isEqualTo(16_000_000L);
        assertThat(SettingsReader.parseSize("1 gibibyte")).isEqualTo(1L << 30);
        assertThatThrownBy(() -> settings("weight-loader { model-path = /m, seed.serve-nccl = true }"))
                .hasMessageContaining("weight-loader.seed.serve-nccl").hasMessageContaining("replaced by")
                .hasMessageContaining("weight-loader.seed.serve");
    }

    @Test
    void groupPortsTakeSglangsJsonListAndCommaSeparatedForms() {
        assertThat(settings("weight-loader { model-path = /m, remote-instance.send-weights-group-ports = [29601, 29602] }")
                .remote().groupPorts()).containsExactly(29601, 29602);
        assertThat(settings("weight-loader { model-path = /m, remote-instance.send-weights-group-ports = \"[29601,29602]\" }")
                .remote().groupPorts()).containsExactly(29601, 29602);
        assertThat(settings("weight-loader { model-path = /m, remote-instance.send-weights-group-ports = \"29601, 29602\" }")
                .remote().groupPorts()).containsExactly(29601, 29602);
        assertThatThrownBy(() -> settings(
                "weight-loader { model-path = /m, remote-instance.send-weights-group-ports = \"[29601,x]\" }"))
                .hasMessageContaining("weight-loader.remote-instance.send-weights-group-ports[1]")
                .hasMessageContaining("'x'");
    }

    @Test
    void aSeedServesTransferEngineByDefaultAndTakesAListOrACommaString() {
        assertThat(settings("weight-loader.model-path = /m").seed().serve()).containsExactly("transfer_engine");
        assertThat(settings("weight-loader { model-path = /m, seed.serve = \"nccl, transfer_engine\" }").seed().serve())
                .containsExactly("nccl", "transfer_engine");
    }

    @Test
    void localFallbackNeedsAModelPath() {
        assertThatThrownBy(() -> settings("""
                weight-loader { load-format = remote_instance, fallback = local
                  remote-instance { seed-instance-ip = h, seed-instance-service-port = 1 } }"""))
                .hasMessageContaining("weight-loader.model-path");
    }

    @Test
    void environmentStyleSubstitutionsOverrideDefaults() {
        // reference.conf uses ${?ENV} overrides; the same mechanism is exercised here with a system-style value
        Config c = ConfigFactory.parseString("X_PORT = \"4242\"\nweight-loader { model-path = /m, seed.service-port = ${X_PORT} }")
                .withFallback(ConfigFactory.defaultReference()).resolve();
        assertThat(WeightLoaderSettings.from(c).seed().servicePort()).isEqualTo(4242);
    }
}
