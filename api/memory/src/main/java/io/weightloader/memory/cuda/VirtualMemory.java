package io.weightloader.memory.cuda;

import io.weightloader.api.Device;
import io.weightloader.api.WeightLoaderException;
import org.bytedeco.cuda.cudart.CUmemAccessDesc_v1;
import org.bytedeco.cuda.cudart.CUmemAllocationProp_v1;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.SizeTPointer;

/**
 * The CUDA driver calls of {@link VirtualDeviceArena} (virtual memory management), each checked with a message naming
 * the call and the device. Kept apart so that the arena class itself names no JavaCPP type: a host without the CUDA
 * presets can still load it (and {@code TensorArena}, which asks whether an arena is one).
 *
 * <p>Every call first makes the device current ({@code cudaSetDevice}, then {@code cudaFree(0)} so that the
 * runtime's primary context exists): the driver API acts on the calling thread's current context.
 */
final class VirtualMemory {
    private VirtualMemory() {
    }

    /** Makes {@code device}'s primary context current on this thread, and checks the GPU supports VMM. */
    static void use(Device device) {
        Cuda.use(device);
        Cuda.check(cudart.cudaFree(Cuda.pointer(0)), "cudaFree(0) (initialising the primary context) on " + device);
    }

    /** {@code use}, then refuses a GPU (or driver) without virtual memory management, naming the setting. */
    static void requireSupported(Device device) {
        use(device);
        int[] dev = new int[1];
        Cuda.checkDriver(cudart.cuDeviceGet(dev, device.index()), "cuDeviceGet(" + device.index() + ")");
        int[] vmm = new int[1];
        Cuda.checkDriver(cudart.cuDeviceGetAttribute(vmm,
                cudart.CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev[0]),
                "cuDeviceGetAttribute(VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED) on " + device);
        if (vmm[0] == 0) {
            throw new WeightLoaderException("weight-loader.enable-memory-saver on " + device + " needs CUDA's virtual"
                    + " memory management (cuMemCreate, cuMemMap), which this GPU or driver does not support"
                    + " (CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED = 0): turn the memory saver off");
        }
    }

    /** Properties of a pinned allocation on {@code device}, with no shareable handle; the caller closes it. */
    private static CUmemAllocationProp_v1 properties(Device device) {
        CUmemAllocationProp_v1 prop = new CUmemAllocationProp_v1();
        Pointer.memset(prop, 0, prop.sizeof());
        prop.type(cudart.CU_MEM_ALLOCATION_TYPE_PINNED);
        prop.requestedHandleTypes(cudart.CU_MEM_HANDLE_TYPE_NONE);
        prop.location().type(cudart.CU_MEM_LOCATION_TYPE_DEVICE).id(device.index());
        return prop;
    }

    /** The minimum granularity of physical allocations (and of their mappings) on {@code device}. */
    static long granularity(Device device) {
        try (CUmemAllocationProp_v1 prop = properties(device); SizeTPointer g = new SizeTPointer(1)) {
            Cuda.checkDriver(cudart.cuMemGetAllocationGranularity(g, prop, cudart.CU_MEM_ALLOC_GRANULARITY_MINIMUM),
                    "cuMemGetAllocationGranularity on " + device);
            if (g.get() <= 0) {
                throw new WeightLoaderException("cuMemGetAllocationGranularity on " + device + " gave " + g.get());
            }
            return g.get();
        }
    }

    /** Reserves {@code size} bytes of the GPU's virtual address space (no memory yet), aligned to {@code alignment}. */
    static long reserve(Device device, long size, long alignment) {
        long[] ptr = new long[1];
        Cuda.checkDriver(cudart.cuMemAddressReserve(ptr, size, alignment, 0, 0),
                "cuMemAddressReserve(" + size + " bytes) on " + device);
        return ptr[0];
    }

    /** Gives a reservation back ({@link #reserve}); nothing may be mapped in it. */
    static void free(Device device, long address, long size) {
        Cuda.checkDriver(cudart.cuMemAddressFree(address, size),
                "cuMemAddressFree(0x" + Long.toHexString(address) + ", " + size + " bytes) on " + device);
    }

    /** Creates {@code size} bytes of physical memory on {@code device}: its handle. */
    static long create(Device device, long size) {
        long[] handle = new long[1];
        try (CUmemAllocationProp_v1 prop = properties(device)) {
            Cuda.checkDriver(cudart.cuMemCreate(handle, size, prop, 0), "cuMemCreate(" + size + " bytes) on " + device);
        }
        return handle[0];
    }

    /** Releases a physical allocation's handle ({@link #create}); its memory goes once it is mapped nowhere. */
    static void release(Device device, long handle) {
        Cuda.checkDriver(cudart.cuMemRelease(handle), "cuMemRelease on " + device);
    }

    /**
     * The GPUs that get access to memory on {@code device}: the device itself first, then every GPU that can access it
     * peer to peer ({@code cudaDeviceCanAccessPeer}), as {@code cudaMalloc} memory is (NCCL, for one, reads a user
     * buffer from another GPU of the same process directly).
     */
    static int[] accessors(Device device) {
        int[] count = new int[1];
        Cuda.check(cudart.cudaGetDeviceCount(count), "cudaGetDeviceCount");
        int[] out = new int[count[0]];
        int n = 0;
        out[n++] = device.index();
        for (int d = 0; d < count[0]; d++) {
            if (d == device.index()) {
                continue;
            }
            int[] can = new int[1];
            Cuda.check(cudart.cudaDeviceCanAccessPeer(can, d, device.index()),
                    "cudaDeviceCanAccessPeer(cuda:" + d + ", " + device + ")");
            if (can[0] == 1) {
                out[n++] = d;
            }
        }
        return java.util.Arrays.copyOf(out, n);
    }

    /**
     * Maps physical memory {@code handle} at {@code address} (inside a reservation) and makes it readable and writable
     * by the GPUs {@code accessors} ({@link #accessors}); on failure nothing stays mapped.
     */
    static void map(Device device, long address, long size, long handle, int[] accessors) {
        Cuda.checkDriver(cudart.cuMemMap(address, size, 0, handle, 0),
                "cuMemMap(0x" + Long.toHexString(address) + ", " + size + " bytes) on " + device);
        try (CUmemAccessDesc_v1 access = new CUmemAccessDesc_v1(accessors.length)) {
            Pointer.memset(access, 0, (long) access.sizeof() * accessors.length);
            for (int i = 0; i < accessors.length; i++) {
                CUmemAccessDesc_v1 a = access.getPointer(i);
                a.location().type(cudart.CU_MEM_LOCATION_TYPE_DEVICE).id(accessors[i]);
                a.flags(cudart.CU_MEM_ACCESS_FLAGS_PROT_READWRITE);
            }
            Cuda.checkDriver(cudart.cuMemSetAccess(address, size, access, accessors.length),
                    "cuMemSetAccess(read/write for cuda:" + java.util.Arrays.toString(accessors) + ", " + size
                            + " bytes) on " + device);
        } catch (RuntimeException | Error e) {
            try {
                unmap(device, address, size);
            } catch (RuntimeException suppressed) {
                e.addSuppressed(suppressed);
            }
            throw e;
        }
    }

    /**
     * Waits for everything queued on {@code device} (a kernel or copy still reading the memory would fault once it is
     * unmapped), then unmaps {@code [address, address + size)}; the reservation stays.
     */
    static void unmap(Device device, long address, long size) {
        Cuda.check(cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize before unmapping memory on " + device);
        Cuda.checkDriver(cudart.cuMemUnmap(address, size),
                "cuMemUnmap(0x" + Long.toHexString(address) + ", " + size + " bytes) on " + device);
    }

    /** Zeroes {@code size} bytes at {@code address}. */
    static void zero(Device device, long address, long size) {
        Cuda.check(cudart.cudaMemset(Cuda.pointer(address), 0, size), "cudaMemset(" + size + " bytes) on " + device);
        Cuda.check(cudart.cudaDeviceSynchronize(), "cudaDeviceSynchronize after cudaMemset on " + device);
    }
}
