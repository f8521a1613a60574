package io.weightloader.backend.te;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.TensorSpec;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.HostMemory;
import io.weightloader.testing.SeedProcess;
import io.weightloader.testing.TestWeights;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A seed frozen (SIGSTOP: alive, connections open, nothing answers) at each step of a load: the load must fail within
 * {@code transfer-timeout} plus one {@code request-timeout}, its documented deadline, whatever retries are configured.
 * Before, a load frozen mid-transfer asked the frozen seed for its generation with every retry after the transfer
 * deadline: 15 s of transfer-timeout became 37 s.
 */
class FrozenSeedDeadlineTest {
    static final String TOKEN = "tok";
    static final double TRANSFER_S = 3;
    static final double REQUEST_S = 1;
    /** Scheduling and JVM slack on a 2-core machine, beyond the documented deadline. */
    static final double SLACK_S = 3;

    static String settings() {
        return "weight-loader.remote-instance { transfer-timeout = " + (int) TRANSFER_S + "s, request-timeout = "
                + (int) REQUEST_S + "s, retries = 3, connect-timeout = 1s }";
    }

    static void signal(Process p, String sig) throws Exception {
        Process k = new ProcessBuilder("kill", "-" + sig, Long.toString(p.pid())).inheritIO().start();
        assertThat(k.waitFor(10, TimeUnit.SECONDS) && k.exitValue() == 0).as("kill -" + sig).isTrue();
    }

    @Test
    @org.junit.jupiter.api.Timeout(60) // before, the client waited for ever for the frozen engine's hello answer
    void aSeedFrozenBeforeTheLoadFailsItWithinItsDeadline() throws Exception {
        List<TensorSpec> specs = TestWeights.specs(2, 1 << 20);
        try (SeedProcess seed = new SeedProcess(2, 1 << 20, 1, TOKEN);
             WeightLoader loader = WeightLoader.open(TwoProcessTransferTest.client(seed.port, TOKEN, settings()));
             HostMemory arena = TestWeights.arena(specs)) {
            loader.available(); // the manifest is held; the load still checks the generation at its end
            signal(seed.process, "STOP");
            try {
                long t0 = System.nanoTime();
                assertThatThrownBy(() -> TwoProcessTransferTest.loadAll(loader, specs, arena))
                        .hasMessageContaining("127.0.0.1");
                double secs = (System.nanoTime() - t0) / 1e9;
                System.out.printf("FrozenSeedDeadlineTest: frozen before the load: failed after %.2f s (deadline %.0f s)%n",
                        secs, TRANSFER_S + REQUEST_S);
                assertThat(secs).isLessThan(TRANSFER_S + REQUEST_S + SLACK_S);
            } finally {
                signal(seed.process, "CONT");
            }
        }
    }

    @Test
    @org.junit.jupiter.api.Timeout(60) // before, the client waited for ever for the frozen engine's hello answer
    void aSeedFrozenMidTransferFailsTheLoadWithinItsDeadline() throws Exception {
        // 64 MiB capped at 16 MiB/s: the transfer takes about 4 s, so the seed freezes in the middle of it
        List<TensorSpec> specs = TestWeights.specs(8, 8 << 20);
        try (SeedProcess seed = new SeedProcess(8, 8 << 20, 2, TOKEN);
             WeightLoader loader = WeightLoader.open(TwoProcessTransferTest.client(seed.port, TOKEN, settings(),
                     "weight-loader.backends.transfer_engine { bandwidth-limit = 16 MiB, slice-size = 1 MiB }"));
             HostMemory arena = TestWeights.arena(specs)) {
            java.util.concurrent.CountDownLatch moving = new java.util.concurrent.CountDownLatch(1);
            Thread freezer = new Thread(() -> {
                try {
                    // mid-transfer: once its first bytes arrived (a load that fails first never gets here)
                    if (moving.await(60, TimeUnit.SECONDS)) {
                        signal(seed.process, "STOP");
                    }
                } catch (InterruptedException e) {
                    // the load ended first
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            long t0 = System.nanoTime();
            freezer.start();
            try {
                assertThatThrownBy(() -> TwoProcessTransferTest.loadAll(loader, specs, arena, moving))
                        .hasMessageContaining("127.0.0.1");
                assertThat(moving.getCount()).as("the seed froze after the first bytes arrived").isZero();
                double secs = (System.nanoTime() - t0) / 1e9;
                System.out.printf("FrozenSeedDeadlineTest: frozen mid-transfer: failed after %.2f s (deadline %.0f s)%n",
                        secs, TRANSFER_S + REQUEST_S);
                assertThat(secs).isLessThan(TRANSFER_S + REQUEST_S + SLACK_S);
            } finally {
                freezer.interrupt();
                freezer.join();
                signal(seed.process, "CONT");
            }
        }
    }
}
