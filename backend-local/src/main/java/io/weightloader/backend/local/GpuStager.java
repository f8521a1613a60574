package io.weightloader.backend.local;

import io.weightloader.api.Device;
import io.weightloader.memory.cuda.Cuda;
import io.weightloader.memory.cuda.PinnedMemory;
import java.io.IOException;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cudart;

/**
 * Moves file bytes to one GPU through two pinned staging buffers: while the GPU copies one buffer
 * ({@code cudaMemcpyAsync} on the stager's own stream), the next chunk is read from disk into the other, so
 * disk and PCIe work at once. One stager is used by one thread at a time.
 *
 * <p>The buffers are small ({@code staging-size}, 2 MiB by default) because pinning host memory is slow: on an
 * H100 host it ran at about 1.4 GB/s. Stagers are pinned once per backend, from when it is made, so their size costs
 * pinned memory and the backend's setup rather than each load; with 16 threads on an H100 host 2 MiB reached 0.895 of
 * the raw pinned copy where 1 MiB reached 0.75 (docs/PERFORMANCE.md, 2026-12-06).
 */
final class GpuStager implements AutoCloseable {
    private final Device device;
    /** Staging buffers per stager: one filled by the reader while the GPU copies the other. */
    static final int BUFFERS = 2;
    /** The buffers, back to back in one pinned allocation (one pinning call per stager, not one per buffer). */
    private PinnedMemory pinned;
    private final CUevent_st[] copied = new CUevent_st[BUFFERS];
    private final boolean[] inFlight = new boolean[BUFFERS];
    private final CUstream_st stream = new CUstream_st();
    private int next;

    private final int chunk;

    GpuStager(Device device, int stagingSize) {
        this.device = device;
        this.chunk = stagingSize;
        Cuda.use(device);
        try {
            pinned = PinnedMemory.allocate((long) BUFFERS * stagingSize);
            for (int i = 0; i < BUFFERS; i++) {
                copied[i] = new CUevent_st();
                Cuda.check(cudart.cudaEventCreateWithFlags(copied[i], cudart.cudaEventDisableTiming), "cudaEventCreate");
            }
            Cuda.check(cudart.cudaStreamCreateWithFlags(stream, cudart.cudaStreamNonBlocking), "cudaStreamCreate");
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    Device device() {
        return device;
    }

    /**
     * Reads {@code lengths[i]} bytes at {@code positions[i]} of the file, for each run in turn, and queues their copy
     * to {@code deviceAddress} onwards, back to back: runs are gathered into the two buffers, a chunk at a time, so a
     * slice's many short rows cost one copy per chunk, not one per row.
     */
    void gather(FileSource src, String tensor, long[] positions, int[] lengths, long deviceAddress)
            throws IOException {
        Cuda.use(device);
        long dev = deviceAddress;
        int b = -1;
        int fill = 0;
        for (int r = 0; r < positions.length; r++) {
            int off = 0;
            while (off < lengths[r]) {
                if (b < 0) {
                    b = acquire();
                    fill = 0;
                }
                int n = Math.min(chunk - fill, lengths[r] - off);
                src.read(positions[r] + off, pinned.byteBuffer((long) b * chunk + fill, n), tensor);
                fill += n;
                off += n;
                if (fill == chunk) {
                    send(b, dev, fill);
                    dev += fill;
                    b = -1;
                }
            }
        }
        if (b >= 0 && fill > 0) {
            send(b, dev, fill);
        }
    }

    /** The next buffer, once its previous copy is done. */
    private int acquire() {
        int b = next;
        next = (next + 1) % BUFFERS;
        if (inFlight[b]) {
            Cuda.check(cudart.cudaEventSynchronize(copied[b]), "waiting for a staging copy to " + device);
            inFlight[b] = false;
        }
        return b;
    }

    private void send(int b, long deviceAddress, int n) {
        Cuda.check(cudart.cudaMemcpyAsync(Cuda.pointer(deviceAddress), Cuda.pointer(pinned.address() + (long) b * chunk), n,
                cudart.cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync to " + device);
        Cuda.check(cudart.cudaEventRecord(copied[b], stream), "cudaEventRecord");
        inFlight[b] = true;
    }

    /** Waits until every queued copy reached the GPU. */
    void finish() {
        Cuda.use(device);
        Cuda.check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize on " + device);
        java.util.Arrays.fill(inFlight, false);
    }

    @Override
    public void close() {
        try {
            if (stream.address() != 0) {
                cudart.cudaStreamSynchronize(stream);
                cudart.cudaStreamDestroy(stream);
            }
            for (CUevent_st e : copied) {
                if (e != null && e.address() != 0) {
                    cudart.cudaEventDestroy(e);
                }
            }
        } finally {
            if (pinned != null) {
                pinned.close();
            }
        }
    }
}
