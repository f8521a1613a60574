package io.weightloader.backend.te;

import static io.weightloader.backend.te.SeedServiceTest.client;
import static io.weightloader.backend.te.SeedServiceTest.seedContext;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.ProgressListener;
import io.weightloader.api.SourceReport;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.ReadyGate;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.SeedService;
import io.weightloader.testing.TestWeights;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A client that reads from several sources at once (issue 23): a root and relays in this JVM over the built-in engine,
 * every relay registered as ready with the root's directory. Each test checks the bytes against the root's and what the
 * report says each source did; none waits on time: a relay is killed once half the bytes arrived (a progress
 * listener), a stalled relay never answers its reads, a lying relay serves other bytes under the root's manifest.
 */
class MultiSourceLoadTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final RankKey RANK = new RankKey(0, 0);
    /** 8 tensors of 4 MiB: 32 MiB, 16 segments of 2 MiB (each 8 of a tensor's 16 blocks). */
    private final List<TensorSpec> specs = TestWeights.specs(8, 4 << 20);
    private final long total = specs.stream().mapToLong(TensorSpec::byteSize).sum();
    private final List<AutoCloseable> closing = new ArrayList<>();
    private final ScheduledExecutorService beats = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "test-heartbeats");
        t.setDaemon(true);
        return t;
    });

    @AfterEach
    void close() throws Exception {
        beats.shutdownNow();
        for (int i = closing.size() - 1; i >= 0; i--) {
            closing.get(i).close();
        }
    }

    private SeedService root() {
        HostMemory m = TestWeights.arena(specs);
        closing.add(m);
        SeedService svc = Seeds.start(seedContext(""), BackendRegistry.discover(),
                Map.of(RANK, TestWeights.held(m, specs, 1)));
        closing.add(svc);
        return svc;
    }

    /**
     * A relay of {@code root} serving weights made from {@code seed} (1: the root's; 2: other bytes under the root's
     * manifest, as a broken or compromised relay would), registered as ready; with {@code gate}, reads wait for it.
     */
    private SeedService relay(SeedService root, long seed, boolean stalled) throws IOException {
        HostMemory m = TestWeights.arena(specs);
        closing.add(m);
        SeedService svc = Seeds.bind(seedContext(""), BackendRegistry.discover(), List.of(Device.CPU));
        closing.add(svc);
        Manifest rootManifest = root.manifest(RANK).orElseThrow();
        List<TensorDestination> held = TestWeights.held(m, specs, seed);
        ReadyGate gate = null;
        if (stalled) {
            // nothing ever arrives: it takes connections and requests and answers none (its reads wait up to 30 s)
            ReadyGate g = ReadyGate.of(held, rootManifest.entriesByName());
            closing.add(() -> {
                g.fail("the test is over");
                g.close();
            });
            gate = g;
        }
        svc.publishRelay(RANK, held, rootManifest, gate);
        svc.start();
        register(root, "127.0.0.1:" + svc.port());
        return svc;
    }

    private static SeedClient control(SeedService s) {
        return new SeedClient("127.0.0.1", s.port(), Optional.empty(), Duration.ofSeconds(5), Duration.ofSeconds(5), 0);
    }

    /** Registers {@code address} as a ready relay of {@code root} and keeps it registered (its heartbeat). */
    private void register(SeedService root, String address) throws IOException {
        byte[] body = JSON.writeValueAsBytes(Map.of("address", address, "generation",
                root.manifest(RANK).orElseThrow().generation(), "ready", true, "pipelined", false));
        control(root).post("/v1/relays?tp=0&pp=0", body, Set.of());
        beats.scheduleWithFixedDelay(() -> {
            try {
                control(root).post("/v1/relays?tp=0&pp=0", body, Set.of());
            } catch (RuntimeException e) {
                // the root is closing
            }
        }, 300, 300, TimeUnit.MILLISECONDS);
    }

    private LoadReport load(SeedService root, String settings, ProgressListener listener) {
        try (WeightLoader loader = WeightLoader.open(client(root.port(), """
                weight-loader.backends.transfer_engine { sources = 4, segment-size = 2 MiB }
                """ + settings));
             HostMemory dst = TestWeights.arena(specs)) {
            List<TensorDestination> d = new ArrayList<>();
            List<MemoryRegion> r = TestWeights.slices(dst, specs);
            for (int i = 0; i < specs.size(); i++) {
                d.add(new TensorDestination(specs.get(i), r.get(i)));
            }
            return loader.load(LoadRequest.of(d).withProgress(listener));
        }
    }

    /** Every tensor of the report has the root's bytes (the report's SHA-256 is of the client's memory). */
    private void assertRootsBytes(LoadReport report) {
        for (int i = 0; i < specs.size(); i++) {
            TensorReport t = report.tensors().get(i);
            assertThat(t.sha256()).as(t.name()).isEqualTo(TestWeights.sha256(specs.get(i), 1));
        }
    }

    private static SourceReport source(LoadReport r, SeedService s) {
        String address = "127.0.0.1:" + s.port();
        return r.sources().stream().filter(x -> x.source().equals(address)).findFirst().orElseThrow(
                () -> new AssertionError("no source " + address + " in " + r.sources()));
    }

    private JsonNode relays(SeedService root) throws IOException {
        return JSON.readTree(control(root).get("/v1/relays?tp=0&pp=0")).path("relays");
    }

    @Test
    @Timeout(60)
    void fourSourcesEachDeliverPartOfTheLoadByteExactAndAreReleasedAfterwards() throws Exception {
        SeedService root = root();
        List<SeedService> relays = List.of(relay(root, 1, false), relay(root, 1, false), relay(root, 1, false));
        LoadReport r = load(root, "", ProgressListener.NONE);
        assertRootsBytes(r);
        assertThat(r.sources()).as(r.source()).hasSize(4);
        assertThat(r.sources()).extracting(SourceReport::source).contains("root");
        for (SeedService relay : relays) {
            assertThat(source(r, relay).bytes()).as("bytes from relay %s", relay.port()).isPositive();
        }
        for (SourceReport s : r.sources()) {
            assertThat(s.failure()).as(s.source()).isNull();
            assertThat(s.bytesRead()).as("nothing read twice from " + s.source()).isEqualTo(s.bytes());
            assertThat(s.segments()).as(s.source()).isPositive();
        }
        assertThat(r.sources().stream().mapToLong(SourceReport::bytes).sum()).isEqualTo(total);
        assertThat(r.source()).contains("4 sources");
        // each source was held only while read from: no relay still counts this client
        for (JsonNode relay : relays(root)) {
            assertThat(relay.path("clients").asInt()).as(relay.toString()).isZero();
        }
    }

    @Test
    @Timeout(60)
    void aRelayKilledHalfwayHasItsUnfinishedSegmentsMovedAndNothingItDeliveredIsReadAgain() throws Exception {
        SeedService root = root();
        relay(root, 1, false);
        relay(root, 1, false);
        SeedService victim = relay(root, 1, false);
        CountDownLatch half = new CountDownLatch(1);
        AtomicLong arrived = new AtomicLong();
        ProgressListener listener = new ProgressListener() {
            @Override
            public void onProgress(long bytesDone, long bytesTotal, int tensorsDone, int tensorsTotal) {
            }

            @Override
            public void onArrived(TensorDestination dest, long offset, long length) {
                if (arrived.addAndGet(length) >= total / 2) {
                    half.countDown();
                }
            }
        };
        List<Integer> clientsMidLoad = new ArrayList<>();
        Thread killer = new Thread(() -> {
            try {
                if (half.await(60, TimeUnit.SECONDS)) {
                    // while it reads, the client holds each of its sources (a lease it renews)
                    for (JsonNode relay : relays(root)) {
                        clientsMidLoad.add(relay.path("clients").asInt());
                    }
                    victim.close(); // its engine closes every connection it serves: the client's reads fail at once
                }
            } catch (InterruptedException | IOException e) {
                // the load ended first
            }
        });
        killer.start();
        LoadReport r;
        try {
            // paced (32 MiB at 16 MiB/s), so the kill lands while every source still has work
            r = load(root, "weight-loader.backends.transfer_engine.bandwidth-limit = 16 MiB", listener);
        } finally {
            killer.interrupt();
            killer.join();
        }
        assertThat(half.getCount()).as("killed once half the bytes arrived").isZero();
        assertThat(clientsMidLoad).as("each relay's clients halfway through the load").containsExactly(1, 1, 1);
        assertRootsBytes(r);
        SourceReport dead = source(r, victim);
        assertThat(dead.failure()).as(r.source()).startsWith("failed:");
        assertThat(dead.moved()).as("segments moved from the killed relay").isNotEmpty();
        assertThat(dead.bytes()).as("what it delivered before it died is kept").isPositive();
        assertThat(r.source()).contains("127.0.0.1:" + victim.port() + " " + dead.bytes() + " B [dropped: failed");
        assertThat(r.sources().stream().mapToLong(SourceReport::bytes).sum()).isEqualTo(total);
        long readTwice = r.sources().stream().mapToLong(SourceReport::bytesRead).sum() - total;
        // only the part of a block the killed relay had not finished is read again; nothing that arrived whole
        assertThat(readTwice).isEqualTo(dead.bytesRead() - dead.bytes());
        for (SourceReport s : r.sources()) {
            if (s != dead) {
                assertThat(s.failure()).as(s.source()).isNull();
                assertThat(s.bytesRead()).as(s.source()).isEqualTo(s.bytes());
            }
        }
    }

    @Test
    @Timeout(60)
    void aStalledRelayIsDroppedWithinTheStallTimeoutAndItsSegmentsReadElsewhere() throws Exception {
        SeedService root = root();
        relay(root, 1, false);
        relay(root, 1, false);
        SeedService stalled = relay(root, 1, true);
        long t0 = System.nanoTime();
        LoadReport r = load(root, "weight-loader.backends.transfer_engine.stall-timeout = 1s", ProgressListener.NONE);
        double secs = (System.nanoTime() - t0) / 1e9;
        assertRootsBytes(r);
        SourceReport s = source(r, stalled);
        System.out.printf("MultiSourceLoadTest: stalled relay dropped after %.2f s quiet, %.2f s into a %.2f s load%n",
                s.quietSeconds(), s.failedAfter(), secs);
        assertThat(s.failure()).as(r.source()).startsWith("stalled:").contains("stall-timeout");
        assertThat(s.moved()).as("its dealt segments moved").isNotEmpty();
        assertThat(s.bytes()).isZero();
        // dropped after a second without progress (plus this machine's scheduling), not when its reads time out (30 s)
        assertThat(s.quietSeconds()).isBetween(1.0, 3.0);
        assertThat(s.failedAfter()).isLessThan(4.0);
        assertThat(secs).isLessThan(15.0);
        assertThat(r.sources().stream().mapToLong(SourceReport::bytes).sum()).isEqualTo(total);
    }

    @Test
    @Timeout(60)
    void aRelayThatSendsWrongBytesIsNamedReportedAndItsBlocksAreReadElsewhere() throws Exception {
        SeedService root = root();
        relay(root, 1, false);
        relay(root, 1, false);
        SeedService liar = relay(root, 2, false);
        LoadReport r = load(root, "", ProgressListener.NONE);
        assertRootsBytes(r);
        SourceReport s = source(r, liar);
        assertThat(s.failure()).as(r.source()).startsWith("sent wrong bytes:")
                .contains("did not match the root's checksums");
        assertThat(s.bytes()).as("nothing of the liar's is kept").isZero();
        assertThat(s.bytesRead()).isPositive();
        assertThat(s.moved()).isNotEmpty();
        assertThat(r.sources().stream().mapToLong(SourceReport::bytes).sum()).isEqualTo(total);
        String address = "127.0.0.1:" + liar.port();
        JsonNode listed = null;
        for (JsonNode relay : relays(root)) {
            if (relay.path("address").asText().equals(address)) {
                listed = relay;
            }
        }
        assertThat(listed).as("the liar in the directory").isNotNull();
        assertThat(listed.path("reported").asText()).contains("did not match the root's checksums");
    }
}
