package io.weightloader.seed;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.DType;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSpec;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.HostMemory;
import io.weightloader.testing.TestWeights;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** A pipelined relay serves a block once it arrived and matched the root's checksum, never before. */
class ReadyGateTest {
    private static final TensorSpec W = TensorSpec.of("w", DType.F32, 64, 16); // 16 blocks of 4 rows

    private static Manifest.Entry rootEntry(HostMemory truth) {
        Manifest.Blocks blocks = BlockChecksums.of(new TensorDestination(W, truth), null);
        return new Manifest.Entry("w", "F32", W.shape(), W.byteSize(), 1, Checksums.sha256(truth, W.byteSize()), null,
                blocks);
    }

    @Test
    void aBlockIsServedOnceItArrivedAndMatchedAndNotBefore() throws Exception {
        try (HostMemory truth = HostMemory.allocate(W.byteSize()); HostMemory relay = HostMemory.allocate(W.byteSize());
             ReadyGate gate = ReadyGate.of(List.of(new TensorDestination(W, relay)),
                     Map.of("w", rootEntry(fill(truth))))) {
            long block = W.byteSize() / 16;
            // nothing arrived: a read waits and times out
            assertThat(gate.awaitReady(relay.address(), 8, System.nanoTime() + 20_000_000L)).isFalse();
            // block 0 arrives in two parts
            copy(truth, relay, 0, block);
            gate.arrived(relay.address(), block / 2);
            assertThat(gate.awaitReady(relay.address(), 8, System.nanoTime() + 20_000_000L)).isFalse();
            gate.arrived(relay.address() + block / 2, block / 2);
            assertThat(gate.awaitReady(relay.address(), block, System.nanoTime() + 5_000_000_000L)).isTrue();
            // a read spanning blocks 0 and 1 waits for block 1
            assertThat(gate.awaitReady(relay.address(), block + 1, System.nanoTime() + 20_000_000L)).isFalse();
            copy(truth, relay, block, W.byteSize() - block);
            gate.arrived(relay.address() + block, W.byteSize() - block);
            gate.awaitAll(System.nanoTime() + 5_000_000_000L);
            assertThat(gate.progress()).isEqualTo("16/16");
        }
    }

    @Test
    void aBlockThatDoesNotMatchTheRootFailsTheRelayAndItsReaders() throws Exception {
        try (HostMemory truth = HostMemory.allocate(W.byteSize()); HostMemory relay = HostMemory.allocate(W.byteSize());
             ReadyGate gate = ReadyGate.of(List.of(new TensorDestination(W, relay)),
                     Map.of("w", rootEntry(fill(truth))))) {
            copy(truth, relay, 0, W.byteSize());
            relay.byteBuffer(5, 1).put(0, (byte) ~relay.byteBuffer(5, 1).get(0));
            gate.arrived(relay.address(), W.byteSize());
            assertThatThrownBy(() -> gate.awaitAll(System.nanoTime() + 5_000_000_000L))
                    .hasMessageContaining("tensor 'w'").hasMessageContaining("the root published");
            assertThatThrownBy(() -> gate.awaitReady(relay.address() + W.byteSize() - 4, 4,
                    System.nanoTime() + 5_000_000_000L)).hasMessageContaining("this relay's own load failed");
        }
    }

    @Test
    void bytesThatArriveAgainCountOnceSoABlockIsCheckedOnlyWhenEveryByteArrived() throws Exception {
        try (HostMemory truth = HostMemory.allocate(W.byteSize()); HostMemory relay = HostMemory.allocate(W.byteSize());
             ReadyGate gate = ReadyGate.of(List.of(new TensorDestination(W, relay)),
                     Map.of("w", rootEntry(fill(truth))))) {
            long block = W.byteSize() / 16;
            // the first half of block 0 arrives from one source, which then fails; the load starts again elsewhere
            copy(truth, relay, 0, block / 2);
            gate.arrived(relay.address(), block / 2);
            gate.arrived(relay.address(), block / 2); // the same half again: still half
            assertThat(gate.awaitReady(relay.address(), 8, System.nanoTime() + 20_000_000L)).isFalse();
            gate.arrived(relay.address() + block / 4, block / 2); // overlaps: a quarter more
            assertThat(gate.awaitReady(relay.address(), 8, System.nanoTime() + 20_000_000L)).isFalse();
            copy(truth, relay, block / 2, W.byteSize() - block / 2);
            gate.arrived(relay.address() + block * 3 / 4, block / 4); // the last quarter: block 0 complete
            assertThat(gate.awaitReady(relay.address(), block, System.nanoTime() + 5_000_000_000L)).isTrue();
            // everything again from the start (the new source), then the rest once: all checked, none twice
            gate.arrived(relay.address(), W.byteSize());
            gate.awaitAll(System.nanoTime() + 5_000_000_000L);
            assertThat(gate.progress()).isEqualTo("16/16");
        }
    }

    private static HostMemory fill(HostMemory m) {
        TestWeights.fill(W, m, 3);
        return m;
    }

    private static void copy(HostMemory from, HostMemory to, long off, long len) {
        to.byteBuffer(off, (int) len).put(from.byteBuffer(off, (int) len));
    }
}
