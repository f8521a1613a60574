package io.weightloader.backend.local;

import io.weightloader.memory.NativeLibraries;
import io.weightloader.api.Device;
import io.weightloader.api.config.SettingsReader;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.NativePart;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import io.weightloader.memory.cuda.Cuda;
import java.util.List;
import java.nio.file.Files;
import java.nio.file.Path;

/** {@code local}: safetensors checkpoints from this machine's disk. */
public final class LocalBackendProvider implements WeightLoaderBackendProvider {
    public static final String NAME = LocalBackend.NAME;

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
        return BackendCapabilities.builder().devices(Device.Kind.CPU, Device.Kind.CUDA).build();
    }

    /** {@code weight-loader.backends.local}, read and checked once. */
    record Settings(int threads, int pieceSize, int stagingSize, boolean zeroCopy, LocalIo io, boolean allowEmpty,
                    Path modelPath) {
        static Settings from(BackendContext context) {
            Settings own = own(context);
            Path path = Path.of(context.settings().modelPath().orElseThrow(() ->
                    new WeightLoaderConfigException("weight-loader.model-path",
                            "the local backend needs a checkpoint file or directory")));
            if (!Files.exists(path)) {
                throw new WeightLoaderConfigException("weight-loader.model-path", "no such file or directory: "
                        + path.toAbsolutePath());
            }
            return new Settings(own.threads(), own.pieceSize(), own.stagingSize(), own.zeroCopy(), own.io(),
                    own.allowEmpty(), path);
        }

        /** {@code weight-loader.backends.local} alone (no model path). */
        static Settings own(BackendContext context) {
            SettingsReader r = new SettingsReader(context.config(), BackendContext.backendPath(NAME));
            int threads = r.integer("threads", 0, 256);
            if (threads == 0) {
                threads = defaultThreads(Runtime.getRuntime().availableProcessors(), context.settings().device());
            }
            int piece = (int) r.size("piece-size", 4096, 1L << 30);
            int staging = (int) r.size("staging-size", 4096, 1L << 30);
            boolean zeroCopy = r.bool("zero-copy");
            LocalIo io = LocalIo.parse(r.oneOf("io", List.of("buffered", "direct", "auto")));
            boolean allowEmpty = r.bool("allow-empty");
            return new Settings(threads, piece, staging, zeroCopy, io, allowEmpty, null);
        }
    }

    /**
     * {@code threads = 0}: one reader per core for host destinations, at most 64 (a page-cache read scales with the
     * cores: on a 32-core host 8 threads reached half of what 32 did); for a GPU destination at most 16, since each
     * thread also stages through pinned buffers to one GPU, whose copy engine it shares (16 was the best of 8, 16
     * and 32 on a 32-core H200 host).
     */
    static int defaultThreads(int cores, io.weightloader.api.Device device) {
        return Math.max(1, Math.min(cores, device.isHost() ? 64 : 16));
    }

    @Override
    public void validate(BackendContext context) {
        Settings.from(context);
    }

    @Override
    public void validateSettings(BackendContext context) {
        Settings.own(context);
    }

    @Override
    public WeightLoaderBackend create(BackendContext context) {
        Settings s = Settings.from(context);
        SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint.open(s.modelPath());
        if (checkpoint.tensors().isEmpty() && !s.allowEmpty()) {
            throw new SafetensorsFormatException(s.modelPath(), "the checkpoint holds no tensors; set "
                    + BackendContext.backendPath(NAME) + ".allow-empty = true if an empty checkpoint is meant");
        }
        LocalBackend backend = new LocalBackend(checkpoint, s.threads(), s.pieceSize(), s.stagingSize(), s.zeroCopy(),
                s.io());
        backend.prepare(context.settings().device());
        return backend;
    }

    @Override
    public List<NativePart> nativeParts(BackendContext context) {
        return List.of(NativeLibraries.probe(Cuda.DRIVER, "cuda:N destinations"),
                NativeLibraries.probe(Cuda.RUNTIME, "cuda:N destinations"));
    }
}
