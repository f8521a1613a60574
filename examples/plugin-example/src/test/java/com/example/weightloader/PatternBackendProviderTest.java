package com.example.weightloader;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigParseOptions;
import io.weightloader.api.DType;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The plugin as a host meets it: on the class path, selected by config alone, its settings read from its own
 * reference.conf and refused at start-up with the path of the bad one.
 */
class PatternBackendProviderTest {
    private static final String PATH = "weight-loader.backends.pattern";

    /** A host's settings, as from its application.conf. */
    private static Config host(String hocon) {
        return ConfigFactory.parseString(hocon, ConfigParseOptions.defaults().setOriginDescription("host.conf"));
    }

    private static WeightLoader open(String pattern) {
        return WeightLoader.open(host("weight-loader { backend = pattern, backends.pattern { " + pattern + " } }"));
    }

    @Test
    void selectedByConfigItFillsTheListedTensorsWithItsPattern() {
        try (WeightLoader loader = open("seed = 250, tensors = [ { name = w, dtype = BF16, shape = [2, 3] } ]");
             HostMemory memory = HostMemory.allocate(12)) {
            TensorSpec w = TensorSpec.of("w", DType.BF16, 2, 3);
            assertThat(loader.backend().name()).isEqualTo("pattern");
            assertThat(loader.available()).containsExactly(w);
            LoadReport report = loader.load(LoadRequest.of(List.of(new TensorDestination(w, memory)))
                    .withChecksum(true));
            byte[] got = new byte[12];
            memory.byteBuffer(0, 12).get(got);
            byte[] want = new byte[12];
            for (int i = 0; i < want.length; i++) {
                want[i] = (byte) (250 + i); // wraps past 255
            }
            assertThat(got).isEqualTo(want);
            assertThat(report.tensors()).singleElement().satisfies(t -> assertThat(t.sha256()).hasSize(64));
        }
    }

    @Test
    void aSeedOutsideAByteIsRefusedNamingItsPathAndWhereItWasSet() {
        assertThatThrownBy(() -> open("seed = 300, tensors = [ { name = w, dtype = F32, shape = [1] } ]"))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining(PATH + ".seed")
                .hasMessageContaining("0..255")
                .hasMessageContaining("host.conf");
        assertThatThrownBy(() -> open("seed = many, tensors = [ { name = w, dtype = F32, shape = [1] } ]"))
                .hasMessageContaining(PATH + ".seed").hasMessageContaining("'many'");
    }

    @Test
    void aBadTensorIsRefusedNamingTheEntryAndTheKey() {
        String ok = "{ name = a, dtype = F32, shape = [2] }";
        assertThatThrownBy(() -> open("tensors = [ " + ok + ", { name = b, dtype = F33, shape = [2] } ]"))
                .hasMessageContaining(PATH + ".tensors[1].dtype").hasMessageContaining("F33");
        assertThatThrownBy(() -> open("tensors = [ { name = b, dtype = F32 } ]"))
                .hasMessageContaining(PATH + ".tensors[0].shape").hasMessageContaining("missing");
        assertThatThrownBy(() -> open("tensors = [ { name = b, dtype = F32, shape = [2, -1] } ]"))
                .hasMessageContaining(PATH + ".tensors[0].shape");
        assertThatThrownBy(() -> open("tensors = [ { name = b, dtype = F32, shape = [2.5] } ]"))
                .hasMessageContaining(PATH + ".tensors[0].shape");
        assertThatThrownBy(() -> open("tensors = [ { name = b, dtype = F32, shap = [2] } ]"))
                .hasMessageContaining(PATH + ".tensors[0].shap").hasMessageContaining("unknown setting");
        assertThatThrownBy(() -> open("tensors = [ " + ok + ", " + ok + " ]"))
                .hasMessageContaining(PATH + ".tensors[1].name").hasMessageContaining("tensors[0]");
        assertThatThrownBy(() -> open("tensors = [ 3 ]"))
                .hasMessageContaining(PATH + ".tensors[0]");
        assertThatThrownBy(() -> open("tensors = w"))
                .hasMessageContaining(PATH + ".tensors").hasMessageContaining("list");
    }

    @Test
    void selectedWithNoTensorsItIsRefusedAtStartUp() {
        assertThatThrownBy(() -> WeightLoader.open(host("weight-loader.backend = pattern")))
                .hasMessageContaining(PATH + ".tensors").hasMessageContaining("nothing to load");
    }

    @Test
    void installedButNotSelectedItsDefaultsPassAndABadValueIsStillRefused() {
        BackendRegistry registry = BackendRegistry.discover();
        assertThat(registry.names()).contains("pattern");
        Config defaults = ConfigFactory.load(host("weight-loader.backend = other"));
        registry.validateSettings(new BackendContext(WeightLoaderSettings.from(defaults), defaults), "other");

        Config bad = ConfigFactory.load(host("weight-loader { backend = other, backends.pattern.seed = -1 }"));
        assertThatThrownBy(() -> registry.validateSettings(new BackendContext(WeightLoaderSettings.from(bad), bad),
                "other"))
                .hasMessageContaining(PATH + ".seed").hasMessageContaining("installed");
    }
}
