package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.RankKey;
import io.weightloader.memory.TensorArena;
import io.weightloader.seed.SeedClient;
import io.weightloader.testing.Slicing;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A host process through the library alone: its ranks with the layout applied, a seed of its ranks' slices, a relay
 * that loads from that seed, verifies, serves and leaves its root's directory when it stops, and clients of another tp
 * size. Every load is compared with slicing the whole tensors.
 */
class SeedHostTest {
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path dir;

    private Map<String, byte[]> whole;

    private Path checkpoint() {
        LlamaCheckpoint cp = LlamaCheckpoint.write(dir, 5);
        whole = cp.whole;
        return cp.path;
    }

    private static Config config(String hocon) {
        return ConfigFactory.parseString(hocon).withFallback(ConfigFactory.load()).resolve();
    }

    /** Every destination holds the bytes of slicing (or not) the whole tensor. */
    private void assertSlicesOfWhole(List<TensorDestination> held) {
        for (TensorDestination d : held) {
            byte[] want = d.slice() == null ? whole.get(d.spec().name())
                    : Slicing.slice(whole.get(d.spec().name()), d.spec(), d.slice());
            byte[] got = new byte[want.length];
            d.region().byteBuffer(0, got.length).get(got);
            assertThat(got).as("%s %s", d.spec().name(), d.slice()).isEqualTo(want);
        }
    }

    private static JsonNode relays(int port) throws Exception {
        return JSON.readTree(new SeedClient("127.0.0.1", port, Optional.empty(), Duration.ofSeconds(5),
                Duration.ofSeconds(5), 1).get("/v1/relays?tp=1&pp=0")).path("relays");
    }

    /** A client of {@code tpSize} rank {@code rank} through the library: rankSpecs, rankRequest, load. */
    private void loadRank(int seedPort, int tpSize, int rank, String extra) {
        try (WeightLoader loader = WeightLoader.open(config("""
                weight-loader { load-format = remote_instance, tp-layout = llama, checksum = sha256
                  rank { tp-size = %d, tp = %d }
                  remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = %d } }
                %s""".formatted(tpSize, rank, seedPort, extra)));
             TensorArena arena = TensorArena.allocate(Device.CPU, loader.rankSpecs())) {
            LoadRequest request = loader.rankRequest(arena.destinations());
            LoadReport report = loader.load(request);
            assertThat(report.totalBytes()).isEqualTo(request.totalBytes());
            assertSlicesOfWhole(request.tensors());
        }
    }

    @Test
    void aHostStartsASeedOfItsRanksSlicesAndARelayThatServesThemAndLeavesWhenItStops() throws Exception {
        Path ckpt = checkpoint();
        // the ranks of the process: both of tp 2, each its slices under llama
        HostRanks ranks = HostRanks.of(config("weight-loader { model-path = \"%s\", tp-layout = llama, rank.tp-size = 2 }"
                .formatted(ckpt)));
        assertThat(ranks.ranks()).extracting(HostRanks.Rank::key).containsExactly(new RankKey(0, 0), new RankKey(1, 0));
        for (HostRanks.Loaded loaded : ranks.parallel(HostRanks::load)) {
            try (loaded) {
                assertThat(loaded.held().destinations()).anyMatch(d -> d.slice() != null);
                assertSlicesOfWhole(loaded.held().destinations());
            }
        }
        try (SeedHost root = SeedHost.start(config("""
                weight-loader { model-path = "%s", tp-layout = llama, rank.tp-size = 2 }
                """.formatted(ckpt)))) {
            int rootPort = root.service().port();
            assertThat(root.held()).containsOnlyKeys(new RankKey(0, 0), new RankKey(1, 0));
            assertThat(root.relayAddress()).isEmpty();
            // a relay through the library: loads both ranks from the root (tree), checks, serves, joins the directory
            SeedHost relay = SeedHost.start(config("""
                    weight-loader { load-format = remote_instance, tp-layout = llama, rank.tp-size = 2, checksum = sha256
                      remote-instance { seed-instance-ip = "127.0.0.1", seed-instance-service-port = %d }
                      backends.transfer_engine.source-strategy = tree }
                    """.formatted(rootPort)));
            try {
                String address = relay.relayAddress().orElseThrow();
                assertThat(relay.reports()).hasSize(2).allMatch(r -> r.source().contains("(tree)"));
                relay.held().values().forEach(this::assertSlicesOfWhole);
                JsonNode listed = relays(rootPort);
                assertThat(listed).hasSize(1);
                assertThat(listed.get(0).path("address").asText()).isEqualTo(address);
                assertThat(listed.get(0).path("ready").asBoolean()).isTrue();
                // clients: rank to rank from the relay, and of other tp sizes (resharded) from the root
                loadRank(relay.service().port(), 2, 1, "");
                loadRank(rootPort, 4, 3, "");
                loadRank(rootPort, 1, 0, "");
            } finally {
                assertThat(relay.stop(Duration.ofSeconds(10))).as("stopped with no load in flight").isTrue();
            }
            assertThat(relays(rootPort)).as("the relay left the root's directory").isEmpty();
        }
    }
}
