package io.weightloader.testing;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.cuda.DeviceArena;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.seed.SeedService;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A seed in its own JVM for two-process tests: args {@code tensors bytesEach seed token device [hocon]}; holds
 * {@link TestWeights} (copied to a GPU arena when {@code device} is {@code cuda:N}), prints
 * {@code READY <control-port>} and serves until its standard input closes or it is killed.
 */
public final class TestSeedMain {
    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        long bytesEach = Long.parseLong(args[1]);
        long seed = Long.parseLong(args[2]);
        String token = args[3];
        Device device = Device.parse(args[4]);
        String hocon = args.length > 5 ? args[5] : "";
        Config config = ConfigFactory.parseString(hocon).withFallback(ConfigFactory.parseMap(Map.of(
                "weight-loader.remote-instance.token", token,
                "weight-loader.seed.bind-address", "127.0.0.1"))).withFallback(ConfigFactory.defaultReference())
                .resolve();
        WeightLoaderSettings settings = WeightLoaderSettings.from(config);
        List<TensorSpec> specs = TestWeights.specs(n, bytesEach);
        try (HostMemory arena = TestWeights.arena(specs)) {
            List<TensorDestination> held = TestWeights.held(arena, specs, seed);
            DeviceArena gpu = null;
            if (!device.isHost()) {
                gpu = DeviceArena.allocate(device, arena.length());
                DeviceCopies.copy(gpu, 0, arena, 0, arena.length());
                List<TensorDestination> onGpu = new ArrayList<>();
                for (TensorDestination t : held) {
                    long off = t.region().address() - arena.address();
                    onGpu.add(new TensorDestination(t.spec(), gpu.slice(off, t.spec().byteSize())));
                }
                held = onGpu;
            }
            try (SeedService svc = Seeds.start(new BackendContext(settings, config), BackendRegistry.discover(),
                    Map.of(settings.rank(), held))) {
                System.out.println("READY " + svc.port());
                System.out.flush();
                while (System.in.read() >= 0) {
                    // serve until stdin closes
                }
            } finally {
                if (gpu != null) {
                    gpu.close();
                }
            }
        }
    }
}
