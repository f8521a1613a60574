package io.weightloader.backend.te.mooncake;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.memory.HostMemory;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.OneSidedEngine.Batch;
import io.weightloader.backend.te.engine.OneSidedEngine.OpState;
import io.weightloader.backend.te.engine.OneSidedEngine.OpStatus;
import io.weightloader.backend.te.engine.OneSidedEngine.Peer;
import io.weightloader.backend.te.engine.OneSidedEngine.ReadOp;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.Timeout;

/** Two Mooncake tcp engines in one JVM on loopback. Runs only with {@code WEIGHTLOADER_MOONCAKE_LIB} set. */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class MooncakeEngineTest {
    private static final long SIZE = 64L << 20;
    private static final String NEEDS = "needs Mooncake: set WEIGHTLOADER_MOONCAKE_LIB=/path/libtransfer_engine.so";

    private MooncakeEngine seed;
    private MooncakeEngine client;
    private HostMemory weights;

    @BeforeAll
    void startEngines() {
        String lib = System.getenv(MooncakeLibrary.ENV_VAR);
        if (lib == null || lib.isBlank()) {
            System.err.println("SKIPPED MooncakeEngineTest (needs Mooncake's libtransfer_engine.so): set "
                    + "WEIGHTLOADER_MOONCAKE_LIB=/path/libtransfer_engine.so");
            return; // each test is then reported as skipped by requireMooncake()
        }
        MooncakeLibrary library = MooncakeLibrary.load(null);
        seed = MooncakeEngine.create(library, "127.0.0.1", "tcp", null);
        client = MooncakeEngine.create(library, "127.0.0.1", "tcp", null);
        weights = HostMemory.allocate(SIZE);
        ByteBuffer bb = weights.byteBuffer(0, (int) SIZE).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < SIZE / 8; i++) {
            bb.putLong(i * 8, i * 0x9E3779B97F4A7C15L + 17);
        }
        seed.registerRemoteReadable(List.of(weights));
    }

    @BeforeEach
    void requireMooncake() {
        Assumptions.assumeTrue(seed != null, NEEDS);
    }

    @AfterAll
    void stopEngines() {
        if (client != null) {
            client.close();
            client.close(); // safe twice
        }
        if (seed != null) {
            seed.close();
        }
        if (weights != null) {
            weights.close();
        }
    }

    @Test
    void namesAndSession() {
        assertThat(seed.name()).isEqualTo("mooncake-tcp");
        assertThat(seed.sessionId()).startsWith("127.0.0.1:");
        assertThat(seed.sessionId()).isNotEqualTo(client.sessionId());
    }

    @Test
    void clientReadsTheSeedsMemoryInFourOps() {
        try (HostMemory dst = HostMemory.allocate(SIZE).zero(); Peer peer = client.open(seed.sessionId())) {
            client.registerLocal(List.of(dst));
            List<ReadOp> ops = new ArrayList<>();
            long piece = SIZE / 4;
            for (int i = 0; i < 4; i++) {
                ops.add(new ReadOp(dst.address() + i * piece, weights.address() + i * piece, piece));
            }
            Batch batch = peer.submit(ops);
            assertThat(batch.size()).isEqualTo(4);
            for (int i = 0; i < 4; i++) {
                assertThat(await(batch, i).state()).isEqualTo(OpState.COMPLETED);
            }
            assertThat(batch.release()).isTrue();
            assertThat(batch.release()).isTrue();
            assertThat(dst.byteBuffer(0, (int) SIZE).equals(weights.byteBuffer(0, (int) SIZE))).isTrue();
            client.unregisterLocal(List.of(dst));
        }
    }

    @Test
    void readOutsideTheRegisteredRangeFailsAndTheEngineStaysUsable() {
        try (HostMemory dst = HostMemory.allocate(1 << 20).zero(); Peer peer = client.open(seed.sessionId())) {
            long end = weights.address() + SIZE;
            List<ReadOp> ops = List.of(
                    new ReadOp(dst.address(), end, 4096),                   // past the end
                    new ReadOp(dst.address(), end - 2048, 4096),            // straddles the end
                    new ReadOp(dst.address(), 0, 4096));                    // relative offset, not an address
            try (Batch batch = peer.submit(ops)) {
                for (int i = 0; i < ops.size(); i++) {
                    OpStatus s = await(batch, i);
                    assertThat(s.state()).as("op %d", i).isEqualTo(OpState.FAILED);
                    assertThat(s.detail()).contains("FAILED").contains(seed.sessionId());
                }
            }
            try (Batch ok = peer.submit(List.of(new ReadOp(dst.address(), weights.address() + 8, 4096)))) {
                assertThat(await(ok, 0).state()).isEqualTo(OpState.COMPLETED);
                assertThat(dst.byteBuffer(0, 4096)).isEqualTo(weights.byteBuffer(8, 4096));
                assertThat(ok.release()).isTrue();
            }
        }
    }

    @Test
    void overlappingRegistrationIsRejectedWithTheMeaning() {
        MemoryRegion sub = weights.slice(4096, 4096);
        assertThatThrownBy(() -> seed.registerRemoteReadable(List.of(sub)))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining("registerLocalMemory")
                .hasMessageContaining("-7")
                .hasMessageContaining("overlapping region");
    }

    @Test
    void releaseWithPendingOpsLeaksInsteadOfFreeing() {
        try (HostMemory dst = HostMemory.allocate(SIZE); Peer peer = client.open(seed.sessionId())) {
            Batch batch = peer.submit(List.of(new ReadOp(dst.address(), weights.address(), SIZE)));
            // Nothing polled yet: Mooncake would answer "busy", so the batch must not be freed.
            assertThat(batch.release()).isFalse();
            assertThat(await(batch, 0).state()).isEqualTo(OpState.COMPLETED);
            assertThat(batch.release()).isTrue();
        }
    }

    @Test
    void openingAnUnknownSessionNamesIt() {
        assertThatThrownBy(() -> client.open("127.0.0.1:1"))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining("127.0.0.1:1");
    }

    @Test
    void batchLimits() {
        try (Peer peer = client.open(seed.sessionId())) {
            assertThat(peer.maxBatchSize()).isEqualTo(MooncakeEngine.MAX_BATCH_SIZE);
            assertThatThrownBy(() -> peer.submit(List.of())).isInstanceOf(IllegalArgumentException.class);
        }
    }

    private static OpStatus await(Batch batch, int index) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        OpStatus s;
        while (!(s = batch.status(index)).isFinal()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("op " + index + " still pending after 20 s");
            }
            LockSupport.parkNanos(50_000);
        }
        return s;
    }
}
