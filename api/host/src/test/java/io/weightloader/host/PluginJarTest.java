package io.weightloader.host;

import io.weightloader.api.DType;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.HostMemory;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import java.io.IOException;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.jar.JarEntry;
import java.util.jar.JarOutputStream;
import java.util.stream.Stream;
import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A third-party backend built as its own jar, outside the project's modules (the example plugin in
 * examples/plugin-example), is discovered and selected by configuration alone.
 */
class PluginJarTest {
    static final Path PLUGIN = Path.of("..", "..", "examples", "plugin-example", "src", "main");

    @TempDir
    static Path work;
    static Path jar;

    @BeforeAll
    static void buildPluginJar() throws Exception {
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        assertThat(javac).as("tests need a JDK (javac)").isNotNull();
        Path classes = Files.createDirectories(work.resolve("classes"));
        List<String> args = new ArrayList<>(List.of("--release", "17", "-proc:none", "-d", classes.toString(),
                "-cp", String.join(java.io.File.pathSeparator, locations(WeightLoaderBackendProvider.class,
                        Config.class, org.slf4j.Logger.class))));
        try (Stream<Path> s = Files.walk(PLUGIN.resolve("java"))) {
            s.filter(p -> p.toString().endsWith(".java")).forEach(p -> args.add(p.toString()));
        }
        int rc = javac.run(null, null, null, args.toArray(String[]::new));
        assertThat(rc).as("compiling the example plugin").isZero();
        jar = work.resolve("pattern-backend.jar");
        try (JarOutputStream out = new JarOutputStream(Files.newOutputStream(jar))) {
            add(out, classes);
            add(out, PLUGIN.resolve("resources"));
        }
    }

    private static String[] locations(Class<?>... classes) throws Exception {
        String[] out = new String[classes.length];
        for (int i = 0; i < classes.length; i++) {
            out[i] = Path.of(classes[i].getProtectionDomain().getCodeSource().getLocation().toURI()).toString();
        }
        return out;
    }

    private static void add(JarOutputStream out, Path root) throws IOException {
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : (Iterable<Path>) s.filter(Files::isRegularFile)::iterator) {
                out.putNextEntry(new JarEntry(root.relativize(p).toString().replace('\\', '/')));
                Files.copy(p, out);
                out.closeEntry();
            }
        }
    }

    private static URLClassLoader pluginLoader() throws Exception {
        return new URLClassLoader(new URL[] {jar.toUri().toURL()}, PluginJarTest.class.getClassLoader());
    }

    @Test
    void theJarIsDiscoveredAndSelectedByConfigAlone() throws Exception {
        try (URLClassLoader cl = pluginLoader()) {
            assertThat(BackendRegistry.discover(cl).names()).contains("pattern");
            Config config = ConfigFactory.parseString("""
                    weight-loader {
                      backend = pattern
                      backends.pattern { seed = 5, tensors = [ { name = w, dtype = BF16, shape = [2, 3] } ] }
                    }""");
            try (WeightLoader loader = WeightLoader.open(config, cl);
                 HostMemory mem = HostMemory.allocate(12)) {
                assertThat(loader.backend().name()).isEqualTo("pattern");
                TensorSpec w = TensorSpec.of("w", DType.BF16, 2, 3);
                assertThat(loader.available()).containsExactly(w);
                LoadReport report = loader.load(LoadRequest.of(List.of(new TensorDestination(w, mem)))
                        .withChecksum(true));
                byte[] expected = new byte[12];
                for (int i = 0; i < 12; i++) {
                    expected[i] = (byte) (5 + i);
                }
                byte[] got = new byte[12];
                mem.byteBuffer(0, 12).get(got);
                assertThat(got).isEqualTo(expected);
                assertThat(report.backend()).isEqualTo("pattern");
                assertThat(report.tensors().get(0).sha256()).isEqualTo(Checksums.sha256(expected));
            }
        }
    }

    @Test
    void thePluginsOwnSettingsAreValidatedWithTheirPath() throws Exception {
        try (URLClassLoader cl = pluginLoader()) {
            assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString(
                    "weight-loader { backend = pattern, backends.pattern.seed = 300 }"), cl))
                    .hasMessageContaining("weight-loader.backends.pattern.seed");
            assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString(
                    "weight-loader { backend = pattern, backends.pattern.sede = 3 }"), cl))
                    .hasMessageContaining("weight-loader.backends.pattern.sede");
        }
    }

    @Test
    void withoutTheJarTheBackendIsUnknown() {
        assertThatThrownBy(() -> WeightLoader.open(ConfigFactory.parseString("weight-loader.backend = pattern"),
                PluginJarTest.class.getClassLoader()))
                .hasMessageContaining("No backend 'pattern'");
    }
}
