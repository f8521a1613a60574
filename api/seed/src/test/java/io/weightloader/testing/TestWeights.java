package io.weightloader.testing;

import io.weightloader.api.TensorDestination;
import io.weightloader.memory.Checksums;
import io.weightloader.api.DType;
import io.weightloader.memory.HostMemory;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.TensorSpec;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/** Deterministic test weights: seed and client JVMs derive the same bytes from the same numbers. */
public final class TestWeights {
    private TestWeights() {
    }

    /** {@code n} BF16 tensors of {@code bytesEach} bytes, plus a scalar and an empty tensor. */
    public static List<TensorSpec> specs(int n, long bytesEach) {
        List<TensorSpec> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(TensorSpec.of("model.layers." + i + ".weight", DType.BF16, bytesEach / 2 / 64, 64));
        }
        out.add(TensorSpec.of("model.scale", DType.F32));
        out.add(TensorSpec.of("model.empty", DType.I64, 0, 3));
        return out;
    }

    public static void fill(TensorSpec spec, MemoryRegion region, long seed) {
        long bytes = spec.byteSize();
        SplittableRandom r = new SplittableRandom(seed ^ spec.name().hashCode());
        for (long off = 0; off < bytes; off += 1 << 20) {
            int n = (int) Math.min(1 << 20, bytes - off);
            ByteBuffer b = region.byteBuffer(off, n).order(ByteOrder.LITTLE_ENDIAN);
            while (b.remaining() >= 8) {
                b.putLong(r.nextLong());
            }
            while (b.hasRemaining()) {
                b.put((byte) r.nextInt());
            }
        }
    }

    public static String sha256(TensorSpec spec, long seed) {
        try (HostMemory m = HostMemory.allocate(spec.byteSize())) {
            fill(spec, m, seed);
            return Checksums.sha256(m, spec.byteSize());
        }
    }

    /** One arena holding every tensor (64-byte aligned), filled; the caller closes the arena. */
    public static HostMemory arena(List<TensorSpec> specs) {
        long total = 0;
        for (TensorSpec s : specs) {
            total += align(s.byteSize());
        }
        return HostMemory.allocate(Math.max(total, 64));
    }

    public static List<MemoryRegion> slices(HostMemory arena, List<TensorSpec> specs) {
        List<MemoryRegion> out = new ArrayList<>();
        long off = 0;
        for (TensorSpec s : specs) {
            out.add(arena.slice(off, s.byteSize()));
            off += align(s.byteSize());
        }
        return out;
    }

    public static List<TensorDestination> held(HostMemory arena, List<TensorSpec> specs, long seed) {
        List<TensorDestination> out = new ArrayList<>();
        List<MemoryRegion> regions = slices(arena, specs);
        for (int i = 0; i < specs.size(); i++) {
            fill(specs.get(i), regions.get(i), seed);
            out.add(new TensorDestination(specs.get(i), regions.get(i)));
        }
        return out;
    }

    public static long align(long n) {
        return (n + 63) & ~63L;
    }
}
