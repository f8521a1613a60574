package io.weightloader.backend.te;

import io.weightloader.api.config.SettingsReader;
import java.util.List;
import io.weightloader.api.spi.BackendContext;
import java.util.Optional;

/** {@code weight-loader.backends.transfer_engine}, read and validated once. */
record TransferEngineSettings(
        String engine,
        Optional<String> protocol,
        Optional<String> hostname,
        Optional<String> devices,
        long sliceSize, // 0: auto
        int batchSize,
        int batchesInFlight,
        long bandwidthLimit,
        int builtinPort,
        int builtinConnections,
        int builtinMaxConnections,
        Optional<String> mooncakeLibrary,
        String sourceStrategy,
        Optional<String> clientId,
        String reshardStaging,
        boolean verifyRelays,
        MultiSourceSettings multiSource) {

    /** The backend's name (its provider's {@code NAME}). */
    static final String NAME = "transfer_engine";
    static final String PATH = BackendContext.backendPath(NAME);

    static TransferEngineSettings from(BackendContext context) {
        SettingsReader r = new SettingsReader(context.config(), PATH);
        String engine = r.oneOf("engine", List.of("builtin", "mooncake"));
        Optional<String> protocol = r.optionalString("protocol");
        if (protocol.isPresent() && !protocol.get().matches("[a-z_0-9]+")) {
            throw r.error("protocol", "must be a transport name such as tcp, rdma or nvlink_intra, or empty (a seed"
                    + " serves tcp; a client uses what its seed serves); got '" + protocol.get() + "'");
        }
        if (engine.equals("builtin") && protocol.isPresent() && !protocol.get().equals("tcp")) {
            throw r.error("protocol", "the builtin engine speaks tcp only; got '" + protocol.get()
                    + "' (use engine = mooncake for " + protocol.get() + ")");
        }
        String sliceText = r.string("slice-size");
        if (!sliceText.equals("auto")) {
            try {
                SettingsReader.parseSize(sliceText);
            } catch (IllegalArgumentException e) {
                throw r.error("slice-size", "must be a size such as 64 MiB, or auto; got '" + sliceText + "'");
            }
        }
        long slice = sliceText.equals("auto") ? 0 : r.size("slice-size", 4096, 1L << 30);
        String strategy = r.oneOf("source-strategy", List.of("star", "tree", "chain"));
        return new TransferEngineSettings(engine, protocol, r.optionalString("hostname"), r.optionalString("devices"),
                slice, r.integer("batch-size", 1, 1024), r.integer("batches-in-flight", 1, 16),
                r.size("bandwidth-limit", 0, Long.MAX_VALUE), r.integer("builtin.port", 0, 65535),
                r.integer("builtin.connections", 1, 64), r.integer("builtin.max-connections", 1, 4096),
                r.optionalString("mooncake.library"), strategy, clientId(r),
                r.oneOf("reshard-staging", List.of("auto", "always", "never")), r.bool("verify-relays"),
                MultiSourceSettings.from(r, strategy));
    }

    private static Optional<String> clientId(SettingsReader r) {
        Optional<String> id = r.optionalString("client-id");
        if (id.isPresent() && !id.get().matches("[A-Za-z0-9.:\\[\\]_-]{1,300}")) {
            throw r.error("client-id", "must be letters, digits and . : [ ] _ - only (a relay uses its host:port); got '"
                    + id.get() + "'");
        }
        return id;
    }

    /**
     * {@code slice-size = auto}: 1 GiB over nvlink_intra, where each read is one GPU copy with a fixed setup cost
     * and fewer reads are faster (8 GB on two H200s: 1 GiB reads 379 GB/s, 256 MiB 373, 64 MiB 361); 64 MiB
     * elsewhere, where reads are spread over connections and must outnumber them (a 256 MiB load over the
     * builtin engine ran at 4.7-4.9 GB/s in 64 MiB reads, 3.0 GB/s in 256 MiB ones).
     */
    static long autoSliceSize(String protocol) {
        return "nvlink_intra".equals(protocol) ? 1L << 30 : 64L << 20;
    }

    /** These settings with reads of at most {@code bytes} (for a source that serves while it loads). */
    TransferEngineSettings withSliceSize(long bytes) {
        return new TransferEngineSettings(engine, protocol, hostname, devices, bytes, batchSize, batchesInFlight,
                bandwidthLimit, builtinPort, builtinConnections, builtinMaxConnections, mooncakeLibrary, sourceStrategy,
                clientId, reshardStaging, verifyRelays, multiSource);
    }

    /** The transport a seed serves: the configured one, else tcp. */
    String seedProtocol() {
        return protocol.orElse("tcp");
    }

    /** The slice size for reads over {@code transport}: the configured one, or {@code auto}'s choice. */
    long sliceSizeFor(String transport) {
        return sliceSize != 0 ? sliceSize : autoSliceSize(transport);
    }

    /** Engine family prefix that the seed's published engine name must start with. */
    String enginePrefix() {
        return engine + "-";
    }
}
