package io.weightloader.backend.te.builtin;

import static org.assertj.core.api.Assertions.assertThat;

import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.memory.HostMemory;
import io.weightloader.seed.ReadyGate;
import io.weightloader.testing.TestWeights;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.RepeatedTest;
import org.junit.jupiter.api.Timeout;

/**
 * A client dropping a stalled source abandons its batches one after the other. With one connection per peer, a batch
 * submitted second waits for the connection's lock, which the first batch's read holds while the seed answers
 * nothing: abandoning the second batch must not wait for the first's read. It used to wait its full 10 s and report
 * that it could not stop its reads, which failed a multi-source load that would otherwise have moved the source's
 * segments elsewhere (seen once in CI, MultiSourceLoadTest's stalled relay).
 */
class AbandonedBatchTest {
    @RepeatedTest(3)
    @Timeout(60)
    void aBatchWaitingBehindAnotherBatchsStalledReadIsAbandonedAtOnce() throws Exception {
        List<TensorSpec> specs = TestWeights.specs(2, 1 << 16);
        try (HostMemory weights = TestWeights.arena(specs);
             HostMemory dst = HostMemory.allocate(1 << 18);
             BuiltinEngine seed = BuiltinEngine.seed("127.0.0.1", 0, "127.0.0.1", "t", 8, null, false);
             BuiltinEngine client = BuiltinEngine.client("t", 1, Duration.ofSeconds(5))) {
            List<TensorDestination> held = TestWeights.held(weights, specs, 1);
            ReadyGate gate = ReadyGate.of(held, Map.of()); // nothing ever arrives: the seed answers no read
            seed.gate(gate);
            seed.registerRemoteReadable(List.of(weights));
            try (OneSidedEngine.Peer peer = client.open(seed.sessionId())) {
                long remote = held.get(0).region().address();
                OneSidedEngine.Batch first = peer.submit(List.of(new OneSidedEngine.ReadOp(dst.address(), remote,
                        4096)));
                OneSidedEngine.Batch second = peer.submit(List.of(new OneSidedEngine.ReadOp(dst.address() + 8192,
                        remote + 8192, 4096)));
                long t0 = System.nanoTime();
                // the second first: its read usually still waits for the connection the first one's read holds
                assertThat(second.release()).as("the second batch's reads stopped").isTrue();
                assertThat(first.release()).as("the first batch's reads stopped").isTrue();
                double secs = (System.nanoTime() - t0) / 1e9;
                assertThat(secs).as("abandoned without waiting out the 10 s limit").isLessThan(8.0);
                assertThat(first.status(0).isFinal()).isTrue();
                assertThat(second.status(0).isFinal()).isTrue();
            } finally {
                gate.fail("the test is over");
                gate.close();
            }
        }
    }
}
