package io.weightloader.backend.te.mooncake;

import io.weightloader.memory.HostMemory;
import io.weightloader.api.MemoryRegion;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.RawReads;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Raw batched READ throughput of Mooncake's tcp transport on loopback: two engines in one JVM, the client reads
 * the seed's registered host memory in one batch of {@code total / request} reads, best of 3 (after a warm-up).
 *
 * <p>Usage: {@code MooncakeRawReadBench <libtransfer_engine.so> [totalBytes=1GiB] [requestBytes=64MiB]}.
 */
public final class MooncakeRawReadBench {
    private MooncakeRawReadBench() {
    }

    public static void main(String[] args) {
        if (args.length < 1) {
            System.err.println("usage: MooncakeRawReadBench <libtransfer_engine.so> [totalBytes] [requestBytes]");
            return;
        }
        long total = args.length > 1 ? Long.parseLong(args[1]) : 1L << 30;
        long request = args.length > 2 ? Long.parseLong(args[2]) : 64L << 20;
        int ops = (int) ((total + request - 1) / request);
        if (ops > MooncakeEngine.MAX_BATCH_SIZE) {
            throw new IllegalArgumentException(ops + " requests exceed one batch (" + MooncakeEngine.MAX_BATCH_SIZE
                    + ")");
        }
        MooncakeLibrary lib = MooncakeLibrary.load(args[0]);
        try (HostMemory src = HostMemory.allocate(total);
                HostMemory dst = HostMemory.allocate(total);
                MooncakeEngine seed = MooncakeEngine.create(lib, "127.0.0.1", "tcp", null);
                MooncakeEngine client = MooncakeEngine.create(lib, "127.0.0.1", "tcp", null)) {
            src.zero();
            dst.zero(); // fault the pages in before timing
            seed.registerRemoteReadable(List.of(src));
            client.registerLocal(List.of(dst));
            try (OneSidedEngine.Peer peer = client.open(seed.sessionId())) {
                List<OneSidedEngine.ReadOp> list = new ArrayList<>();
                for (long off = 0; off < total; off += request) {
                    long len = Math.min(request, total - off);
                    list.add(new OneSidedEngine.ReadOp(dst.address() + off, src.address() + off, len));
                }
                double best = 0;
                for (int round = 0; round < 4; round++) {
                    long t0 = System.nanoTime();
                    RawReads.readAll(peer, list, MooncakeEngine.MAX_BATCH_SIZE);
                    double secs = (System.nanoTime() - t0) / 1e9;
                    double gbps = total / secs / 1e9;
                    System.out.printf(Locale.ROOT, "%s %d x %d bytes: %.3f s, %.2f GB/s%n", round == 0
                            ? "warm-up" : "round " + round, ops, request, secs, gbps);
                    if (round > 0) {
                        best = Math.max(best, gbps);
                    }
                }
                System.out.printf(Locale.ROOT, "best of 3: %.2f GB/s (%.2f GiB/s)%n", best,
                        best * 1e9 / (1L << 30));
            }
            client.unregisterLocal(List.<MemoryRegion>of(dst));
        }
    }
}
