package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.LoadReport;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.registry.etcd.EtcdServer;
import java.nio.file.Path;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A registry that is misconfigured or cannot be reached (no etcd needed): a config error naming the setting, an error
 * naming the registry, or, where the root seed is configured too, a fallback to it that says so loudly.
 */
class RegistrySettingsTest {
    @TempDir
    Path dir;

    /** An etcd URL where nothing listens. */
    private static String nowhere() throws Exception {
        return "etcd://127.0.0.1:" + EtcdServer.freePort();
    }

    @Test
    void aSeedOrClientWithARegistryButNoModelIdIsAConfigErrorNamingIt() throws Exception {
        String registry = "weight-loader.directory = \"" + nowhere() + "\"\n";
        Path ckpt = new Fleet(dir).checkpoint("ckpt", 5);
        assertThatThrownBy(() -> SeedHost.start(Fleet.config(registry + "weight-loader.model-path = \"" + ckpt + "\"")))
                .isInstanceOf(WeightLoaderConfigException.class).hasMessageContaining("weight-loader.model-id")
                .hasMessageContaining("weight-loader.directory");
        assertThatThrownBy(() -> SeedHost.start(Fleet.config(registry + "weight-loader.load-format = remote_instance")))
                .isInstanceOf(WeightLoaderConfigException.class).hasMessageContaining("weight-loader.model-id");
        assertThatThrownBy(() -> WeightLoader.open(Fleet.config(registry + "weight-loader.load-format = remote_instance")))
                .isInstanceOf(WeightLoaderConfigException.class).hasMessageContaining("weight-loader.model-id");
        // a root listed in a registry publishes the checksums whose digest it registers
        assertThatThrownBy(() -> SeedHost.start(Fleet.config(registry + "weight-loader { model-id = m,"
                + " seed.publish-checksums = false, model-path = \"" + ckpt + "\" }")))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.seed.publish-checksums");
        // without a registry, a client still needs the seed's address, and is told of the registry
        assertThatThrownBy(() -> WeightLoader.open(Fleet.config("weight-loader.load-format = remote_instance")))
                .hasMessageContaining("weight-loader.remote-instance.seed-instance-ip")
                .hasMessageContaining("weight-loader.directory");
    }

    @Test
    void anUnreachableRegistryIsAnErrorNamingItUnlessTheRootIsGivenWhichIsTheLoudFallback() throws Exception {
        Fleet fleet = new Fleet(dir);
        Path ckpt = fleet.checkpoint("ckpt", 5);
        String directory = nowhere();
        String registry = Fleet.registry(directory, "m") + "weight-loader.registry.etcd.connect-timeout = 2s\n";
        // a client with the registry alone
        Fleet.Logged<Throwable> alone = Fleet.loggedFailure(() -> fleet.load(registry
                + "weight-loader.load-format = remote_instance", ckpt));
        assertThat(alone.value()).hasMessageContaining("cannot reach registry " + directory)
                .hasMessageContaining("weight-loader.directory").hasMessageContaining("nothing was loaded");
        // a root cannot register
        assertThatThrownBy(() -> SeedHost.start(Fleet.config(registry + "weight-loader.model-path = \"" + ckpt + "\"")))
                .hasMessageContaining("cannot reach registry " + directory);
        try (SeedHost root = SeedHost.start(Fleet.config("weight-loader.model-path = \"" + ckpt + "\""))) {
            String withRoot = registry + """
                    weight-loader { load-format = remote_instance
                      remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = %d } }
                    """.formatted(root.service().port());
            Fleet.Logged<LoadReport> client = Fleet.logged(() -> fleet.load(withRoot, ckpt));
            assertThat(client.value().source()).contains("seed 127.0.0.1:" + root.service().port())
                    .contains("registry " + directory + " unreachable: fallback to the root");
            assertThat(client.err()).contains("REGISTRY UNREACHABLE").contains(directory).contains("FALLING BACK");
            // a relay with its root: from the root's directory, listed in no registry, saying so
            Fleet.Logged<SeedHost> relay = Fleet.logged(() -> SeedHost.start(Fleet.config(withRoot)));
            try (SeedHost r = relay.value()) {
                assertThat(r.registry()).isEmpty();
                assertThat(r.relayAddress()).isPresent();
                r.held().values().forEach(h -> fleet.assertBytesOf(ckpt, h));
                assertThat(relay.err()).contains("REGISTRY UNREACHABLE").contains("NOT listed in the registry");
                r.stop(Duration.ofSeconds(10));
            }
        }
    }
}
