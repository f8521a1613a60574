package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.NativePart;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import java.io.IOException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class BackendRegistryTest {
    @TempDir
    Path dir;

    private ClassLoader withProviders(Class<?>... classes) throws IOException {
        Path services = dir.resolve("META-INF/services");
        Files.createDirectories(services);
        StringBuilder sb = new StringBuilder();
        for (Class<?> c : classes) {
            sb.append(c.getName()).append('\n');
        }
        Files.writeString(services.resolve(WeightLoaderBackendProvider.class.getName()), sb);
        return new URLClassLoader(new URL[] {dir.toUri().toURL()}, getClass().getClassLoader());
    }

    @Test
    void describeListsWhatEachBackendCanDoAndReportsAFailingNativeCheckInsteadOfThrowing() {
        WeightLoaderBackendProvider unlinkable = new TestProviders.Beta() {
            @Override
            public List<NativePart> nativeParts(BackendContext context) {
                throw new UnsatisfiedLinkError("libwidget.so: cannot open shared object file");
            }
        };
        BackendRegistry registry = BackendRegistry.of(List.of(new TestProviders.Alpha(), unlinkable));
        Config c = ConfigFactory.defaultReference();
        List<InstalledBackend> found = registry.describe(new BackendContext(WeightLoaderSettings.from(c), c));

        assertThat(found).extracting(InstalledBackend::name).containsExactly("alpha", "beta");
        InstalledBackend alpha = found.get(0);
        assertThat(alpha.devices()).containsExactly("cpu");
        assertThat(alpha.readsFromSeed()).isFalse();
        assertThat(alpha.servesAsSeed()).isFalse();
        assertThat(alpha.nativeParts()).isEmpty();
        assertThat(found.get(1).nativeParts()).singleElement().satisfies(n -> {
            assertThat(n.present()).isFalse();
            assertThat(n.detail()).contains("libwidget.so");
        });
    }

    @Test
    void unknownBackendListsTheAvailableOnes() throws IOException {
        BackendRegistry r = BackendRegistry.discover(withProviders(TestProviders.Alpha.class, TestProviders.Beta.class));
        assertThat(r.names()).containsExactly("alpha", "beta");
        assertThatThrownBy(() -> r.provider("gamma"))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.backend")
                .hasMessageContaining("No backend 'gamma'. Available backends: [alpha, beta]");
    }

    @Test
    void twoProvidersWithOneNameAreRefusedNamingBoth() throws IOException {
        ClassLoader cl = withProviders(TestProviders.Alpha.class, TestProviders.AlphaAgain.class);
        assertThatThrownBy(() -> BackendRegistry.discover(cl))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining("named 'alpha'")
                .hasMessageContaining(TestProviders.Alpha.class.getName())
                .hasMessageContaining(TestProviders.AlphaAgain.class.getName());
    }

    @Test
    void aProviderThatFailsToInstantiateIsReportedAndDoesNotHideOthers() throws IOException {
        BackendRegistry r = BackendRegistry.discover(withProviders(TestProviders.Broken.class, TestProviders.Beta.class));
        assertThat(r.names()).containsExactly("beta");
        assertThat(r.failures()).singleElement().asString().contains(TestProviders.Broken.class.getName());
        assertThatThrownBy(() -> r.provider("alpha"))
                .hasMessageContaining("failed to load")
                .hasMessageContaining(TestProviders.Broken.class.getName());
    }

    @Test
    void aProviderThatThrowsInCreateIsNamed() throws IOException {
        ClassLoader cl = withProviders(TestProviders.Alpha.class);
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("weight-loader.backend = alpha"), cl))
                .hasMessageContaining("backend 'alpha'")
                .hasMessageContaining(TestProviders.Alpha.class.getName())
                .hasMessageContaining("no widgets");
    }

    @Test
    void theSettingsOfEveryInstalledBackendAreCheckedWhicheverIsSelected() throws IOException {
        ClassLoader cl = withProviders(TestProviders.Alpha.class, TestProviders.Picky.class);
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("weight-loader.backend = alpha"), cl))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageStartingWith("weight-loader.backends.picky.level: must be in 0..9; got 70000")
                .hasMessageContaining("backend 'picky' is installed");
    }

    @Test
    void theMemorySaverIsRefusedWithABackendThatDoesNotDeclareTheCapabilityWhateverItsName() throws IOException {
        ClassLoader cl = withProviders(TestProviders.Registering.class, TestProviders.Beta.class);
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString(
                "weight-loader { backend = registering, enable-memory-saver = true }"), cl))
                .isInstanceOf(io.weightloader.api.config.WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.enable-memory-saver")
                .hasMessageContaining("backend 'registering'")
                .hasMessageContaining("BackendCapabilities.memorySaver");
        // the builder's default: a backend that registers nothing works with it
        assertThat(BackendCapabilities.builder().build().memorySaver()).isTrue();
        assertThat(new BackendCapabilities(false, false, java.util.Set.of()).memorySaver()).isTrue();
    }

    @Test
    void aBackendThatCannotFillTheDeviceIsRefusedByConfigPath() throws IOException {
        ClassLoader cl = withProviders(TestProviders.Beta.class);
        assertThatThrownBy(() -> WeightLoader.open(
                ConfigFactory.parseString("weight-loader { backend = beta, device = \"cuda:0\" }"), cl))
                .hasMessageContaining("weight-loader.device")
                .hasMessageContaining("cuda:0");
    }

    @Test
    void aPluginForANewerSpiOrAStaleOneIsNamedNotARawError() throws IOException {
        BackendRegistry r = BackendRegistry.discover(withProviders(TestProviders.FromTheFuture.class,
                TestProviders.Stale.class, TestProviders.Beta.class));
        assertThat(r.names()).containsExactly("beta");
        assertThat(r.failures()).anySatisfy(f -> assertThat(f).contains(TestProviders.FromTheFuture.class.getName())
                .contains("SPI version " + (WeightLoaderBackendProvider.SPI_VERSION + 1))
                .contains("speaks version " + WeightLoaderBackendProvider.SPI_VERSION));
        assertThat(r.failures()).anySatisfy(f -> assertThat(f).contains(TestProviders.Stale.class.getName())
                .contains("incompatible weightloader-api").contains("AbstractMethodError"));
        assertThatThrownBy(() -> r.provider("future")).hasMessageContaining("No backend 'future'")
                .hasMessageContaining("failed to load").hasMessageContaining("SPI version");
    }
}
