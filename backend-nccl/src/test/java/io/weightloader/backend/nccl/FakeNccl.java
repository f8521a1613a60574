package io.weightloader.backend.nccl;

import io.weightloader.api.Device;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/** Records what each side asked NCCL to do; optionally holds the seed's transfer until released. */
final class FakeNccl implements NcclRuntime {
    record Call(Device device, byte[] id, int rank, List<NcclOp> ops, Primitive primitive) {
    }

    final List<Call> calls = new CopyOnWriteArrayList<>();
    final List<Optional<String>> bootstraps = new CopyOnWriteArrayList<>();
    volatile CountDownLatch hold;
    /** How long a held transfer goes on once interrupted (as an abort takes time): 0, at once. */
    volatile long lingerNanos;
    /** Transfers that have returned. */
    final java.util.concurrent.atomic.AtomicInteger ended = new java.util.concurrent.atomic.AtomicInteger();
    private int ids;

    @Override
    public void require() {
    }

    @Override
    public synchronized byte[] newUniqueId(Optional<String> bootstrap) {
        bootstraps.add(bootstrap);
        byte[] id = new byte[JavaCppNccl.UNIQUE_ID_BYTES];
        id[0] = (byte) ++ids;
        return id;
    }

    @Override
    public Timings transfer(Device device, byte[] uniqueId, int rank, List<NcclOp> ops, Primitive primitive,
                            long initDeadline, long transferDeadline) {
        calls.add(new Call(device, uniqueId, rank, List.copyOf(ops), primitive));
        try {
            CountDownLatch h = hold;
            if (rank == 0 && h != null) {
                try {
                    h.await(30, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    long end = System.nanoTime() + lingerNanos;
                    while (System.nanoTime() < end) {
                        java.util.concurrent.locks.LockSupport.parkNanos(end - System.nanoTime());
                    }
                    Thread.currentThread().interrupt();
                }
            }
            return new Timings(0, 0);
        } finally {
            ended.incrementAndGet();
        }
    }
}
