package io.weightloader.backend.te;

import static io.weightloader.backend.te.SeedServiceTest.client;
import static io.weightloader.backend.te.SeedServiceTest.load;
import static io.weightloader.backend.te.SeedServiceTest.seedContext;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.host.BackendRegistry;
import io.weightloader.host.Seeds;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.seed.Directory;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.SeedRefusedException;
import io.weightloader.seed.SeedService;
import io.weightloader.testing.TestWeights;
import java.io.IOException;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A relay is a third party: what it sends is checked against the root's checksums, a relay that sends wrong bytes is
 * reported and its tensors read again from the root, a root without checksums takes no relays, a dead client frees
 * its source, and dead relays cost one try each. Root, lying relays and clients in this JVM, over the built-in engine.
 */
class RelayTrustTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final RankKey RANK = new RankKey(0, 0);
    private final List<TensorSpec> specs = TestWeights.specs(4, 64 << 10);
    private final List<AutoCloseable> closing = new ArrayList<>();
    /** Heartbeats of fake relays and lease renewals of fake clients, as live ones would send them. */
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

    /** A root seed holding weights made from {@code weights}. */
    private SeedService root(String extra) {
        HostMemory m = TestWeights.arena(specs);
        closing.add(m);
        SeedService svc = Seeds.start(seedContext(extra), BackendRegistry.discover(),
                Map.of(RANK, TestWeights.held(m, specs, 1)));
        closing.add(svc);
        return svc;
    }

    /**
     * A relay that lies: it publishes the root's manifest (generation and checksums) over other weights of the same
     * shapes, as a compromised or broken instance would.
     */
    private SeedService liar(SeedService root) {
        HostMemory m = TestWeights.arena(specs);
        closing.add(m);
        SeedService svc = Seeds.bind(seedContext(""), BackendRegistry.discover(), List.of(Device.CPU));
        closing.add(svc);
        Manifest rootManifest = root.manifest(RANK).orElseThrow();
        svc.publishRelay(RANK, TestWeights.held(m, specs, 2), rootManifest, null);
        svc.start();
        return svc;
    }

    private static SeedClient control(SeedService s) {
        return new SeedClient("127.0.0.1", s.port(), Optional.empty(), Duration.ofSeconds(5), Duration.ofSeconds(5), 0);
    }

    private static byte[] json(Object o) throws IOException {
        return JSON.writeValueAsBytes(o);
    }

    /** Registers {@code address} as a ready relay of {@code root} and keeps it registered (heartbeat). */
    private void register(SeedService root, String address, boolean pipelined) throws IOException {
        byte[] body = json(Map.of("address", address, "generation", root.manifest(RANK).orElseThrow().generation(),
                "ready", true, "pipelined", pipelined));
        control(root).post("/v1/relays?tp=0&pp=0", body, java.util.Set.of());
        beats.scheduleWithFixedDelay(() -> {
            try {
                control(root).post("/v1/relays?tp=0&pp=0", body, java.util.Set.of());
            } catch (RuntimeException e) {
                // the root is closing
            }
        }, 300, 300, TimeUnit.MILLISECONDS);
    }

    /** Keeps the root busy serving a tree client that renews its lease (so tree clients are sent elsewhere). */
    private void holdRoot(SeedService root) {
        SeedClient.SourceChoice c = control(root).source(RANK, "tree", "someone", List.of(), false, 0);
        assertThat(c.address()).isEqualTo(Directory.ROOT);
        beats.scheduleWithFixedDelay(() -> control(root).renewSource(RANK, Directory.ROOT, "someone"), 300, 300,
                TimeUnit.MILLISECONDS);
    }

    private JsonNode relays(SeedService root) throws IOException {
        return JSON.readTree(control(root).get("/v1/relays?tp=0&pp=0"));
    }

    private LoadReport loadWith(SeedService root, String strategy) {
        try (WeightLoader loader = WeightLoader.open(client(root.port(),
                "weight-loader.backends.transfer_engine.source-strategy = " + strategy));
             HostMemory dst = TestWeights.arena(specs)) {
            return load(loader, specs, dst);
        }
    }

    /** Every tensor of the report has the root's bytes. */
    private void assertRootsBytes(LoadReport report) {
        for (int i = 0; i < specs.size(); i++) {
            TensorReport t = report.tensors().get(i);
            assertThat(t.sha256()).as(t.name()).isEqualTo(TestWeights.sha256(specs.get(i), 1));
        }
    }

    @Test
    void aRootThatPublishesNoChecksumsTakesNoRelaysAndItsClientsReadFromIt() throws Exception {
        SeedService root = root("weight-loader.seed.publish-checksums = false");
        SeedService liar = liar(root);
        assertThatThrownBy(() -> register(root, "127.0.0.1:" + liar.port(), true))
                .isInstanceOf(SeedRefusedException.class).hasMessageContaining("409")
                .hasMessageContaining("publishes no checksums")
                .hasMessageContaining("weight-loader.seed.publish-checksums");
        assertThat(relays(root).path("relays")).isEmpty();
        for (String strategy : List.of("tree", "chain")) {
            LoadReport r = loadWith(root, strategy);
            assertRootsBytes(r);
            assertThat(r.source()).doesNotContain(" via ");
        }
    }

    @Test
    void aRelayThatSendsWrongBytesIsReportedAndItsTensorsAreReadAgainFromTheRoot() throws Exception {
        SeedService root = root("");
        SeedService liar = liar(root);
        String address = "127.0.0.1:" + liar.port();
        register(root, address, false);
        holdRoot(root); // so the tree client is sent to the relay
        LoadReport r = loadWith(root, "tree");
        assertRootsBytes(r);
        assertThat(r.source()).contains(" via " + address + ", then root (again, for 5 tensor(s) relay " + address
                + " sent wrong)");
        JsonNode listed = relays(root).path("relays").get(0);
        assertThat(listed.path("address").asText()).isEqualTo(address);
        assertThat(listed.path("reported").asText()).contains("did not match the root's checksums");
        // the directory sends no one to it again: with the root busy a tree client would wait; on failover, the root
        assertThat(control(root).source(RANK, "tree", "next", List.of(), true, 0).address()).isEqualTo(Directory.ROOT);
    }

    @Test
    void aChainClientOfALyingPipelinedRelayGetsTheRootsBytes() throws Exception {
        SeedService root = root("");
        SeedService liar = liar(root);
        String address = "127.0.0.1:" + liar.port();
        register(root, address, true);
        // the liar asks for its own source by chain, and so becomes the end of the chain
        assertThat(control(root).source(RANK, "chain", address, List.of(), false, 0).address())
                .isEqualTo(Directory.ROOT);
        LoadReport r = loadWith(root, "chain");
        assertRootsBytes(r);
        assertThat(r.source()).contains(" via " + address).contains("relay " + address + " sent wrong");
    }

    @Test
    void aClientKilledMidLoadFreesItsSourceWhenItsLeaseRunsOut() throws Exception {
        SeedService root = root("");
        // a tree client took the root and died: it never renews and never says done
        assertThat(control(root).source(RANK, "tree", "killed", List.of(), false, 0).address())
                .isEqualTo(Directory.ROOT);
        LoadReport r = loadWith(root, "tree"); // waits for the lease to run out (seconds), not for transfer-timeout
        assertRootsBytes(r);
        assertThat(r.source()).doesNotContain(" via ");
    }

    @Test
    void tenDeadRelaysCostOneTryEachAndTheClientFallsBackToTheRoot() throws Exception {
        SeedService root = root("");
        for (int i = 0; i < 10; i++) {
            int port;
            try (ServerSocket s = new ServerSocket(0)) {
                port = s.getLocalPort(); // closed again: nothing answers there
            }
            register(root, "127.0.0.1:" + port, false);
        }
        assertThat(relays(root).path("relays")).hasSize(10);
        holdRoot(root);
        LoadReport r = loadWith(root, "tree");
        assertRootsBytes(r);
        assertThat(r.source()).doesNotContain(" via "); // every relay refused at its manifest: all bytes from the root
    }
}
