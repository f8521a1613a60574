package io.weightloader.seed;

import io.weightloader.api.MemoryRegion;
import io.weightloader.api.SliceCopy;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.memory.Checksums;
import io.weightloader.memory.HostMemory;
import io.weightloader.memory.Parallel;
import io.weightloader.memory.cuda.DeviceCopies;
import io.weightloader.memory.cuda.PinnedMemory;
import java.nio.ByteBuffer;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.Callable;

/**
 * Block checksums: what a seed rank holds of a tensor, cut into equal blocks along one dimension (its slice's, or
 * dim 0 for a whole tensor), each hashed in C order. A client of another tp size reads whole blocks of some seed
 * ranks (a seed slice of length L in 16 blocks serves clients whose slices are multiples of L/16), so it can check
 * every byte it read against the seed without the seed hashing anything per client.
 */
public final class BlockChecksums {
    /** Blocks per held tensor, at most (fewer where the dimension does not divide). */
    public static final int MAX_BLOCKS = 16;
    private static final int CHUNK = 8 << 20;

    private BlockChecksums() {
    }

    /** The block dimension and count for what {@code d} holds, or null when it has no bytes or no dimension. */
    static int[] shape(TensorSpec held, TensorSlice slice) {
        if (held.shape().isEmpty() || held.byteSize() == 0) {
            return null;
        }
        int dim = slice != null ? slice.dim() : 0;
        long extent = held.shape().get(dim);
        int blocks = 1;
        for (int b = MAX_BLOCKS; b >= 1; b--) {
            if (extent % b == 0) {
                blocks = b;
                break;
            }
        }
        return new int[]{dim, blocks};
    }

    /** Block checksums of every tensor, on up to {@code threads} threads (null entries: nothing to hash). */
    public static List<Manifest.Blocks> of(List<TensorDestination> tensors, int threads) {
        int t = Math.max(1, Math.min(threads, tensors.size()));
        ThreadLocal<PinnedMemory> staging = new ThreadLocal<>();
        List<PinnedMemory> pinned = Collections.synchronizedList(new ArrayList<>());
        List<Callable<Manifest.Blocks>> tasks = new ArrayList<>();
        for (TensorDestination d : tensors) {
            tasks.add(() -> {
                PinnedMemory s = null;
                if (!d.region().device().isHost()) {
                    s = staging.get();
                    if (s == null) {
                        s = PinnedMemory.allocate(CHUNK);
                        staging.set(s);
                        pinned.add(s);
                    }
                }
                return of(d, s);
            });
        }
        try {
            return Parallel.of("weightloader-blocks", t, "block checksums failed", "interrupted while hashing")
                    .call(tasks);
        } finally {
            staging.remove(); // set on this thread when the tasks ran on it
            pinned.forEach(PinnedMemory::close);
        }
    }

    /** One pass over the held bytes in memory order, each byte fed to its block's digest. */
    static Manifest.Blocks of(TensorDestination d, PinnedMemory staging) {
        TensorSpec held = d.held();
        int[] shape = shape(held, d.slice());
        if (shape == null) {
            return null;
        }
        int dim = shape[0];
        int blocks = shape[1];
        long extent = held.shape().get(dim);
        long innerBits = held.dtype().bits();
        for (int j = dim + 1; j < held.shape().size(); j++) {
            innerBits *= held.shape().get(j);
        }
        if ((innerBits * (extent / blocks)) % 8 != 0) {
            return null; // packed elements: blocks would split bytes
        }
        long blockBytes = innerBits * (extent / blocks) / 8;
        long rowBytes = blockBytes * blocks;
        MessageDigest[] md = new MessageDigest[blocks];
        for (int i = 0; i < blocks; i++) {
            md[i] = Checksums.newSha256();
        }
        long total = held.byteSize();
        MemoryRegion region = d.region();
        long chunk = staging != null ? staging.length() : CHUNK;
        for (long pos = 0; pos < total; pos += chunk) {
            int n = (int) Math.min(chunk, total - pos);
            ByteBuffer view;
            if (staging != null) {
                DeviceCopies.copy(staging, 0, region, pos, n);
                view = staging.byteBuffer(0, n);
            } else {
                view = region.byteBuffer(pos, n);
            }
            int at = 0;
            while (at < n) {
                long x = pos + at;
                long inRow = x % rowBytes;
                int b = (int) (inRow / blockBytes);
                int m = (int) Math.min(blockBytes - inRow % blockBytes, n - at);
                md[b].update(view.slice(at, m));
                at += m;
            }
        }
        List<String> hex = new ArrayList<>(blocks);
        for (MessageDigest m : md) {
            hex.add(HexFormat.of().formatHex(m.digest()));
        }
        return new Manifest.Blocks(dim, hex);
    }

    /**
     * Checks what a client holding ({@code client}: its tensor, slice and memory, host memory) received from a seed
     * rank's {@code entry}: every block of the entry the client's holding shares with it must hash to the published
     * value.
     *
     * @return bytes checked; -1 when the entry has no block checksums, or the shared part does not consist of whole
     *         blocks (the caller decides whether that is acceptable)
     * @throws WeightLoaderException naming the tensor, the block and the source when a block differs
     */
    public static long verify(TensorDestination client, MemoryRegion clientHostBytes, Manifest.Entry entry,
                              String source) {
        Manifest.Blocks blocks = entry.blocks();
        if (blocks == null) {
            return -1;
        }
        TensorSpec full = client.spec();
        TensorSlice seedSlice = entry.slice();
        TensorSpec held = entry.held();
        int dim = blocks.dim();
        int n = blocks.sha256().size();
        long extent = held.shape().get(dim);
        long bl = extent / n;
        if (seedSlice != null && seedSlice.dim() != dim) {
            return -1; // blocks along another dimension than the slice's: not what this seed computes
        }
        // the shared box, in full coordinates, dimension by dimension
        int rank = full.shape().size();
        long seedStartOnDim = seedSlice != null && seedSlice.dim() == dim ? seedSlice.start() : 0;
        long lo = 0;
        long hi = 0;
        for (int j = 0; j < rank; j++) {
            long sLo = seedSlice != null && seedSlice.dim() == j ? seedSlice.start() : 0;
            long sHi = seedSlice != null && seedSlice.dim() == j ? seedSlice.start() + seedSlice.length()
                    : full.shape().get(j);
            TensorSlice c = client.slice();
            long cLo = c != null && c.dim() == j ? c.start() : 0;
            long cHi = c != null && c.dim() == j ? c.start() + c.length() : full.shape().get(j);
            long iLo = Math.max(sLo, cLo);
            long iHi = Math.min(sHi, cHi);
            if (iHi <= iLo) {
                return 0;
            }
            if (j == dim) {
                lo = iLo - seedStartOnDim;
                hi = iHi - seedStartOnDim;
            } else if (iLo != sLo || iHi != sHi) {
                return -1; // the client read part of every block
            }
        }
        if (lo % bl != 0 || hi % bl != 0) {
            return -1;
        }
        long checked = 0;
        for (long k = lo / bl; k < hi / bl; k++) {
            TensorSlice block = new TensorSlice(dim, seedStartOnDim + k * bl, bl);
            MessageDigest md = Checksums.newSha256();
            for (SliceCopy copy : SliceCopy.plan(full, client.slice(), block)) {
                for (long i = 0; i < copy.count(); i++) {
                    long from = copy.srcOffset() + i * copy.srcStride();
                    for (long off = 0; off < copy.length(); off += Integer.MAX_VALUE) {
                        int len = (int) Math.min(Integer.MAX_VALUE, copy.length() - off);
                        md.update(clientHostBytes.byteBuffer(from + off, len));
                    }
                    checked += copy.length();
                }
            }
            String got = HexFormat.of().formatHex(md.digest());
            String want = blocks.sha256().get((int) k);
            if (!got.equals(want)) {
                throw new WeightLoaderException("tensor '" + full.name() + "' read from " + source + ": block " + k
                        + " of " + n + " (dim " + dim + " [" + block.start() + ", " + (block.start() + bl) + ")) has"
                        + " SHA-256 " + got + " but the seed published " + want + "; nothing was loaded");
            }
        }
        return checked;
    }

    /** The client's bytes of {@code d} in host memory: the region itself, or a copy of a device region. */
    public static MemoryRegion hostView(TensorDestination d) {
        if (d.region().device().isHost()) {
            return d.bytes();
        }
        HostMemory copy = HostMemory.allocate(Math.max(1, d.byteSize()));
        DeviceCopies.copy(copy, 0, d.region(), 0, d.byteSize());
        return copy;
    }
}
