package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;

import com.typesafe.config.Config;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.memory.TensorArena;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.ReadyGate;
import io.weightloader.seed.SeedService;
import io.weightloader.seed.registry.Chains;
import io.weightloader.seed.registry.Fingerprint;
import io.weightloader.seed.registry.Registries;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import io.weightloader.seed.registry.SourceRegistryContract;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * {@code source-strategy = chain} over a real etcd (issue 23; skipped, the reason printed, where etcd is not
 * installed): relays that know only the registry and the model id serve while they load, each listed not ready and
 * joined at the end of the chain, reading from the link before it; a relay whose link fails mid-load moves to a ready
 * source and still holds every byte right. The chain is read from etcd itself, the bytes compared with the
 * checkpoint's.
 */
class FleetChainTest extends EtcdFleetTest {
    private static final RankKey R0 = new RankKey(0, 0);

    private static String chain(String model) {
        return Fleet.registry(etcd.directory(), model) + """
                weight-loader { load-format = remote_instance
                  backends.transfer_engine { source-strategy = chain, bandwidth-limit = 100 KiB } }
                """;
    }

    private static SeedHost startRelay(String model) {
        try {
            return SeedHost.start(Fleet.config(chain(model)));
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    @Test
    void fourRelaysStartedAtOnceServeEachOtherWhileTheyLoadInOneChainEveryByteRight() throws Exception {
        Fleet fleet = new Fleet(dir);
        Path ckpt = fleet.checkpoint("ckpt", 9);
        String model = "test/chain-" + System.nanoTime();
        SourceRegistry view = closing(Registries.open(Fleet.config(Fleet.registry(etcd.directory(), model))));
        SeedHost root = closing(SeedHost.start(Fleet.config(Fleet.registry(etcd.directory(), model)
                + "weight-loader.model-path = \"" + ckpt + "\"")));
        String rootAddress = "127.0.0.1:" + root.service().port();

        ExecutorService pool = Executors.newFixedThreadPool(4);
        List<CompletableFuture<SeedHost>> starting = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            starting.add(CompletableFuture.supplyAsync(() -> startRelay(model), pool));
        }
        Map<String, String> readFrom = new LinkedHashMap<>();
        try {
            for (CompletableFuture<SeedHost> f : starting) {
                SeedHost relay = closing(f.get(120, TimeUnit.SECONDS));
                relay.held().values().forEach(h -> fleet.assertBytesOf(ckpt, h));
                readFrom.put(relay.relayAddress().orElseThrow(), relay.reports().get(0).source());
            }
        } finally {
            pool.shutdownNow();
        }
        Chains.Chain c = view.chain(model, R0);
        System.out.println("FleetChainTest: chain " + c + "; reports " + readFrom);
        assertThat(c.after()).containsOnlyKeys(readFrom.keySet());
        // one chain: from its end back to its first link, every relay once
        List<String> walked = new ArrayList<>();
        for (String at = c.end().orElseThrow(); !at.isEmpty(); at = c.after().get(at)) {
            assertThat(walked).doesNotContain(at);
            walked.add(at);
        }
        assertThat(walked).hasSize(4);
        for (Map.Entry<String, String> e : readFrom.entrySet()) {
            String after = c.after().get(e.getKey());
            assertThat(e.getValue()).contains("(chain)").contains("seed " + (after.isEmpty() ? rootAddress : after)
                    + " rank");
        }
        assertThat(readFrom.values()).as("links read from relays that were still loading")
                .anyMatch(s -> s.contains("(while it loaded)"));
        // every relay is listed ready once loaded, in its place in the chain
        SourceRegistryContract.await("every relay listed ready", Duration.ofSeconds(10), () -> view.listAll(model, R0)
                .stream().filter(SourceEntry::ready).count() == 5);

        // a client that knows only the model id reads from the chain's end
        LoadReport client = fleet.load(chain(model).replace("bandwidth-limit = 100 KiB", "bandwidth-limit = 0"), ckpt);
        assertThat(client.source()).contains("seed " + c.end().orElseThrow() + " rank").contains("(chain)");
    }

    @Test
    void aRelayWhoseLinkFailsMidLoadReadsFromAReadySourceAndStillHoldsEveryByteRight() throws Exception {
        Fleet fleet = new Fleet(dir);
        Path ckpt = fleet.checkpoint("ckpt", 10);
        String model = "test/chain-fail-" + System.nanoTime();
        SourceRegistry view = closing(Registries.open(Fleet.config(Fleet.registry(etcd.directory(), model))));
        SeedHost root = closing(SeedHost.start(Fleet.config(Fleet.registry(etcd.directory(), model)
                + "weight-loader.model-path = \"" + ckpt + "\"")));
        String rootAddress = "127.0.0.1:" + root.service().port();
        Manifest rm = root.service().manifest(R0).orElseThrow();

        // the link before it: a relay serving while it loads that holds the first half of the tensors only, then fails
        TensorArena held = closing(TensorArena.allocate(Device.CPU, rm.specs()));
        ReadyGate gate = closing(ReadyGate.of(held.destinations(), rm.entriesByName()));
        Config c = Fleet.config("weight-loader {}");
        SeedService link = closing(Seeds.bind(new BackendContext(WeightLoaderSettings.from(c), c),
                BackendRegistry.discover(), List.of(Device.CPU)));
        link.publishRelay(R0, held.destinations(), rm, gate);
        link.start();
        List<TensorDestination> half = held.destinations().subList(0, held.destinations().size() / 2);
        for (TensorDestination d : half) {
            d.region().byteBuffer(0, (int) d.byteSize()).put(fleet.written.get(ckpt).get(d.spec().name()));
            gate.arrived(d.region().address(), d.byteSize());
        }
        String linkAddress = "127.0.0.1:" + link.port();
        SourceRegistry.Registration listed = view.register(new SourceEntry(linkAddress, model, Fingerprint.of(rm),
                false));
        assertThat(listed.joinChain()).isEmpty();

        CompletableFuture<SeedHost> relay = CompletableFuture.supplyAsync(() -> startRelay(model));
        SourceRegistryContract.await("the relay to join the chain after its link", Duration.ofSeconds(60),
                () -> view.chain(model, R0).after().containsValue(linkAddress));
        gate.fail("its own source died");
        SeedHost r = closing(relay.get(120, TimeUnit.SECONDS));
        r.held().values().forEach(h -> fleet.assertBytesOf(ckpt, h));
        assertThat(r.reports().get(0).source()).contains("(after 1 failed: " + linkAddress + ")")
                .contains("seed " + rootAddress + " rank");
    }
}
