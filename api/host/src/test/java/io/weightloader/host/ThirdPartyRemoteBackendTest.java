package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import io.weightloader.memory.HostMemory;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.RemoteLoads;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.SeedPublisher;
import io.weightloader.seed.SeedPublisherProvider;
import io.weightloader.seed.SeedService;
import io.weightloader.testing.TestWeights;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * A backend that is not built in is selected and served by what its provider declares, exactly as the built-ins are:
 * {@code remote-instance.backend} takes any provider that reads from a seed, and {@code seed.serve} any provider that
 * can publish. The plugin here moves bytes by copying within this process (seed and client share it), which is enough
 * to see the whole path: selection, the seed's manifest, name matching and the final generation and checksum check.
 */
class ThirdPartyRemoteBackendTest {

    /**
     * The third party's provider: reads from a seed, serves as one (its seed side is a separate object, found through
     * {@link #extension}), knows nothing of the built-in names, builds its values with their builders.
     */
    static class SameProcessCopy implements WeightLoaderBackendProvider {
        private final SeedPublisherProvider seedSide = this::publish;

        @Override
        public <T> java.util.Optional<T> extension(Class<T> type) {
            return type == SeedPublisherProvider.class ? java.util.Optional.of(type.cast(seedSide))
                    : java.util.Optional.empty();
        }

        @Override
        public int spiVersion() {
            return SPI_VERSION;
        }

        @Override
        public String name() {
            return "same_process_copy";
        }

        @Override
        public BackendCapabilities capabilities() {
            return BackendCapabilities.builder().readsFromSeed(true).devices(Device.Kind.CPU).build();
        }

        SeedPublisher publish(BackendContext context, RankKey rank, List<TensorDestination> tensors) {
            return new SeedPublisher() {
                @Override
                public String engine() {
                    return "copy-inprocess";
                }

                @Override
                public String sessionId() {
                    return "this-process";
                }

                @Override
                public double registrationSeconds() {
                    return 0;
                }

                @Override
                public void close() {
                }
            };
        }

        @Override
        public WeightLoaderBackend create(BackendContext context) {
            WeightLoaderSettings s = context.settings();
            SeedClient seed = new SeedClient(s.remote().seedIp().orElseThrow(), s.remote().seedPort(),
                    s.remote().token(), Duration.ofSeconds(2), Duration.ofSeconds(5), 1);
            return new WeightLoaderBackend() {
                @Override
                public String name() {
                    return "same_process_copy";
                }

                @Override
                public String engine() {
                    return "copy-inprocess";
                }

                @Override
                public String source() {
                    return "seed " + seed.peer() + " rank " + s.rank();
                }

                @Override
                public List<TensorSpec> available() {
                    return seed.manifest(s.rank()).specs();
                }

                @Override
                public LoadReport load(LoadRequest request) {
                    Manifest m = seed.manifest(s.rank());
                    TensorMatcher.check(source(), m.specs(), request.specs(), request.ignoreExtraTensors());
                    Map<String, Manifest.Entry> byName = m.entriesByName();
                    for (TensorDestination d : request.tensors()) {
                        int n = (int) d.spec().byteSize();
                        ByteBuffer from = io.weightloader.api.MemoryRegion.of(byName.get(d.spec().name()).address(), n,
                                Device.CPU).byteBuffer(0, n);
                        d.region().byteBuffer(0, n).put(from);
                    }
                    return LoadReport.builder(name()).engine(engine()).source(source()).device("cpu")
                            .tensors(RemoteLoads.verify(seed, s.rank(), m, request, source()))
                            .totalBytes(request.totalBytes()).build();
                }

                @Override
                public void close() {
                }
            };
        }
    }

    static Config config(String hocon) {
        return ConfigFactory.parseString(hocon).withFallback(ConfigFactory.defaultReference()).resolve();
    }

    @Test
    void aThirdPartyRemoteBackendIsServedAndSelectedLikeTheBuiltIns() {
        BackendRegistry registry = BackendRegistry.of(List.of(new SameProcessCopy()));
        List<TensorSpec> specs = TestWeights.specs(4, 1 << 16);
        Config seedConfig = config("weight-loader.seed.serve = [same_process_copy]");
        try (HostMemory held = TestWeights.arena(specs);
             SeedService svc = Seeds.start(new BackendContext(WeightLoaderSettings.from(seedConfig), seedConfig),
                     registry, Map.of(new RankKey(0, 0), TestWeights.held(held, specs, 42)))) {
            assertThat(svc.manifest(new RankKey(0, 0)).orElseThrow().serves())
                    .containsExactly(Map.entry("same_process_copy", "copy-inprocess"));
            Config client = ConfigFactory.parseString("""
                    weight-loader { load-format = remote_instance, checksum = sha256
                      remote-instance { seed-instance-ip = "127.0.0.1", backend = same_process_copy } }
                    weight-loader.remote-instance.seed-instance-service-port = """ + svc.port());
            try (WeightLoader loader = WeightLoader.open(client, registry, ConfigFactory.defaultReference());
                 HostMemory dst = TestWeights.arena(specs)) {
                List<TensorDestination> dests = new ArrayList<>();
                List<io.weightloader.api.MemoryRegion> slices = TestWeights.slices(dst, specs);
                for (int i = 0; i < specs.size(); i++) {
                    dests.add(new TensorDestination(specs.get(i), slices.get(i)));
                }
                LoadReport report = loader.load(LoadRequest.of(dests));
                assertThat(report.backend()).isEqualTo("same_process_copy");
                for (int i = 0; i < specs.size(); i++) {
                    assertThat(report.tensors().get(i).sha256()).isEqualTo(TestWeights.sha256(specs.get(i), 42));
                }
            }
        }
    }

    @Test
    void aBackendThatDoesNotReadFromASeedCannotBeTheRemoteOne() {
        WeightLoaderBackendProvider disk = new SameProcessCopy() {
            @Override
            public String name() {
                return "disk_only";
            }

            @Override
            public BackendCapabilities capabilities() {
                return new BackendCapabilities(false, false, EnumSet.of(Device.Kind.CPU));
            }
        };
        BackendRegistry registry = BackendRegistry.of(List.of(disk, new SameProcessCopy()));
        Config client = ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance
                  remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = 1, backend = disk_only } }""");
        assertThatThrownBy(() -> WeightLoader.open(client, registry, ConfigFactory.defaultReference()))
                .isInstanceOf(WeightLoaderConfigException.class)
                .hasMessageContaining("weight-loader.remote-instance.backend")
                .hasMessageContaining("does not read from a seed")
                .hasMessageContaining("[same_process_copy]");
        assertThat(registry.names()).contains("disk_only");
    }
}
