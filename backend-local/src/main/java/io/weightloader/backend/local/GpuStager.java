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
 * <p>The buffers are small ({@code staging-size}, 1 MiB by default) because pinning host memory is slow: on an
 * H100 host it ran at about 1.4 GB/s, so 16 MiB buffers for 8 threads cost more than half of a 4 GiB load
 * (docs/PERFORMANCE.md), while 1 MiB chunks still keep the copy engine busy.
 */
final class GpuStager implements AutoCloseable {
    private final Device device;
    private final PinnedMemory[] buffers = new PinnedMemory[2];
    private final CUevent_st[] copied = {new CUevent_st(), new CUevent_st()};
    private final boolean[] inFlight = new boolean[2];
    private final CUstream_st stream = new CUstream_st();
    private int next;

    private final int chunk;

    GpuStager(Device device, int stagingSize) {
        this.device = device;
        this.chunk = stagingSize;
        Cuda.use(device);
        try {
            for (int i = 0; i < 2; i++) {
                buffers[i] = PinnedMemory.allocate(stagingSize);
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
     * Reads {@code length} bytes at {@code position} of the file and queues their copy to {@code deviceAddress},
     * chunk by chunk through the two buffers.
     */
    void copy(FileSource src, String tensor, long position, long deviceAddress, int length) throws IOException {
        Cuda.use(device);
        for (int off = 0; off < length; off += chunk) {
            int n = Math.min(chunk, length - off);
            int b = next;
            next ^= 1;
            if (inFlight[b]) {
                Cuda.check(cudart.cudaEventSynchronize(copied[b]), "waiting for a staging copy to " + device);
                inFlight[b] = false;
            }
            src.read(position + off, buffers[b].byteBuffer(0, n), tensor);
            Cuda.check(cudart.cudaMemcpyAsync(Cuda.pointer(deviceAddress + off), Cuda.pointer(buffers[b].address()), n,
                    cudart.cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync to " + device);
            Cuda.check(cudart.cudaEventRecord(copied[b], stream), "cudaEventRecord");
            inFlight[b] = true;
        }
    }

    /** Waits until every queued copy reached the GPU. */
    void finish() {
        Cuda.use(device);
        Cuda.check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize on " + device);
        inFlight[0] = false;
        inFlight[1] = false;
    }

    @Override
    public void close() {
        try {
            if (stream.address() != 0) {
                cudart.cudaStreamSynchronize(stream);
                cudart.cudaStreamDestroy(stream);
            }
            for (CUevent_st e : copied) {
                if (e.address() != 0) {
                    cudart.cudaEventDestroy(e);
                }
            }
        } finally {
            for (PinnedMemory p : buffers) {
                if (p != null) {
                    p.close();
                }
            }
        }
    }
}
