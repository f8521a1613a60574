package io.weightloader.backend.te.mooncake;

import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.StringArray;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.memory.cuda.Cuda;
import java.lang.ref.Reference;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@link OneSidedEngine} over Mooncake Transfer Engine (P2P handshake metadata, no metadata server).
 *
 * <p>Protocols: {@code tcp}, {@code rdma}, {@code nvlink_intra} (device memory between GPUs of one host), or any
 * other name Mooncake's {@code installTransport} accepts. NIC selection for {@code rdma} ({@code nics}):
 * <ul>
 *   <li>null or blank: Mooncake discovers the RDMA NICs itself; set {@code MC_TE_FILTERS=mlx5_0,mlx5_1} (read
 *       by Mooncake) to restrict discovery to those devices;</li>
 *   <li>a JSON object (starts with <code>{</code>): passed as-is as Mooncake's NIC priority matrix,
 *       <code>{"cpu:0": [["mlx5_0"], []], "cuda:0": [["mlx5_1"], ["mlx5_0"]]}</code>
 *       (location: [preferred NICs, fallback NICs]);</li>
 *   <li>a comma-separated list {@code mlx5_0,mlx5_1}: every location ({@code cpu:0..7}, {@code cuda:0..15})
 *       prefers exactly those NICs.</li>
 * </ul>
 *
 * <p>Security: Mooncake's sockets listen on all interfaces without authentication, and a registration is both
 * readable and WRITABLE by any peer that reaches the port (Mooncake has no read-only registration). Register
 * only weights, on trusted networks. For that reason {@link #registerLocal} does nothing on {@code tcp}: the tcp
 * transport does not need destination registration and would otherwise expose the client's memory too.
 *
 * <p>Threading: registration, open and close may be called from any thread; a {@link OneSidedEngine.Batch}
 * belongs to one thread (Mooncake batches have no lock).
 *
 * <p>This class holds the engine's life (create, transports, registrations, close); reads go through a
 * {@link MooncakePeer} per opened segment, whose batches are {@link MooncakeBatch}es; the three share the native
 * engine through a {@link MooncakeHandle}.
 */
public final class MooncakeEngine implements OneSidedEngine {
    private static final Logger LOG = LoggerFactory.getLogger(MooncakeEngine.class);

    /** Largest number of reads per batch. */
    public static final int MAX_BATCH_SIZE = MooncakeHandle.MAX_BATCH_SIZE;
    /** Metadata mode: peers exchange segment descriptors directly, no metadata server. */
    static final String METADATA = "P2PHANDSHAKE";

    private final MooncakeLibrary library;
    private final MooncakeHandle handle;
    private final MooncakeC c;
    private final String protocol;
    private final String sessionId;
    private final Pointer engine;
    /** Registered start address -> region, remote-readable (seed side). */
    private final Map<Long, MemoryRegion> remoteRegions = new LinkedHashMap<>();
    /** Registered start address -> region, local destinations (client side). */
    private final Map<Long, MemoryRegion> localRegions = new LinkedHashMap<>();

    private MooncakeEngine(MooncakeLibrary library, String protocol, Pointer engine, String sessionId) {
        this.library = library;
        this.c = library.api();
        this.protocol = protocol;
        this.engine = engine;
        this.sessionId = sessionId;
        this.handle = new MooncakeHandle(c, engine, sessionId, LOG);
    }

    /**
     * Creates an engine and installs one transport.
     *
     * @param library the loaded library
     * @param hostName what peers dial to reach this engine (a routable IP of this host); Mooncake picks the port
     * @param protocol {@code tcp}, {@code rdma}, {@code nvlink_intra}, ...
     * @param nics for {@code rdma}: NIC names or a NIC priority matrix (see the class comment); else ignored;
     *     may be null
     */
    public static MooncakeEngine create(MooncakeLibrary library, String hostName, String protocol, String nics) {
        Objects.requireNonNull(library, "library is null");
        Objects.requireNonNull(hostName, "hostName is null");
        Objects.requireNonNull(protocol, "protocol is null");
        if (hostName.isBlank() || protocol.isBlank()) {
            throw new IllegalArgumentException("hostName and protocol must not be blank");
        }
        MooncakeC c = library.api();
        Pointer engine = c.createTransferEngine(METADATA, hostName, hostName, 0, 0);
        if (engine == null) {
            throw new WeightLoaderException("Mooncake createTransferEngine failed for host '" + hostName
                    + "' (metadata " + METADATA + "; see Mooncake's log on stderr, MC_LOG_LEVEL=INFO for more)");
        }
        try {
            Pointer args = null;
            StringArray argsMemory = null;
            if ("rdma".equals(protocol)) {
                String matrix = nicPriorityMatrix(nics);
                if (matrix == null) {
                    // auto_discover=0 skipped discovery; rdma needs the NIC list (MC_TE_FILTERS narrows it).
                    MooncakeLibrary.check(c.discoverTopology(engine), "discoverTopology");
                } else {
                    argsMemory = new StringArray(new String[] {matrix});
                    args = argsMemory;
                }
            }
            Pointer transport = c.installTransport(engine, protocol, args);
            Reference.reachabilityFence(argsMemory);
            if (transport == null) {
                throw new WeightLoaderException("Mooncake installTransport(\"" + protocol + "\") failed"
                        + ("rdma".equals(protocol) ? " (no usable RDMA NIC? nics='" + nics + "', MC_TE_FILTERS='"
                                + System.getenv("MC_TE_FILTERS") + "')" : "")
                        + "; see Mooncake's log on stderr");
            }
            byte[] buf = new byte[256];
            MooncakeLibrary.check(c.getLocalIpAndPort(engine, buf, buf.length), "getLocalIpAndPort");
            String session = Native.toString(buf);
            if (session.isEmpty()) {
                throw new WeightLoaderException("Mooncake getLocalIpAndPort returned an empty session name");
            }
            LOG.info("Mooncake engine {} ({}) from {}", session, protocol, library.location());
            return new MooncakeEngine(library, protocol, engine, session);
        } catch (RuntimeException e) {
            c.destroyTransferEngine(engine);
            throw e;
        }
    }

    /** The JSON NIC priority matrix for {@code nics}, or null to let Mooncake discover NICs. */
    static String nicPriorityMatrix(String nics) {
        if (nics == null || nics.isBlank()) {
            return null;
        }
        String s = nics.strip();
        if (s.startsWith("{")) {
            return s;
        }
        List<String> names = new ArrayList<>();
        for (String n : s.split(",")) {
            String name = n.strip();
            if (!name.isEmpty()) {
                if (!name.matches("[A-Za-z0-9_.:-]+")) {
                    throw new IllegalArgumentException("bad NIC name '" + name + "' in '" + nics + "'");
                }
                names.add("\"" + name + "\"");
            }
        }
        if (names.isEmpty()) {
            return null;
        }
        String entry = "[[" + String.join(", ", names) + "], []]";
        StringBuilder sb = new StringBuilder("{");
        for (int i = 0; i < 8; i++) {
            sb.append(i == 0 ? "" : ", ").append("\"cpu:").append(i).append("\": ").append(entry);
        }
        for (int i = 0; i < 16; i++) {
            sb.append(", \"cuda:").append(i).append("\": ").append(entry);
        }
        return sb.append('}').toString();
    }

    @Override
    public String name() {
        return "mooncake-" + protocol;
    }

    @Override
    public String sessionId() {
        return sessionId;
    }

    /** Mooncake's location string for a region: {@code cpu:0} or {@code cuda:N}. */
    static String location(MemoryRegion region) {
        return region.device().isHost() ? "cpu:0" : "cuda:" + region.device().index();
    }

    @Override
    public void registerRemoteReadable(List<MemoryRegion> regions) {
        register(regions, remoteRegions, true, "registerLocalMemory(remote-readable)");
    }

    /**
     * Whether destination memory must be registered before reading into it: not for tcp (plain socket reads) nor
     * nvlink_intra (cudaMemcpy from the peer's IPC-mapped memory; registering a sub-range of a cudaMalloc block
     * there maps the whole block and cannot be undone by the sub-range's address).
     */
    private boolean needsLocalRegistration() {
        return !"tcp".equals(protocol) && !"nvlink_intra".equals(protocol);
    }

    @Override
    public void registerLocal(List<MemoryRegion> regions) {
        if (!needsLocalRegistration()) {
            handle.checkOpen();
            return; // not needed, and on tcp it would make the memory remotely readable and writable
        }
        register(regions, localRegions, false, "registerLocalMemory(local)");
    }

    @Override
    public void unregisterLocal(List<MemoryRegion> regions) {
        if (!needsLocalRegistration()) {
            return;
        }
        synchronized (this) {
            for (MemoryRegion r : regions) {
                if (localRegions.remove(r.address()) != null && !handle.isClosed()) {
                    current(r);
                    MooncakeLibrary.check(c.unregisterLocalMemory(engine, new Pointer(r.address())),
                            "unregisterLocalMemory(0x" + Long.toHexString(r.address()) + ")");
                }
            }
        }
    }

    /**
     * Makes the region's GPU current on this thread: Mooncake's nvlink_intra transport asks the CUDA driver about
     * the address (cuMemGetAddressRange), which fails with "invalid context" on a thread that never used that GPU
     * (a seed registering several ranks' GPUs from one thread, a shutdown hook unregistering them).
     */
    private static void current(MemoryRegion r) {
        if (!r.device().isHost()) {
            Cuda.use(r.device());
        }
    }

    private synchronized void register(List<MemoryRegion> regions, Map<Long, MemoryRegion> into,
            boolean remoteAccessible, String operation) {
        handle.checkOpen();
        for (MemoryRegion r : regions) {
            current(r);
            int rc = c.registerLocalMemory(engine, new Pointer(r.address()), r.length(), location(r),
                    remoteAccessible ? 1 : 0);
            MooncakeLibrary.check(rc, operation + " of " + r.length() + " bytes at 0x"
                    + Long.toHexString(r.address()) + " on " + r.device());
            into.put(r.address(), r);
        }
    }

    @Override
    public Peer open(String session) {
        Objects.requireNonNull(session, "session is null");
        handle.checkOpen();
        int segment = c.openSegment(engine, session);
        if (segment < 0) {
            throw new WeightLoaderException("Mooncake openSegment(\"" + session + "\") from " + sessionId
                    + " failed: " + MooncakeLibrary.describe(segment) + "; is the seed's engine up and reachable?");
        }
        MooncakePeer peer = new MooncakePeer(handle, session, segment);
        handle.peerOpened(peer);
        return peer;
    }

    @Override
    public void close() {
        if (!handle.markClosed()) {
            return;
        }
        int live = handle.liveBatches();
        if (live > 0) {
            LOG.warn("closing Mooncake engine {} with {} unreleased batch(es)", sessionId, live);
        }
        for (Peer p : handle.peers()) {
            p.close();
        }
        synchronized (this) {
            for (Map<Long, MemoryRegion> m : List.of(localRegions, remoteRegions)) {
                for (Long address : m.keySet()) {
                    current(m.get(address));
                    int rc = c.unregisterLocalMemory(engine, new Pointer(address));
                    if (rc != 0) {
                        LOG.warn("Mooncake unregisterLocalMemory(0x{}) on close: {}", Long.toHexString(address),
                                MooncakeLibrary.describe(rc));
                    }
                }
                m.clear();
            }
        }
        c.destroyTransferEngine(engine);
    }

    @Override
    public String toString() {
        return name() + "[" + sessionId + "]";
    }
}
