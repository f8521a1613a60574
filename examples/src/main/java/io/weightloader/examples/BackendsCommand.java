package io.weightloader.examples;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.NativePart;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.InstalledBackend;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader backends}: every backend provider on the class path, what it can do, and whether the native
 * libraries it can use are present on this machine (with where they were found, or the linker's reason).
 */
@Command(name = "backends", mixinStandardHelpOptions = true, sortOptions = false,
        description = "List the installed backends, their capabilities and their native libraries on this machine.")
final class BackendsCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--config", paramLabel = "FILE", description = "HOCON file of weight-loader settings (where a"
            + " backend's native library is looked for).")
    Path configFile;

    @Option(names = "--mooncake-library", paramLabel = "PATH",
            description = "libtransfer_engine.so (weight-loader.backends.transfer_engine.mooncake.library).")
    String mooncakeLibrary;

    @Option(names = "--json", description = "Print JSON.")
    boolean json;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        Map<String, Object> flags = new LinkedHashMap<>();
        SharedOptions.put(flags, "weight-loader.backends.transfer_engine.mooncake.library", mooncakeLibrary);
        Config config = SharedOptions.layered(spec, ConfigFactory.parseMap(flags, "command-line flags"), configFile);
        BackendRegistry registry = BackendRegistry.discover();
        List<InstalledBackend> entries = registry.describe(new BackendContext(WeightLoaderSettings.from(config),
                config));
        if (json) {
            Map<String, Object> doc = new LinkedHashMap<>();
            doc.put("backends", entries);
            doc.put("failures", registry.failures());
            out.println(WeightLoaderCli.JSON.writeValueAsString(doc));
            out.flush();
            return 0;
        }
        Table table = new Table("BACKEND", "READS FROM", "DISTURBS SEED", "DEVICES", "SEED CAN SERVE IT", "JAR");
        for (InstalledBackend e : entries) {
            table.row(e.name(), e.readsFromSeed() ? "a seed" : "disk", e.disturbsSeed() ? "yes" : "no",
                    String.join(", ", e.devices()), e.servesAsSeed() ? "yes" : "no", e.jar());
        }
        table.print(out);
        out.println();
        Table natives = new Table("BACKEND", "LIBRARY", "HERE", "NEEDED FOR", "WHERE OR WHY");
        for (InstalledBackend e : entries) {
            for (NativePart n : e.nativeParts()) {
                natives.row(e.name(), n.name(), n.present() ? "found" : "MISSING", n.neededFor(), n.detail());
            }
        }
        natives.print(out);
        for (String f : registry.failures()) {
            out.println("failed to load: " + f);
        }
        out.flush();
        return 0;
    }
}
