package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.typesafe.config.Config;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.memory.TensorArena;
import io.weightloader.registry.etcd.EtcdServer;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedService;
import io.weightloader.seed.registry.Fingerprint;
import io.weightloader.seed.registry.Registries;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * A fleet that outlives its root (issue 23), in this JVM, listed in a real etcd started for this class (skipped, the
 * reason printed, where etcd is not installed): a root and relays register per rank under a model id; clients that
 * know only the registry and the model id load every byte right, before and after the root stops; entries whose
 * fingerprint, manifest or bytes do not hold are skipped or fail, each named. Every load is compared byte for byte
 * with the checkpoint.
 */
class FleetRegistryTest extends EtcdFleetTest {
    private Fleet fleet;

    private String model(String name) {
        return "test/fleet-" + name + "-" + System.nanoTime();
    }

    private String registry(String model) {
        return Fleet.registry(etcd.directory(), model);
    }

    /** A handle on the registry, as an operator's tool would read it. */
    private SourceRegistry view(String model) {
        return closing(Registries.open(Fleet.config(registry(model))));
    }

    private static List<String> listed(SourceRegistry view, String model, int tp) {
        return view.listAll(model, new RankKey(tp, 0)).stream().map(SourceEntry::address).sorted().toList();
    }

    @Test
    void aRootAndTwoRelaysRegisterAndClientsThatKnowOnlyTheModelIdLoadEveryByteBeforeAndAfterTheRootStops()
            throws Exception {
        fleet = new Fleet(dir);
        Path ckpt = fleet.checkpoint("ckpt", 5);
        String model = model("outlives");
        String split = "weight-loader { tp-layout = llama, rank.tp-size = 2 }\n";
        SourceRegistry view = view(model);
        SeedHost root = SeedHost.start(Fleet.config(split + registry(model)
                + "weight-loader.model-path = \"" + ckpt + "\""));
        try {
            String rootAddress = address(root);
            assertThat(root.registry()).hasValue("registry " + etcd.directory() + ": model " + model + " as "
                    + rootAddress);
            for (int tp = 0; tp < 2; tp++) {
                Fingerprint f = Fingerprint.of(root.service().manifest(new RankKey(tp, 0)).orElseThrow());
                assertThat(f.checksumsDigest()).hasSize(64);
                assertThat(view.listAll(model, new RankKey(tp, 0))).singleElement()
                        .satisfies(e -> assertThat(e.fingerprint()).isEqualTo(f))
                        .satisfies(e -> assertThat(e.address()).isEqualTo(rootAddress))
                        .satisfies(e -> assertThat(e.ready()).isTrue());
            }
            // relays with the registry and the model id only (no root address): listed once they hold every byte
            List<SeedHost> relays = new ArrayList<>();
            for (int i = 0; i < 2; i++) {
                List<String> before = listed(view, model, 1);
                relays.add(closing(SeedHost.start(Fleet.config(split + registry(model)
                        + "weight-loader.load-format = remote_instance"), null, () -> assertThat(listed(view, model, 1))
                        .as("a relay is listed only once it holds every byte, checked").isEqualTo(before))));
            }
            List<String> all = new ArrayList<>(List.of(rootAddress, address(relays.get(0)), address(relays.get(1))));
            for (SeedHost relay : relays) {
                assertThat(relay.reports()).allSatisfy(r -> assertThat(r.source()).contains("from registry "
                        + etcd.directory()));
                relay.held().values().forEach(h -> fleet.assertBytesOf(ckpt, h));
            }
            for (int tp = 0; tp < 2; tp++) {
                Fingerprint f = Fingerprint.of(root.service().manifest(new RankKey(tp, 0)).orElseThrow());
                assertThat(listed(view, model, tp)).containsExactlyInAnyOrderElementsOf(all);
                assertThat(view.list(model, f)).hasSize(3);
            }
            for (int tp = 0; tp < 2; tp++) {
                LoadReport r = fleet.load(split.replace("rank.tp-size = 2", "rank { tp-size = 2, tp = " + tp + " }")
                        + registry(model) + "weight-loader.load-format = remote_instance", ckpt);
                assertThat(r.source()).contains("model " + model).contains("from registry " + etcd.directory());
                assertThat(r.phases()).containsKey("registry");
            }

            assertThat(root.stop(Duration.ofSeconds(10))).isTrue();
            all.remove(rootAddress);
            assertThat(listed(view, model, 0)).as("a stopped root leaves the registry").containsExactlyInAnyOrderElementsOf(all);
            for (int i = 0; i < 4; i++) {
                int tp = i % 2;
                LoadReport r = fleet.load(split.replace("rank.tp-size = 2", "rank { tp-size = 2, tp = " + tp + " }")
                        + registry(model) + "weight-loader.load-format = remote_instance\nweight-loader.checksum = sha256",
                        ckpt);
                assertThat(r.source()).doesNotContain(rootAddress).containsAnyOf(all.toArray(String[]::new));
                assertThat(r.tensors()).allSatisfy(t -> assertThat(t.sha256()).hasSize(64));
            }
            // a relay can start while the root is gone: from the relays, through the registry
            SeedHost late = closing(SeedHost.start(Fleet.config(split + registry(model)
                    + "weight-loader.load-format = remote_instance")));
            late.held().values().forEach(h -> fleet.assertBytesOf(ckpt, h));
            assertThat(listed(view, model, 1)).contains(address(late)).hasSize(3);
        } finally {
            root.stop(Duration.ofSeconds(10));
        }
    }

    @Test
    void entriesWhoseFingerprintManifestOrBytesDoNotHoldAreSkippedOrFailEachNamedAndNothingWrongIsLoaded()
            throws Exception {
        fleet = new Fleet(dir);
        Path ckpt = fleet.checkpoint("a", 5);
        Path other = fleet.checkpoint("b", 6);
        String model = model("hostile");
        RankKey rank = new RankKey(0, 0);
        // the real weights' seed, and another seed of the same tensors with other bytes: neither registers itself
        SeedHost root = closing(SeedHost.start(Fleet.config("weight-loader.model-path = \"" + ckpt + "\"")));
        SeedHost impostor = closing(SeedHost.start(Fleet.config("weight-loader.model-path = \"" + other + "\"")));
        Manifest rootManifest = root.service().manifest(rank).orElseThrow();
        Fingerprint f = Fingerprint.of(rootManifest);
        // a liar: the root's manifest (generation, checksums) over other bytes
        Config c = Fleet.config("weight-loader {}");
        SeedService liar = closing(Seeds.bind(new BackendContext(WeightLoaderSettings.from(c), c),
                BackendRegistry.discover(), List.of(Device.CPU)));
        TensorArena wrong = closing(TensorArena.allocate(Device.CPU, rootManifest.specs()));
        for (TensorDestination d : wrong.destinations()) {
            java.nio.ByteBuffer b = d.region().byteBuffer(0, (int) d.byteSize());
            while (b.hasRemaining()) {
                b.put((byte) 0x5a);
            }
        }
        liar.publishRelay(rank, wrong.destinations(), rootManifest, null);
        liar.start();
        String dead = "127.0.0.1:" + EtcdServer.freePort();
        String forged = "127.0.0.1:" + EtcdServer.freePort();
        String loading = "127.0.0.1:" + EtcdServer.freePort();
        SourceRegistry writer = view(model);
        writer.register(new SourceEntry(address(impostor), model, f, true));
        writer.register(new SourceEntry("127.0.0.1:" + liar.port(), model, f, true));
        writer.register(new SourceEntry(dead, model, f, true));
        writer.register(new SourceEntry(loading, model, f, false));
        writer.register(new SourceEntry(forged, model, new Fingerprint(f.generation(), f.tpSize(), f.layout(),
                f.rank(), f.namesDigest(), "0".repeat(64)), true));
        String client = registry(model) + "weight-loader.load-format = remote_instance";

        Fleet.Logged<Throwable> failed = Fleet.loggedFailure(() -> fleet.load(client, ckpt));
        assertThat(failed.value()).as("no source holds").isNotNull();
        assertThat(failed.value().getMessage())
                .contains("no source listed in registry " + etcd.directory())
                .contains(address(impostor) + ": source " + address(impostor) + " serves other weights than registry")
                .contains("checksums digest")
                .contains("127.0.0.1:" + liar.port() + ": ").contains("SHA-256")
                .contains(dead + ": ").contains("cannot reach")
                .contains("skipped").contains(forged + ": its fingerprint differs").contains(loading + ": not ready")
                .contains("nothing was loaded");
        assertThat(failed.err()).contains("skipped source " + forged).contains("checksums digest 0000")
                .contains("source " + address(impostor) + " failed").contains("source 127.0.0.1:" + liar.port()
                        + " failed").contains("source " + dead + " failed");

        // with the real weights' seed listed too, a client gets them, whichever it tried first
        writer.register(new SourceEntry(address(root), model, f, true));
        for (int i = 0; i < 3; i++) {
            Fleet.Logged<LoadReport> ok = Fleet.logged(() -> fleet.load(client, ckpt));
            assertThat(ok.value().source()).contains("seed " + address(root)).contains("skipped 2: ")
                    .contains(forged).contains(loading);
            assertThat(ok.err()).contains("skipped source " + forged);
        }
        // a client of another split is told what the registry holds
        assertThatThrownBy(() -> fleet.load(client + "\nweight-loader.rank.tp-size = 2", ckpt))
                .hasMessageContaining("holds tp size 1, layout none; this client loads tp size 2");
    }

    @Test
    void aRootWhoseWeightsChangeInPlaceOrAreReleasedLeavesTheRegistryAndComesBackOnResume() throws Exception {
        fleet = new Fleet(dir);
        Path ckpt = fleet.checkpoint("ckpt", 5);
        String model = model("update");
        RankKey rank = new RankKey(0, 0);
        SourceRegistry view = view(model);
        SeedHost root = closing(SeedHost.start(Fleet.config(registry(model) + "weight-loader { model-path = \""
                + ckpt + "\", enable-memory-saver = true }")));
        assertThat(listed(view, model, 0)).containsExactly(address(root));
        String before = root.service().manifest(rank).orElseThrow().generation();
        root.releaseMemory();
        assertThat(listed(view, model, 0)).as("released weights are no one's source").isEmpty();
        root.resumeMemory();
        Fingerprint resumed = Fingerprint.of(root.service().manifest(rank).orElseThrow());
        assertThat(resumed.generation()).isNotEqualTo(before);
        assertThat(view.list(model, resumed)).extracting(SourceEntry::address).containsExactly(address(root));
        fleet.load(registry(model) + "weight-loader.load-format = remote_instance", ckpt);

        // a relay found through the registry (no root address) releases too: withdrawn while released, and on resume
        // refilled from the registry's sources, checked against the manifest it serves, and listed again
        SeedHost relay = closing(SeedHost.start(Fleet.config(registry(model)
                + "weight-loader { load-format = remote_instance, enable-memory-saver = true }")));
        assertThat(listed(view, model, 0)).containsExactlyInAnyOrder(address(root), address(relay));
        relay.releaseMemory();
        assertThat(listed(view, model, 0)).containsExactly(address(root));
        SeedHost.MemoryReport back = relay.resumeMemory();
        assertThat(back.source()).isEqualTo("registry");
        assertThat(back.generations()).containsEntry(rank.toString(), resumed.generation());
        relay.held().values().forEach(h -> fleet.assertBytesOf(ckpt, h));
        assertThat(view.list(model, resumed)).extracting(SourceEntry::address)
                .containsExactlyInAnyOrder(address(root), address(relay));
        relay.stop(Duration.ofSeconds(10));

        root.service().weightsChanging(rank);
        assertThat(listed(view, model, 0)).as("its checksums no longer hold").isEmpty();
        root.service().weightsChanged(rank);
        assertThat(listed(view, model, 0)).as("it publishes no checksums after an update in place").isEmpty();
    }
}
