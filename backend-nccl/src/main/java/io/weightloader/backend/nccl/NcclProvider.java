package io.weightloader.backend.nccl;

import io.weightloader.api.TensorDestination;
import io.weightloader.memory.NativeLibraries;
import io.weightloader.api.Device;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.SettingsReader;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.SeedPublisher;
import io.weightloader.seed.SeedPublisherProvider;
import io.weightloader.seed.registry.Registries;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.NativePart;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import io.weightloader.memory.cuda.Cuda;
import java.time.Duration;
import java.util.List;
import java.util.Optional;

/**
 * {@code nccl}: the disturbing remote path (SGLang's default). The seed sends every tensor over a 2-rank NCCL
 * group formed through its control plane. GPU memory only; CUDA and NCCL load in {@link #create} / publish.
 */
public final class NcclProvider implements WeightLoaderBackendProvider, SeedPublisherProvider {
    public static final String NAME = NcclBackend.NAME;
    static final String PATH = BackendContext.backendPath(NAME);

    private final NcclRuntime runtime;

    public NcclProvider() {
        this(new JavaCppNccl());
    }

    NcclProvider(NcclRuntime runtime) {
        this.runtime = runtime;
    }

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
        // memory saver: nothing is registered; a seed sends from its tensors' addresses at each request
        return BackendCapabilities.builder().readsFromSeed(true).disturbsSeed(true).devices(Device.Kind.CUDA)
                .memorySaver(true).build();
    }

    static Duration initTimeout(BackendContext context) {
        return new SettingsReader(context.config(), PATH).duration("init-timeout", Duration.ofMillis(1),
                Duration.ofHours(1));
    }

    static NcclRuntime.Primitive primitive(BackendContext context) {
        SettingsReader r = new SettingsReader(context.config(), PATH);
        return NcclRuntime.Primitive.parse(r.oneOf("primitive", List.of("send-recv", "broadcast")));
    }

    @Override
    public void validateSettings(BackendContext context) {
        initTimeout(context);
        primitive(context);
    }

    @Override
    public void validate(BackendContext context) {
        initTimeout(context);
        primitive(context);
        Registries.Settings registry = Registries.settings(context.config());
        if (!registry.inProcess()) {
            if (context.settings().remote().seedIp().isEmpty()) {
                throw new WeightLoaderConfigException("weight-loader.remote-instance.seed-instance-ip", "nccl clients"
                        + " load from the seed this names; they do not find sources in a registry (weight-loader.directory"
                        + " = " + registry.directory() + "): give the seed's address, or load with transfer_engine"
                        + " (weight-loader.remote-instance.backend)");
            }
            org.slf4j.LoggerFactory.getLogger(NcclProvider.class).warn("weight-loader.directory = {} is not used by"
                    + " nccl clients: this one loads from the seed at weight-loader.remote-instance.seed-instance-ip",
                    registry.directory());
        }
        SeedClient.checkedSeedAddress(context.settings(), NAME);
    }

    @Override
    public WeightLoaderBackend create(BackendContext context) {
        WeightLoaderSettings s = context.settings();
        Duration init = initTimeout(context);
        NcclRuntime.Primitive primitive = primitive(context);
        SeedClient seed = SeedClient.forSeedOf(s, NAME);
        runtime.require();
        return new NcclBackend(seed, s.rank(), runtime, init, s.remote().transferTimeout(), primitive);
    }

    @Override
    public void validateSeed(BackendContext context, Device device) {
        initTimeout(context);
        if (device.isHost()) {
            throw new WeightLoaderConfigException("weight-loader.seed.serve", "nccl sends GPU memory only, but this "
                    + "seed holds its weights in host memory; load the seed onto cuda:N (weight-loader.device), or "
                    + "serve transfer_engine only");
        }
        List<Integer> ports = context.settings().remote().groupPorts();
        int ranks = context.settings().tpSize();
        if (!ports.isEmpty() && ports.size() < ranks) {
            throw new WeightLoaderConfigException("weight-loader.remote-instance.send-weights-group-ports",
                    "has " + ports.size() + " port(s) for " + ranks + " tp ranks (index = tp rank)");
        }
        runtime.require();
    }

    @Override
    public List<NativePart> nativeParts(BackendContext context) {
        return List.of(NativeLibraries.probe(Cuda.DRIVER, "the nccl backend"), NativeLibraries.probe(Cuda.RUNTIME,
                "the nccl backend"), NativeLibraries.probe(Cuda.NCCL, "the nccl backend"));
    }

    @Override
    public SeedPublisher publish(BackendContext context, RankKey rank, List<TensorDestination> tensors) {
        WeightLoaderSettings s = context.settings();
        Optional<String> bootstrap = Optional.empty();
        List<Integer> ports = s.remote().groupPorts();
        if (!ports.isEmpty()) {
            if (rank.tp() >= ports.size()) {
                throw new WeightLoaderConfigException("weight-loader.remote-instance.send-weights-group-ports",
                        "has " + ports.size() + " port(s) but this seed serves tp rank " + rank.tp()
                        + " (index = tp rank)");
            }
            bootstrap = Optional.of(s.seed().bindAddress() + ":" + ports.get(rank.tp()));
        }
        runtime.require();
        try {
            return new NcclSeedPublisher(rank, tensors, runtime, bootstrap, s.remote().groupName(), initTimeout(context),
                    s.remote().transferTimeout());
        } catch (IllegalArgumentException e) {
            throw new WeightLoaderConfigException("weight-loader.seed.serve", e.getMessage());
        }
    }
}
