package io.weightloader.backend.te;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.HostMemory;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.seed.SeedService;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.BackendRegistry;
import java.util.List;
import java.util.Map;

/**
 * A seed in its own JVM for the two-process tests: args {@code tensors bytesEach seed token [engine]}; prints
 * {@code READY <control-port>} and serves until its standard input closes or it is killed.
 */
public final class TestSeedMain {
    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        long bytesEach = Long.parseLong(args[1]);
        long seed = Long.parseLong(args[2]);
        String token = args.length > 3 ? args[3] : "";
        String engine = args.length > 4 ? args[4] : "builtin";
        Config config = ConfigFactory.parseMap(Map.of(
                "weight-loader.remote-instance.start-seed-via-transfer-engine", true,
                "weight-loader.remote-instance.token", token,
                "weight-loader.seed.bind-address", "127.0.0.1",
                "weight-loader.backends.transfer_engine.engine", engine)).withFallback(ConfigFactory.defaultReference()).resolve();
        WeightLoaderSettings settings = WeightLoaderSettings.from(config);
        List<TensorSpec> specs = TestWeights.specs(n, bytesEach);
        try (HostMemory arena = TestWeights.arena(specs);
             SeedService svc = SeedService.start(new BackendContext(settings, config), BackendRegistry.discover(),
                     Map.of(new RankKey(0, 0), TestWeights.held(arena, specs, seed)))) {
            System.out.println("READY " + svc.port());
            System.out.flush();
            while (System.in.read() >= 0) {
                // serve until stdin closes
            }
        }
    }
}
