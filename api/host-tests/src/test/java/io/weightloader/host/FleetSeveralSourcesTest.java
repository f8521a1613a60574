package io.weightloader.host;

import static org.assertj.core.api.Assertions.assertThat;

import com.typesafe.config.Config;
import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.ProgressListener;
import io.weightloader.api.SourceReport;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.memory.TensorArena;
import io.weightloader.seed.Manifest;
import io.weightloader.seed.SeedService;
import io.weightloader.seed.registry.Fingerprint;
import io.weightloader.seed.registry.Registries;
import io.weightloader.seed.registry.SourceEntry;
import io.weightloader.seed.registry.SourceRegistry;
import io.weightloader.testing.Slicing;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A registry client that reads from several sources at once ({@code backends.transfer_engine.sources = 3}) over a
 * root and two relays listed in a real etcd: every source delivers part of the bytes, every byte right; a relay stopped
 * mid-load (once a third of the bytes arrived, a progress callback) has its unfinished segments moved to the others;
 * a source that sends wrong bytes is dropped, named loudly with the registry, and what it sent read again elsewhere.
 */
class FleetSeveralSourcesTest extends EtcdFleetTest {
    /** About 22 MiB: many 1 MiB segments. */
    private static final List<TensorSpec> SPECS = Slicing.llama(4, 512, 256, 1024, 2048, DType.BF16);

    /** A root and two relays of {@code ckpt} registered under {@code model}; returns a client's settings. */
    private String fleet(Path ckpt, List<SeedHost> seeds, String model) throws Exception {
        String registry = Fleet.registry(etcd.directory(), model);
        seeds.add(closing(SeedHost.start(Fleet.config(registry + "weight-loader.model-path = \"" + ckpt + "\""))));
        for (int i = 0; i < 2; i++) {
            seeds.add(closing(SeedHost.start(Fleet.config(registry + "weight-loader.load-format = remote_instance"))));
        }
        return registry + "weight-loader.load-format = remote_instance\n"
                + "weight-loader.backends.transfer_engine { sources = 3, segment-size = 1 MiB }\n";
    }

    private static LoadReport load(Fleet fleet, Path ckpt, String hocon, ProgressListener listener) {
        try (WeightLoader loader = WeightLoader.open(Fleet.config(hocon));
             TensorArena arena = TensorArena.allocate(Device.CPU, loader.rankSpecs())) {
            LoadRequest request = loader.rankRequest(arena.destinations()).withProgress(listener);
            LoadReport report = loader.load(request);
            assertThat(report.totalBytes()).isEqualTo(request.totalBytes());
            fleet.assertBytesOf(ckpt, request.tensors());
            return report;
        }
    }

    private static SourceReport source(LoadReport r, SeedHost s) {
        return r.sources().stream().filter(x -> x.source().equals(address(s))).findFirst().orElseThrow(
                () -> new AssertionError("no source " + address(s) + " in " + r.source()));
    }

    @Test
    @Timeout(120)
    void aRegistryClientReadsFromTheRootAndTwoRelaysAtOnceEachDeliveringBytes() throws Exception {
        Fleet fleet = new Fleet(dir);
        Path ckpt = fleet.checkpoint("ckpt", 7, SPECS);
        List<SeedHost> seeds = new ArrayList<>();
        String model = "test/several-" + System.nanoTime();
        String client = fleet(ckpt, seeds, model);
        SourceRegistry view = closing(Registries.open(Fleet.config(Fleet.registry(etcd.directory(), model))));

        // star: no claims; tree: each source claimed while it is read from, every claim released after the load
        for (String strategy : List.of("star", "tree")) {
            LoadReport r = load(fleet, ckpt, client + "weight-loader.backends.transfer_engine {"
                    + " bandwidth-limit = 64 MiB, source-strategy = " + strategy + " }", ProgressListener.NONE);
            System.out.println("FleetSeveralSourcesTest: " + r.source());
            assertThat(r.source()).contains("from registry " + etcd.directory()).contains("3 sources");
            assertThat(r.sources()).as(r.source()).extracting(SourceReport::source)
                    .containsExactlyInAnyOrderElementsOf(seeds.stream().map(FleetSeveralSourcesTest::address).toList());
            for (SourceReport s : r.sources()) {
                assertThat(s.bytes()).as(s.source()).isPositive();
                assertThat(s.failure()).as(s.source()).isNull();
            }
            assertThat(r.sources().stream().mapToLong(SourceReport::bytes).sum()).isEqualTo(r.totalBytes());
            assertThat(view.assignments(model, new RankKey(0, 0))).as(strategy + ": no claim left").isEmpty();
        }
    }

    @Test
    @Timeout(120)
    void aRelayStoppedMidLoadHasItsSegmentsMovedAndTheLoadIsStillByteExact() throws Exception {
        Fleet fleet = new Fleet(dir);
        Path ckpt = fleet.checkpoint("ckpt", 8, SPECS);
        List<SeedHost> seeds = new ArrayList<>();
        String client = fleet(ckpt, seeds, "test/several-" + System.nanoTime());
        SeedHost victim = seeds.get(2);
        long total = SPECS.stream().mapToLong(TensorSpec::byteSize).sum();
        CountDownLatch third = new CountDownLatch(1);
        AtomicLong arrived = new AtomicLong();
        ProgressListener listener = new ProgressListener() {
            @Override
            public void onProgress(long bytesDone, long bytesTotal, int tensorsDone, int tensorsTotal) {
            }

            @Override
            public void onArrived(TensorDestination dest, long offset, long length) {
                if (arrived.addAndGet(length) >= total / 3) {
                    third.countDown();
                }
            }
        };
        Thread stopper = new Thread(() -> {
            try {
                if (third.await(120, TimeUnit.SECONDS)) {
                    victim.stop(Duration.ZERO); // out of the registry, its engine closes every connection it serves
                }
            } catch (InterruptedException e) {
                // the load ended first
            }
        });
        stopper.start();
        LoadReport r;
        try {
            // paced (about 22 MiB at 8 MiB/s), so the stop lands while every source still has work
            r = load(fleet, ckpt, client + "weight-loader.backends.transfer_engine.bandwidth-limit = 8 MiB", listener);
        } finally {
            stopper.interrupt();
            stopper.join();
        }
        System.out.println("FleetSeveralSourcesTest: " + r.source());
        assertThat(third.getCount()).as("stopped once a third of the bytes arrived").isZero();
        assertThat(r.sources()).as(r.source()).hasSizeGreaterThanOrEqualTo(3);
        SourceReport dead = source(r, victim);
        assertThat(dead.failure()).as(r.source()).isNotNull();
        assertThat(dead.moved()).as("segments moved from the stopped relay").isNotEmpty();
        assertThat(dead.bytes()).as("what it delivered before it stopped is kept").isPositive();
        for (SeedHost s : seeds.subList(0, 2)) {
            assertThat(source(r, s).failure()).as(r.source()).isNull();
            assertThat(source(r, s).bytes()).as(r.source()).isPositive();
        }
        assertThat(r.sources().stream().mapToLong(SourceReport::bytes).sum()).isEqualTo(total);
    }

    @Test
    @Timeout(120)
    void aSourceThatSendsWrongBytesIsDroppedNamedWithTheRegistryAndItsBytesReadAgainElsewhere() throws Exception {
        Fleet fleet = new Fleet(dir);
        Path ckpt = fleet.checkpoint("ckpt", 9, SPECS);
        String model = "test/several-liar-" + System.nanoTime();
        String registry = Fleet.registry(etcd.directory(), model);
        RankKey rank = new RankKey(0, 0);
        // the real weights' seed and a liar (the root's manifest over other bytes), listed by hand with its fingerprint
        SeedHost root = closing(SeedHost.start(Fleet.config("weight-loader.model-path = \"" + ckpt + "\"")));
        Manifest rootManifest = root.service().manifest(rank).orElseThrow();
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
        String liarAddress = "127.0.0.1:" + liar.port();
        SourceRegistry writer = closing(Registries.open(Fleet.config(registry)));
        Fingerprint f = Fingerprint.of(rootManifest);
        writer.register(new SourceEntry(address(root), model, f, true));
        writer.register(new SourceEntry(liarAddress, model, f, true));

        Fleet.Logged<LoadReport> ok = Fleet.logged(() -> load(fleet, ckpt, registry
                + "weight-loader.load-format = remote_instance\n"
                + "weight-loader.backends.transfer_engine { sources = 2, segment-size = 1 MiB }",
                ProgressListener.NONE));
        LoadReport r = ok.value();
        SourceReport lied = r.sources().stream().filter(x -> x.source().equals(liarAddress)).findFirst()
                .orElseThrow(() -> new AssertionError(r.source()));
        assertThat(lied.failure()).as(r.source()).startsWith("sent wrong bytes");
        assertThat(lied.bytes()).as("nothing it sent is kept").isZero();
        assertThat(source(r, root).bytes()).isEqualTo(r.totalBytes());
        assertThat(ok.err()).contains("WRONG BYTES: source " + liarAddress + " listed in registry "
                + etcd.directory() + " for model " + model);
    }
}
