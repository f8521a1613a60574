package io.weightloader.backend.nccl;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import io.weightloader.api.Device;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.seed.HeldTensor;
import io.weightloader.api.seed.SeedClient;
import io.weightloader.api.seed.SeedPublisher;
import io.weightloader.api.seed.SeedPublisherProvider;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import java.time.Duration;
import java.util.EnumSet;
import java.util.List;
import java.util.Optional;

/**
 * {@code nccl}: the disturbing remote path (SGLang's default). The seed sends every tensor over a 2-rank NCCL
 * group formed through its control plane. GPU memory only; CUDA and NCCL load in {@link #create} / publish.
 */
public final class NcclProvider implements WeightLoaderBackendProvider, SeedPublisherProvider {
    public static final String NAME = "nccl";
    static final String PATH = BackendContext.backendPath(NAME);

    private final NcclRuntime runtime;

    public NcclProvider() {
        this(new JavaCppNccl());
    }

    NcclProvider(NcclRuntime runtime) {
        this.runtime = runtime;
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public BackendCapabilities capabilities() {
        return new BackendCapabilities(true, true, EnumSet.of(Device.Kind.CUDA));
    }

    static Duration initTimeout(BackendContext context) {
        Config c = context.backendConfig(NAME);
        Duration d;
        try {
            d = c.getDuration("init-timeout");
        } catch (ConfigException e) {
            throw new WeightLoaderConfigException(PATH + ".init-timeout", "must be a duration such as 60s", e);
        }
        if (d.isZero() || d.isNegative()) {
            throw new WeightLoaderConfigException(PATH + ".init-timeout", "must be positive; got " + d);
        }
        return d;
    }

    @Override
    public WeightLoaderBackend create(BackendContext context) {
        WeightLoaderSettings s = context.settings();
        Duration init = initTimeout(context);
        String ip = s.remote().seedIp().orElseThrow(() -> new WeightLoaderConfigException(
                "weight-loader.remote-instance.seed-instance-ip", "the nccl backend needs the seed's address"));
        if (s.remote().seedPort() == 0) {
            throw new WeightLoaderConfigException("weight-loader.remote-instance.seed-instance-service-port",
                    "the nccl backend needs the seed's control-plane port");
        }
        runtime.require();
        SeedClient seed = new SeedClient(ip, s.remote().seedPort(), s.remote().token(), s.remote().connectTimeout(),
                s.remote().requestTimeout(), s.remote().retries());
        NcclRuntime.Primitive primitive;
        try {
            primitive = NcclRuntime.Primitive.parse(context.backendConfig(NAME).getString("primitive"));
        } catch (IllegalArgumentException e) {
            throw new WeightLoaderConfigException(PATH + ".primitive", e.getMessage());
        }
        return new NcclBackend(seed, s.rank(), runtime, init, s.remote().transferTimeout(), primitive);
    }

    @Override
    public SeedPublisher publish(BackendContext context, RankKey rank, List<HeldTensor> tensors) {
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
            throw new WeightLoaderConfigException("weight-loader.seed.serve-nccl", e.getMessage());
        }
    }
}
