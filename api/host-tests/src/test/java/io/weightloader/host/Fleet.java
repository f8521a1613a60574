package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.memory.TensorArena;
import io.weightloader.testing.Slicing;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;

/**
 * What the registry tests share: checkpoints whose every byte is known, configs, clients that load through the library
 * (rankSpecs, rankRequest, load) and compare every byte with the checkpoint's, and the WARN lines a call logs.
 */
final class Fleet {
    static final List<TensorSpec> SPECS = Slicing.llama(2, 64, 32, 96, 128, DType.BF16);

    /** Tensor name -> its bytes, per checkpoint written. */
    final Map<Path, Map<String, byte[]>> written = new HashMap<>();
    private final Path dir;

    Fleet(Path dir) {
        this.dir = dir;
    }

    /** A sharded checkpoint of {@link #SPECS} whose bytes derive from {@code seed}. */
    Path checkpoint(String name, long seed) {
        return checkpoint(name, seed, SPECS);
    }

    /** A sharded checkpoint of {@code specs} whose bytes derive from {@code seed}. */
    Path checkpoint(String name, long seed, List<TensorSpec> specs) {
        Map<String, byte[]> whole = new HashMap<>();
        List<SafetensorsWriter.Tensor> tensors = new ArrayList<>();
        for (TensorSpec s : specs) {
            byte[] b = Slicing.bytes(s, seed);
            whole.put(s.name(), b);
            tensors.add(SafetensorsWriter.Tensor.of(s, b));
        }
        Path ckpt = dir.resolve(name);
        SafetensorsWriter.writeSharded(ckpt, SafetensorsWriter.split(tensors, 2), Map.of());
        written.put(ckpt, whole);
        return ckpt;
    }

    static Config config(String hocon) {
        return ConfigFactory.parseString(hocon).withFallback(ConfigFactory.load()).resolve();
    }

    /**
     * The registry settings of a fleet: {@code directory}, {@code model}, short leases, and etcd deadlines long enough
     * for a busy 2-core machine (a JVM's first gRPC connection can take seconds there; a dead registry is tested
     * with its own short deadline).
     */
    static String registry(String directory, String model) {
        return """
                weight-loader { directory = "%s", model-id = "%s", registry.etcd { lease-ttl = 2s, connect-timeout = 30s, request-timeout = 30s }
                  remote-instance { connect-timeout = 2s, request-timeout = 5s, transfer-timeout = 60s } }
                """.formatted(directory, model);
    }

    /** Every destination holds the bytes of slicing (or not) the checkpoint's whole tensor. */
    void assertBytesOf(Path checkpoint, List<TensorDestination> held) {
        Map<String, byte[]> whole = written.get(checkpoint);
        for (TensorDestination d : held) {
            byte[] want = d.slice() == null ? whole.get(d.spec().name())
                    : Slicing.slice(whole.get(d.spec().name()), d.spec(), d.slice());
            byte[] got = new byte[want.length];
            d.region().byteBuffer(0, got.length).get(got);
            assertThat(got).as("%s %s", d.spec().name(), d.slice()).isEqualTo(want);
        }
    }

    /** A client through the library; every byte it loaded is compared with {@code checkpoint}'s. */
    LoadReport load(String hocon, Path checkpoint) {
        try (WeightLoader loader = WeightLoader.open(config(hocon));
             TensorArena arena = TensorArena.allocate(Device.CPU, loader.rankSpecs())) {
            LoadRequest request = loader.rankRequest(arena.destinations());
            LoadReport report = loader.load(request);
            assertThat(report.totalBytes()).isEqualTo(request.totalBytes());
            assertBytesOf(checkpoint, request.tensors());
            return report;
        }
    }

    /** What {@code call} returned and what it wrote to stderr (where the tests' logger writes its WARN lines). */
    record Logged<T>(T value, String err) {
    }

    static <T> Logged<T> logged(Callable<T> call) throws Exception {
        PrintStream before = System.err;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setErr(new PrintStream(buf, true, StandardCharsets.UTF_8));
        try {
            T v = call.call();
            return new Logged<>(v, buf.toString(StandardCharsets.UTF_8));
        } finally {
            System.setErr(before);
            before.print(buf.toString(StandardCharsets.UTF_8));
        }
    }

    /** What {@code call} wrote to stderr, the exception it threw. */
    static Logged<Throwable> loggedFailure(Callable<?> call) throws Exception {
        return logged(() -> {
            try {
                call.call();
                return null;
            } catch (Exception e) {
                return e;
            }
        });
    }
}
