package io.weightloader.backend.te;

import io.weightloader.api.TensorDestination;
import io.weightloader.memory.NativeLibraries;
import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import io.weightloader.api.config.RankKey;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.seed.SeedClient;
import io.weightloader.seed.SeedPublisher;
import io.weightloader.seed.SeedPublisherProvider;
import io.weightloader.seed.registry.Registries;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.NativePart;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import io.weightloader.backend.te.builtin.BuiltinEngine;
import io.weightloader.backend.te.engine.OneSidedEngine;
import io.weightloader.backend.te.engine.RegionMerger;
import io.weightloader.backend.te.mooncake.MooncakeEngine;
import io.weightloader.backend.te.mooncake.MooncakeLibrary;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code transfer_engine}: the non-disturbing remote path. Client side, a {@link TransferEngineBackend};
 * seed side, a {@link SeedPublisher} that registers the seed's weights once with the configured engine.
 * Native code (Mooncake) loads in {@link #create} / {@link #publish} only.
 */
public final class TransferEngineProvider implements WeightLoaderBackendProvider, SeedPublisherProvider {
    private static final Logger LOG = LoggerFactory.getLogger(TransferEngineProvider.class);
    public static final String NAME = TransferEngineSettings.NAME;
    /** Largest gap between two GPU tensors that registration bridges (an arena's alignment padding). */
    static final long GPU_PADDING_BRIDGE = io.weightloader.memory.cuda.DeviceArena.ALIGNMENT - 1;

    @Override
    public int spiVersion() {
        return SPI_VERSION;
    }

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public BackendCapabilities capabilities() {
        return BackendCapabilities.builder().readsFromSeed(true).devices(Device.Kind.CPU, Device.Kind.CUDA)
                // with the built-in engine (host memory: it serves no GPU memory): a seed releasing its weights
                // unregisters them first and registers them again on resume, under a new generation
                // (SeedHost.releaseMemory). Mooncake is refused where it is configured, saying why per transport
                // (refuseMemorySaverWithMooncake)
                .memorySaver(true).build();
    }

    /**
     * The memory-saver capability holds for the built-in engine only: {@code enable-memory-saver} with
     * {@code engine = mooncake} is refused, naming the setting, the backend, the engine, the capability and, per
     * transport, why (see {@link #mooncakeMemorySaverReason}; docs/ARCHITECTURE.md, "Mooncake and released memory").
     *
     * @param seed true for an instance that serves (its transport is {@code protocol}, else tcp); false for a client
     *             (its transport is {@code protocol}, else whatever its seed serves: every reason is given)
     */
    static void refuseMemorySaverWithMooncake(WeightLoaderSettings s, TransferEngineSettings te, boolean seed) {
        if (s.enableMemorySaver() && te.engine().equals("mooncake")) {
            List<String> transports = seed ? List.of(te.seedProtocol())
                    : te.protocol().map(List::of).orElse(List.of("nvlink_intra", "rdma", "tcp"));
            StringBuilder why = new StringBuilder();
            for (String t : transports) {
                why.append(' ').append(mooncakeMemorySaverReason(t)).append('.');
            }
            throw new WeightLoaderConfigException("weight-loader.enable-memory-saver", "memory saver is not compatible"
                    + " with backend 'transfer_engine' on engine 'mooncake' (" + TransferEngineSettings.PATH
                    + ".engine): transfer_engine declares the memory-saver capability (BackendCapabilities.memorySaver)"
                    + " for its builtin engine only. A released seed's memory is registered again where it was on"
                    + " resume; with Mooncake (" + MOONCAKE_TESTED + "):" + why + " Falling back to fresh allocations"
                    + " at new addresses, which the new manifest would carry, is not implemented. Use "
                    + TransferEngineSettings.PATH + ".engine = builtin (host memory), serve GPU weights over nccl"
                    + " (weight-loader.seed.serve = [nccl]), or turn the memory saver off");
        }
    }

    /** The Mooncake commit whose transports {@link #mooncakeMemorySaverReason} describes. */
    static final String MOONCAKE_TESTED = "kvcache-ai/Mooncake 3b5a5941, mooncake-transfer-engine/src/transport";

    /**
     * Why Mooncake's {@code transport} cannot serve memory the memory saver releases and maps again at the same
     * addresses (GPU memory: CUDA virtual memory from {@code cuMemCreate}/{@code cuMemMap}), from its source.
     */
    static String mooncakeMemorySaverReason(String transport) {
        return switch (transport) {
            case "nvlink_intra" -> "nvlink_intra exports GPU memory with cudaIpcGetMemHandle on the cudaMalloc block"
                    + " that holds the address (intranode_nvlink_transport.cpp, IntraNodeNvlinkTransport::"
                    + "registerLocalMemory), which CUDA refuses for cuMemCreate memory, the only kind whose addresses"
                    + " survive a release (registration fails, -1); with fresh cudaMalloc memory instead, a client"
                    + " keeps the old block's IPC mapping open until its engine is destroyed (IntraNodeNvlinkTransport::"
                    + "relocateSharedMemoryAddress caches it), and CUDA leaves freeing exported memory before every"
                    + " importer closed it undefined";
            case "rdma" -> "rdma registers GPU memory as a dma-buf of the allocation that holds the address"
                    + " (rdma_context.cpp, RdmaContext::exportDmabuf: cuMemGetAddressRange,"
                    + " cuMemGetHandleForAddressRange, then ibv_reg_dmabuf_mr), or through nvidia-peermem with"
                    + " WITH_NVIDIA_PEERMEM; CUDA allows either on cuMemCreate memory only when it is created"
                    + " GPUDirect-RDMA-capable, which the memory saver's GPU arena does not ask for, and registering"
                    + " released and remapped memory again has not been run on an RDMA NIC";
            case "tcp" -> "tcp registers bookkeeping only (tcp_transport.cpp, TcpTransport::registerLocalMemory) and"
                    + " reads GPU memory with cudaMemcpyAsync (tcp_transport_session_impl.h, copyTcpCudaMemory), so it"
                    + " could serve released and resumed memory, but that has not been run or tested here";
            default -> transport + ": not examined for the memory saver";
        };
    }

    @Override
    public void validateSettings(BackendContext context) {
        TransferEngineSettings te = TransferEngineSettings.from(context);
        if (context.settings().remote().startSeedViaTransferEngine()) {
            refuseMemorySaverWithMooncake(context.settings(), te, true); // this instance will serve through it
        }
    }

    @Override
    public void validate(BackendContext context) {
        refuseMemorySaverWithMooncake(context.settings(), TransferEngineSettings.from(context), false);
        Registries.Settings registry = Registries.settings(context.config());
        if (registry.inProcess()) {
            SeedClient.checkedSeedAddress(context.settings(), NAME);
        } else if (registry.modelId().isEmpty()) {
            throw RegistryBackend.modelIdMissing(registry.directory());
        }
    }

    /**
     * A client of the configured seed; or, with a registry ({@code weight-loader.directory} not empty), a client that
     * finds its sources there by {@code weight-loader.model-id} ({@link RegistryBackend}), the configured seed, if
     * any, standing in only while the registry cannot be reached.
     */
    @Override
    public WeightLoaderBackend create(BackendContext context) {
        WeightLoaderSettings s = context.settings();
        TransferEngineSettings te = TransferEngineSettings.from(context);
        if (te.engine().equals("mooncake")) {
            MooncakeLibrary.load(te.mooncakeLibrary().orElse(null)); // a missing library fails at start-up
        }
        Registries.Settings registry = Registries.settings(context.config());
        TransferEngineBackend root = s.remote().seedIp().isEmpty() ? null : client(s, te, SeedClient.forSeedOf(s, NAME));
        if (registry.inProcess()) {
            registry.modelId().ifPresent(m -> LOG.warn("{} = {} is set, but {} is empty: this client loads from the seed"
                    + " at weight-loader.remote-instance.seed-instance-ip, not from a registry", Registries.MODEL_ID, m,
                    Registries.DIRECTORY));
            return root;
        }
        // a source found in the registry is tried once more at most before the client moves on to the next
        int retries = Math.min(1, s.remote().retries());
        TransferEngineSettings pipelined = te.withSliceSize(Math.min(te.sliceSizeFor(te.seedProtocol()),
                DirectoryLoad.PIPELINED_SLICE));
        return RegistryBackend.open(s, te, registry, () -> Registries.open(context.config()),
                (address, loading) -> client(s, loading ? pipelined : te,
                        SeedClient.forSource(s, address).withRetries(retries)), root);
    }

    /** A client of {@code seed}; its engine starts once the seed's manifest says which transport it serves. */
    private static TransferEngineBackend client(WeightLoaderSettings s, TransferEngineSettings te, SeedClient seed) {
        String host = seed.host();
        return new TransferEngineBackend(seed, s.rank(), protocol -> clientEngine(s, te, protocol, host), te,
                s.remote().transferTimeout(), s.remote().retries(), isThisHost(host));
    }

    private static OneSidedEngine clientEngine(WeightLoaderSettings s, TransferEngineSettings te, String protocol,
                                               String seedHost) {
        if (te.engine().equals("builtin")) {
            return BuiltinEngine.client(s.remote().token().orElse(null), te.builtinConnections(),
                    s.remote().connectTimeout(), io.weightloader.seed.Tls.forClient(s.tls()).orElse(null));
        }
        String host = te.hostname().orElse(localHostFor(seedHost));
        return MooncakeEngine.create(MooncakeLibrary.load(te.mooncakeLibrary().orElse(null)), host, protocol,
                te.devices().orElse(null));
    }

    /** 0.0.0.0, ::, and their spellings; a host name is never looked up here. */
    private static boolean isWildcard(String address) {
        String a = address.startsWith("[") && address.endsWith("]") ? address.substring(1, address.length() - 1)
                : address;
        if (!a.matches("[0-9.]+|[0-9a-fA-F:]*:[0-9a-fA-F:]*")) {
            return false;
        }
        try {
            return InetAddress.getByName(a).isAnyLocalAddress();
        } catch (UnknownHostException e) {
            return false;
        }
    }

    /** True when {@code host} is this machine (loopback or one of its addresses): nvlink_intra reaches it. */
    static boolean isThisHost(String host) {
        try {
            InetAddress a = InetAddress.getByName(host);
            return a.isLoopbackAddress() || a.isAnyLocalAddress() || java.net.NetworkInterface.getByInetAddress(a) != null;
        } catch (java.io.IOException e) {
            return false;
        }
    }

    @Override
    public void validateSeed(BackendContext context, Device device) {
        WeightLoaderSettings s = context.settings();
        TransferEngineSettings te = TransferEngineSettings.from(context);
        refuseMemorySaverWithMooncake(s, te, true);
        if (te.hostname().isPresent() && isWildcard(te.hostname().get())) {
            throw new WeightLoaderConfigException(TransferEngineSettings.PATH + ".hostname", "is "
                    + te.hostname().get() + ", a wildcard address that clients cannot dial: set the host name or"
                    + " address clients should dial to reach this seed's engine");
        }
        if (te.hostname().isEmpty() && isWildcard(s.seed().bindAddress())) {
            throw new WeightLoaderConfigException(TransferEngineSettings.PATH + ".hostname", "is not set, so the"
                    + " engine would advertise the seed's bind address, the wildcard " + s.seed().bindAddress()
                    + " of weight-loader.seed.bind-address, which clients cannot dial: set the host name or address"
                    + " clients should dial");
        }
        if (!device.isHost() && te.engine().equals("builtin")) {
            throw new WeightLoaderConfigException(TransferEngineSettings.PATH + ".engine", "the builtin engine serves"
                    + " host memory only, but this seed holds its weights on " + device + ". Either serve them with"
                    + " Mooncake (" + TransferEngineSettings.PATH + ".engine = mooncake, e.g. protocol = nvlink_intra;"
                    + " seed --engine mooncake --protocol nvlink_intra), or serve nccl clients only"
                    + " (weight-loader.seed.serve = [nccl]; seed --serve nccl)");
        }
        if (device.isHost() && te.seedProtocol().equals("nvlink_intra")) {
            throw new WeightLoaderConfigException(TransferEngineSettings.PATH + ".protocol", "nvlink_intra serves GPU"
                    + " memory only, but this seed holds its weights in host memory; load the seed onto cuda:N, or"
                    + " serve tcp or rdma");
        }
        if (te.engine().equals("mooncake")) {
            MooncakeLibrary.load(te.mooncakeLibrary().orElse(null));
        }
    }

    @Override
    public List<NativePart> nativeParts(BackendContext context) {
        TransferEngineSettings te = TransferEngineSettings.from(context);
        MooncakeLibrary.Location l = MooncakeLibrary.locate(te.mooncakeLibrary().orElse(null), System.getenv(),
                System.getProperty(MooncakeLibrary.HOME_PROPERTY));
        String needed = "engine = mooncake (builtin needs nothing native)";
        String target = l.target().equals(MooncakeLibrary.LIBRARY_NAME) ? MooncakeLibrary.FILE_NAME : l.target();
        NativePart found = NativeLibraries.probe(target, needed);
        if (!found.present()) {
            return List.of(new NativePart(MooncakeLibrary.FILE_NAME, needed, false, found.detail() + "; looked in "
                    + l.source()));
        }
        try {
            MooncakeLibrary lib = MooncakeLibrary.load(te.mooncakeLibrary().orElse(null));
            return List.of(new NativePart(MooncakeLibrary.FILE_NAME, needed, true, lib.location()));
        } catch (RuntimeException e) {
            return List.of(new NativePart(MooncakeLibrary.FILE_NAME, needed, false, e.getMessage()));
        }
    }

    /** The address this client is reachable at: loopback for a loopback seed, else this host's address. */
    private static String localHostFor(String seedIp) {
        try {
            if (InetAddress.getByName(seedIp).isLoopbackAddress()) {
                return "127.0.0.1";
            }
            return InetAddress.getLocalHost().getHostAddress();
        } catch (UnknownHostException e) {
            return "127.0.0.1";
        }
    }

    @Override
    public SeedPublisher publish(BackendContext context, RankKey rank, List<TensorDestination> tensors) {
        return publish(context, rank, tensors, null);
    }

    /** The built-in engine honours the gate (it sees every read); Mooncake's reads are one-sided and cannot wait. */
    @Override
    public SeedPublisher publish(BackendContext context, RankKey rank, List<TensorDestination> tensors,
                                 io.weightloader.seed.ReadyGate gate) {
        WeightLoaderSettings s = context.settings();
        TransferEngineSettings te = TransferEngineSettings.from(context);
        String bind = s.seed().bindAddress();
        String advertised = te.hostname().orElse(bind);
        Device device = tensors.isEmpty() ? Device.CPU : tensors.get(0).region().device();
        validateSeed(context, device);
        long t0 = System.nanoTime();
        List<MemoryRegion> ranges = new ArrayList<>(tensors.size());
        for (TensorDestination t : tensors) {
            if (t.byteSize() > 0) {
                ranges.add(t.bytes());
            }
        }
        // GPU arenas pad tensors to 256 bytes: bridge that padding so an arena registers as one region (the padding
        // is the arena's own memory). Host ranges are merged exactly: their gaps may hold anything.
        List<MemoryRegion> merged = new ArrayList<>(RegionMerger.merge(
                ranges.stream().filter(r -> r.device().isHost()).toList(), 0));
        merged.addAll(RegionMerger.merge(ranges.stream().filter(r -> !r.device().isHost()).toList(),
                GPU_PADDING_BRIDGE));
        OneSidedEngine engine;
        if (te.engine().equals("builtin")) {
            // a fixed port is rank 0's; each further rank of a multi-rank seed takes the next one
            int port = te.builtinPort() == 0 ? 0 : te.builtinPort() + rank.tp() + rank.pp() * s.tpSize();
            if (port > 65535) {
                throw new WeightLoaderConfigException(TransferEngineSettings.PATH + ".builtin.port", "rank " + rank
                        + " would listen on port " + port + " (port + rank), beyond 65535");
            }
            engine = BuiltinEngine.seed(bind, port, advertised, s.remote().token().orElse(null),
                    te.builtinMaxConnections(), io.weightloader.seed.Tls.forSeed(s.tls()).orElse(null),
                    s.tls().ca().isPresent()).gate(gate);
        } else {
            if (s.tls().serves()) {
                LOG.warn("weight-loader.tls encrypts the control plane only here: Mooncake's transfers are not"
                        + " encrypted or authenticated");
            }
            if (s.remote().token().isPresent()) {
                LOG.warn("weight-loader.remote-instance.token protects the control plane only: Mooncake's own sockets "
                        + "are unauthenticated, so anyone who can reach its port can read the registered weights");
            }
            engine = MooncakeEngine.create(MooncakeLibrary.load(te.mooncakeLibrary().orElse(null)), advertised,
                    te.seedProtocol(), te.devices().orElse(null));
        }
        long mergeNanos = System.nanoTime() - t0;
        long t1 = System.nanoTime();
        try {
            engine.registerRemoteReadable(merged);
        } catch (RuntimeException e) {
            engine.close();
            throw e;
        }
        // registration cost as a seed sees it: merging the ranges plus registering them (engine start-up excluded)
        double secs = (mergeNanos + System.nanoTime() - t1) / 1e9;
        LOG.info("rank {}: {} tensors registered as {} region(s) with {} in {} s", rank, tensors.size(), merged.size(),
                engine.name(), String.format("%.4f", secs));
        return new SeedPublisher() {
            @Override
            public String engine() {
                return engine.name();
            }

            @Override
            public String sessionId() {
                return engine.sessionId();
            }

            @Override
            public double registrationSeconds() {
                return secs;
            }

            @Override
            public long activity() {
                // the built-in engine sees every byte it serves; Mooncake's reads are one-sided, invisible here
                return engine instanceof BuiltinEngine b ? b.bytesServed() : -1;
            }

            @Override
            public boolean gatesReads() {
                return engine instanceof BuiltinEngine;
            }

            @Override
            public void close() {
                engine.close();
            }
        };
    }
}
