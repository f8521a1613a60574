package io.weightloader.backend.nccl;

import io.weightloader.api.TensorDestination;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import io.weightloader.seed.SeedService;
import io.weightloader.testing.Gpus;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * Real NCCL against a peer that misbehaves: the deadlines fire, the communicator is aborted and the error names
 * the step that hung, well before anything else would time out; a seed whose client vanished serves the next
 * one. (The first GPU runs of the first test hung: outside an NCCL group, ncclCommInitRank ran the init on the
 * calling thread, which spun there waiting for the peer, non-blocking mode or not.)
 */
class NcclDeadlineGpuTest {

    /** Real NCCL on the seed's side, except for how the seed takes part in the group. */
    private static final class MisbehavingSeed implements NcclRuntime {
        private final JavaCppNccl real = new JavaCppNccl();
        private final boolean joins;
        final CountDownLatch release = new CountDownLatch(1);

        MisbehavingSeed(boolean joins) {
            this.joins = joins;
        }

        @Override
        public void require() {
            real.require();
        }

        @Override
        public byte[] newUniqueId(Optional<String> bootstrap) {
            return real.newUniqueId(bootstrap);
        }

        @Override
        public Timings transfer(Device device, byte[] uniqueId, int rank, List<NcclOp> ops, Primitive primitive,
                                long initDeadline, long transferDeadline) {
            if (joins) {
                // forms the group and connects, then sends nothing: the client's receives never complete
                Timings t = real.transfer(device, uniqueId, rank, List.of(), primitive, initDeadline, transferDeadline);
                await();
                return t;
            }
            await(); // never calls ncclCommInitRank
            throw new IllegalStateException("released");
        }

        private void await() {
            try {
                release.await(60, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    private static SeedService seed(MisbehavingSeed nccl) {
        Config c = NcclControlPlaneTest.seedConfig("");
        return Seeds.start(new BackendContext(WeightLoaderSettings.from(c), c),
                BackendRegistry.of(List.of(new NcclProvider(nccl))),
                Map.of(new RankKey(0, 0), NcclControlPlaneTest.fakeGpuTensors(0x10000)));
    }

    private static WeightLoader client(int port, String device) {
        return WeightLoader.open(ConfigFactory.parseString("""
                weight-loader { load-format = remote_instance, device = "%s"
                  remote-instance { seed-instance-ip = "127.0.0.1", backend = nccl, token = "tok", retries = 0,
                    transfer-timeout = 3s }
                  backends.nccl.init-timeout = 3s }
                weight-loader.remote-instance.seed-instance-service-port = %d
                """.formatted(device, port)), BackendRegistry.of(List.of(new NcclProvider())),
                ConfigFactory.defaultReference());
    }

    @Test
    void aSeedThatNeverJoinsTheGroupFailsTheInitStepAtItsDeadline() {
        Gpus.require("NcclDeadlineGpuTest", 1);
        MisbehavingSeed nccl = new MisbehavingSeed(false);
        try (SeedService svc = seed(nccl);
             WeightLoader loader = client(svc.port(), "cuda:0");
             TensorArena arena = TensorArena.allocate(Device.cuda(0), NcclControlPlaneTest.SPECS)) {
            long t0 = System.nanoTime();
            assertThatThrownBy(() -> loader.load(LoadRequest.of(arena.destinations())))
                    .hasMessageContaining("NCCL step 'init (forming the 2-rank NCCL group)' did not finish before its "
                            + "deadline")
                    .hasMessageContaining("abort");
            double secs = (System.nanoTime() - t0) / 1e9;
            System.err.printf("init deadline 3 s: failed after %.2f s%n", secs);
            assertThat(secs).isBetween(2.9, 15.0);
        } finally {
            nccl.release.countDown();
        }
    }

    @Test
    void aSeedThatJoinsButNeverSendsFailsTheTransferStepAtItsDeadline() {
        Gpus.require("NcclDeadlineGpuTest", 2);
        MisbehavingSeed nccl = new MisbehavingSeed(true);
        try (SeedService svc = seed(nccl);
             WeightLoader loader = client(svc.port(), "cuda:1");
             TensorArena arena = TensorArena.allocate(Device.cuda(1), NcclControlPlaneTest.SPECS)) {
            long t0 = System.nanoTime();
            assertThatThrownBy(() -> loader.load(LoadRequest.of(arena.destinations())))
                    .hasMessageContaining("NCCL step 'transfer'");
            double secs = (System.nanoTime() - t0) / 1e9;
            System.err.printf("transfer deadline 3 s: failed after %.2f s%n", secs);
            assertThat(secs).isLessThan(20.0);
        } finally {
            nccl.release.countDown();
        }
    }

    @Test
    void aClientThatNeverJoinsHoldsTheSeedOnlyUntilTheSeedsInitDeadline() throws Exception {
        Gpus.require("NcclDeadlineGpuTest", 2);
        Config c = NcclControlPlaneTest.seedConfig("weight-loader.backends.nccl.init-timeout = 3s");
        try (TensorArena held = TensorArena.allocate(Device.cuda(0), NcclControlPlaneTest.SPECS)) {
            List<TensorDestination> tensors = new ArrayList<>();
            held.destinations().forEach(d -> tensors.add(new TensorDestination(d.spec(), d.region())));
            try (SeedService svc = Seeds.start(new BackendContext(WeightLoaderSettings.from(c), c),
                    BackendRegistry.of(List.of(new NcclProvider())), Map.of(new RankKey(0, 0), tensors));
                 WeightLoader loader = client(svc.port(), "cuda:1");
                 TensorArena arena = TensorArena.allocate(Device.cuda(1), NcclControlPlaneTest.SPECS)) {
                // a client takes the seed's group, then vanishes without joining it
                HttpResponse<String> taken = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                                URI.create("http://127.0.0.1:" + svc.port() + "/v1/nccl/send?tp=0&pp=0"))
                        .header("Authorization", "Bearer tok")
                        .POST(HttpRequest.BodyPublishers.ofString("{\"tensors\":[\"embed\"]}")).build(),
                        HttpResponse.BodyHandlers.ofString());
                assertThat(taken.statusCode()).as(taken.body()).isEqualTo(200);
                long t0 = System.nanoTime();
                assertThatThrownBy(() -> loader.load(LoadRequest.of(arena.destinations()))).hasMessageContaining("busy");
                // once the seed's init deadline (3 s) has passed, it aborts that group and serves the next client
                LoadReport report = null;
                RuntimeException last = null;
                while (report == null && System.nanoTime() - t0 < 30_000_000_000L) {
                    try {
                        report = loader.load(LoadRequest.of(arena.destinations()));
                    } catch (RuntimeException e) {
                        last = e;
                        Thread.sleep(500);
                    }
                }
                assertThat(report).as("a load after the vanished client's deadline; last error: %s", last).isNotNull();
                assertThat(report.tensors()).hasSize(NcclControlPlaneTest.SPECS.size());
                System.err.printf("seed freed from a vanished client after %.2f s (init deadline 3 s)%n",
                        (System.nanoTime() - t0) / 1e9);
            }
        }
    }
}
