package io.weightloader.backend.te;

import static org.assertj.core.api.Assertions.assertThat;

import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.testing.SeedProcess;
import io.weightloader.testing.TestWeights;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * Peers that can reach a seed's ports but do not have its token must not be able to stop its clients: here 100
 * connections against the control plane and 100 against the built-in engine, half sending their request or hello a
 * byte at a time (one byte a second, forever: slowloris), half connecting and sending nothing, all reconnecting as
 * soon as they are cut. A client's load must still succeed, byte-exact; its time is printed beside an unattacked
 * load of the same seed in the same run (no time is asserted).
 */
class UnauthenticatedPeersTest {
    static final long SEED = 77;
    static final String TOKEN = "the-token";
    static final int PEERS_PER_PORT = 100;
    static final long ATTACK_LIMIT_MS = 90_000;

    @Test
    void slowAndIdlePeersWithoutTheTokenDoNotStopALoad() throws Exception {
        List<TensorSpec> specs = TestWeights.specs(8, 4 << 20);
        try (SeedProcess seed = new SeedProcess(8, 4 << 20, SEED, TOKEN)) {
            load(seed.port, specs); // warm-up: the first load pays for class loading and JIT
            double quiet = load(seed.port, specs);
            int enginePort = enginePort(seed.port);
            AtomicBoolean stop = new AtomicBoolean();
            AtomicInteger cuts = new AtomicInteger();
            AtomicInteger holding = new AtomicInteger();
            ExecutorService peers = Executors.newFixedThreadPool(2 * PEERS_PER_PORT);
            long attackEnds = System.currentTimeMillis() + ATTACK_LIMIT_MS;
            try {
                for (int i = 0; i < PEERS_PER_PORT; i++) {
                    boolean slow = i % 2 == 0;
                    peers.submit(() -> attack(seed.port, "GET /health HTTP/1.1\r\nHost: x\r\n", slow, stop, cuts,
                            holding, attackEnds));
                    // the engine's hello starts with its magic number; then nothing, or one byte a second
                    peers.submit(() -> attack(enginePort, "WLTE", slow, stop, cuts, holding, attackEnds));
                }
                // every peer connected and sent its opening (a count the peers keep, not a time)
                long until = System.nanoTime() + 60_000_000_000L;
                while (holding.get() < 2 * PEERS_PER_PORT) {
                    assertThat(System.nanoTime() < until).as("all %d peers connected within 60 s; %d did, %d cut",
                            2 * PEERS_PER_PORT, holding.get(), cuts.get()).isTrue();
                    Thread.sleep(20);
                }
                double attacked = load(seed.port, specs);
                System.out.printf("UnauthenticatedPeersTest: %d slow or idle peers without the token on each port;"
                                + " load of %d MiB: %.3f s unattacked, %.3f s under attack; peers cut so far: %d%n",
                        PEERS_PER_PORT, specs.size() * 4, quiet, attacked, cuts.get());
            } finally {
                stop.set(true);
                peers.shutdownNow();
                assertThat(peers.awaitTermination(30, TimeUnit.SECONDS)).as("attackers stopped").isTrue();
            }
        }
    }

    /** The seed's engine port, from its manifest. */
    static int enginePort(int controlPort) {
        String s = new io.weightloader.seed.SeedClient("127.0.0.1", controlPort, java.util.Optional.of(TOKEN),
                java.time.Duration.ofSeconds(2), java.time.Duration.ofSeconds(5), 1)
                .manifest(new io.weightloader.api.config.RankKey(0, 0)).session();
        return Integer.parseInt(s.substring(s.lastIndexOf(':') + 1));
    }

    /** One byte-exact load; its seconds. */
    static double load(int port, List<TensorSpec> specs) {
        try (WeightLoader loader = WeightLoader.open(TwoProcessTransferTest.client(port, TOKEN));
             HostMemory arena = TestWeights.arena(specs)) {
            long t0 = System.nanoTime();
            LoadReport r = TwoProcessTransferTest.loadAll(loader, specs, arena);
            double secs = (System.nanoTime() - t0) / 1e9;
            for (TensorReport t : r.tensors()) {
                TensorSpec s = specs.stream().filter(x -> x.name().equals(t.name())).findFirst().orElseThrow();
                assertThat(t.sha256()).as(t.name()).isEqualTo(TestWeights.sha256(s, SEED));
            }
            return secs;
        }
    }

    /**
     * One peer: connects, sends {@code opening}, then one byte a second (slow) or nothing; reconnects when cut.
     * {@code holding} counts it up after its first connection and opening.
     */
    static void attack(int port, String opening, boolean slow, AtomicBoolean stop, AtomicInteger cuts,
                       AtomicInteger holding, long endsAt) {
        boolean counted = false;
        byte[] first = opening.getBytes(StandardCharsets.US_ASCII);
        for (int attempt = 0; attempt < 1000 && !stop.get() && System.currentTimeMillis() < endsAt; attempt++) {
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", port), 2000);
                OutputStream out = s.getOutputStream();
                out.write(first, 0, slow ? 1 : first.length);
                out.flush();
                if (!counted) {
                    counted = true;
                    holding.incrementAndGet();
                }
                for (int k = slow ? 1 : first.length; !stop.get() && System.currentTimeMillis() < endsAt; k++) {
                    Thread.sleep(1000);
                    if (slow) {
                        out.write(k < first.length ? first[k] : 'x');
                        out.flush();
                    } else if (s.getInputStream().available() < 0) {
                        break;
                    } else {
                        // an idle peer learns it was cut only when the seed closes: probe with a read
                        s.setSoTimeout(1);
                        try {
                            if (s.getInputStream().read() < 0) {
                                break;
                            }
                        } catch (java.net.SocketTimeoutException stillOpen) {
                            // still held
                        }
                    }
                }
                cuts.incrementAndGet();
            } catch (IOException e) {
                cuts.incrementAndGet();
            } catch (InterruptedException e) {
                return;
            }
        }
    }

    @Test
    void aPeerDrippingItsHelloIsCutAtTheHelloDeadlineHoweverOftenItSends() throws Exception {
        try (io.weightloader.backend.te.builtin.BuiltinEngine engine = io.weightloader.backend.te.builtin.BuiltinEngine
                .seed("127.0.0.1", 0, "127.0.0.1", TOKEN, 64);
             Socket s = new Socket()) {
            String session = engine.sessionId();
            s.connect(new InetSocketAddress("127.0.0.1", Integer.parseInt(session.substring(session.indexOf(':') + 1))));
            s.setSoTimeout(500);
            long t0 = System.nanoTime();
            boolean cut = false;
            // a well-formed hello with a wrong token (as a peer without the token would send), one byte every 0.5 s;
            // each read's timeout was 10 s before, so such a peer held its slot for ever
            java.nio.ByteBuffer hello = java.nio.ByteBuffer.allocate(8 + 40).putInt(0x574C5445).putShort((short) 1)
                    .putShort((short) 40).put(new byte[40]);
            for (int i = 0; i < hello.capacity() && !cut; i++) {
                try {
                    s.getOutputStream().write(hello.get(i));
                    cut = s.getInputStream().read() < 0;
                } catch (java.net.SocketTimeoutException stillOpen) {
                    // not cut yet
                } catch (IOException reset) {
                    cut = true;
                }
            }
            double secs = (System.nanoTime() - t0) / 1e9;
            assertThat(cut).as("cut within 20 s of sending a byte every 0.5 s").isTrue();
            System.out.printf("UnauthenticatedPeersTest: a dripping hello was cut after %.1f s (deadline %s)%n", secs,
                    "3 s");
        }
    }
}
