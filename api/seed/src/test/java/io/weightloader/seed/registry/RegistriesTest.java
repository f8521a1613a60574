package io.weightloader.seed.registry;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import java.util.Optional;
import org.junit.jupiter.api.Test;

class RegistriesTest {
    private static Config config(String text) {
        return ConfigFactory.parseString(text).withFallback(ConfigFactory.defaultReference()).resolve();
    }

    @Test
    void defaultsToTheInProcessDirectory() {
        Registries.Settings s = Registries.settings(config(""));
        assertThat(s.inProcess()).isTrue();
        assertThat(s.modelId()).isEmpty();
        try (SourceRegistry r = Registries.open(config(""))) {
            assertThat(r.describe()).isEqualTo("in-process");
        }
        assertThat(Registries.settings(config("weight-loader.model-id = \"org/m-1\"")).modelId())
                .isEqualTo(Optional.of("org/m-1"));
    }

    @Test
    void refusesBadSettingsNamingThePath() {
        assertThatThrownBy(() -> Registries.settings(config("weight-loader.model-id = \"a/../b\"")))
                .hasMessageContaining("weight-loader.model-id");
        assertThatThrownBy(() -> Registries.settings(config("weight-loader.directory = \"localhost:2379\"")))
                .hasMessageContaining("weight-loader.directory").hasMessageContaining("etcd://");
        // this module alone has no etcd provider: the message says which module brings it
        assertThatThrownBy(() -> Registries.settings(config("weight-loader.directory = \"zk://h:1\"")))
                .hasMessageContaining("weight-loader.directory").hasMessageContaining("no registry for 'zk://'");
    }
}
