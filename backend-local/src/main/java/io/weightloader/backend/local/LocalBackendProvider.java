package io.weightloader.backend.local;

import io.weightloader.memory.NativeLibraries;
import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import io.weightloader.api.Device;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.NativePart;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import io.weightloader.memory.cuda.Cuda;
import java.util.List;
import java.nio.file.Path;
import java.util.EnumSet;

/** {@code local}: safetensors checkpoints from this machine's disk. */
public final class LocalBackendProvider implements WeightLoaderBackendProvider {
    public static final String NAME = "local";

    @Override
    public int spiVersion() {
        return SPI_VERSION;
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public BackendCapabilities capabilities() {
        return new BackendCapabilities(false, false, EnumSet.of(Device.Kind.CPU, Device.Kind.CUDA));
    }

    /** {@code weight-loader.backends.local}, read and checked once. */
    record Settings(int threads, int pieceSize, int stagingSize, boolean zeroCopy, Path modelPath) {
        static Settings from(BackendContext context) {
            String base = BackendContext.backendPath(NAME);
            Config c = context.backendConfig(NAME);
            int threads;
            try {
                threads = c.getInt("threads");
            } catch (ConfigException e) {
                throw new WeightLoaderConfigException(base + ".threads", "must be a whole number in 0..256", e);
            }
            if (threads < 0 || threads > 256) {
                throw new WeightLoaderConfigException(base + ".threads", "must be in 0..256; got " + threads);
            }
            if (threads == 0) {
                threads = Math.min(8, Runtime.getRuntime().availableProcessors());
            }
            int piece = size(c, base, "piece-size");
            int staging = size(c, base, "staging-size");
            boolean zeroCopy = c.getBoolean("zero-copy");
            Path path = Path.of(context.settings().modelPath().orElseThrow(() ->
                    new WeightLoaderConfigException("weight-loader.model-path",
                            "the local backend needs a checkpoint file or directory")));
            return new Settings(threads, piece, staging, zeroCopy, path);
        }
    }

    @Override
    public void validate(BackendContext context) {
        Settings.from(context);
    }

    @Override
    public WeightLoaderBackend create(BackendContext context) {
        Settings s = Settings.from(context);
        return new LocalBackend(SafetensorsCheckpoint.open(s.modelPath()), s.threads(), s.pieceSize(), s.stagingSize(),
                s.zeroCopy());
    }

    @Override
    public List<NativePart> nativeParts(BackendContext context) {
        return List.of(NativeLibraries.probe(Cuda.DRIVER, "cuda:N destinations"),
                NativeLibraries.probe(Cuda.RUNTIME, "cuda:N destinations"));
    }

    /** A size setting between 4 KiB and 1 GiB; anything else is an error naming its path. */
    private static int size(Config c, String base, String key) {
        long v;
        try {
            v = c.getBytes(key);
        } catch (ConfigException e) {
            throw new WeightLoaderConfigException(base + "." + key, "must be a size such as 1 MiB", e);
        }
        if (v < 4096 || v > (1L << 30)) {
            throw new WeightLoaderConfigException(base + "." + key, "must be between 4 KiB and 1 GiB; got " + v);
        }
        return (int) v;
    }
}
