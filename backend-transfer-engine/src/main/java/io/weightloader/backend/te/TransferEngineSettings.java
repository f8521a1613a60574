package io.weightloader.backend.te;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import io.weightloader.api.config.WeightLoaderConfigException;
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
        Optional<String> mooncakeLibrary) {

    static final String PATH = BackendContext.backendPath(TransferEngineProvider.NAME);

    static TransferEngineSettings from(BackendContext context) {
        Config c = context.backendConfig(TransferEngineProvider.NAME);
        String engine = c.getString("engine").trim();
        if (!engine.equals("builtin") && !engine.equals("mooncake")) {
            throw new WeightLoaderConfigException(PATH + ".engine", "must be builtin or mooncake; got '" + engine + "'");
        }
        Optional<String> protocol = opt(c.getString("protocol"));
        if (protocol.isPresent() && !protocol.get().matches("[a-z_0-9]+")) {
            throw new WeightLoaderConfigException(PATH + ".protocol", "must be a transport name such as tcp, rdma or "
                    + "nvlink_intra, or empty (a seed serves tcp; a client uses what its seed serves); got '"
                    + protocol.get() + "'");
        }
        if (engine.equals("builtin") && protocol.isPresent() && !protocol.get().equals("tcp")) {
            throw new WeightLoaderConfigException(PATH + ".protocol", "the builtin engine speaks tcp only; got '"
                    + protocol.get() + "' (use engine = mooncake for " + protocol.get() + ")");
        }
        long slice = c.getString("slice-size").trim().equals("auto") ? 0 : bytes(c, "slice-size");
        if (slice != 0 && (slice < 4096 || slice > (1L << 30))) {
            throw new WeightLoaderConfigException(PATH + ".slice-size", "must be between 4 KiB and 1 GiB; got " + slice);
        }
        int batch = c.getInt("batch-size");
        if (batch < 1 || batch > 1024) {
            throw new WeightLoaderConfigException(PATH + ".batch-size", "must be in 1..1024; got " + batch);
        }
        int inFlight = c.getInt("batches-in-flight");
        if (inFlight < 1 || inFlight > 16) {
            throw new WeightLoaderConfigException(PATH + ".batches-in-flight", "must be in 1..16; got " + inFlight);
        }
        long cap = bytes(c, "bandwidth-limit");
        if (cap < 0) {
            throw new WeightLoaderConfigException(PATH + ".bandwidth-limit", "must be >= 0; got " + cap);
        }
        int port = c.getInt("builtin.port");
        if (port < 0 || port > 65535) {
            throw new WeightLoaderConfigException(PATH + ".builtin.port", "must be in 0..65535; got " + port);
        }
        int conns = c.getInt("builtin.connections");
        if (conns < 1 || conns > 64) {
            throw new WeightLoaderConfigException(PATH + ".builtin.connections", "must be in 1..64; got " + conns);
        }
        int maxConns = c.getInt("builtin.max-connections");
        if (maxConns < 1 || maxConns > 4096) {
            throw new WeightLoaderConfigException(PATH + ".builtin.max-connections", "must be in 1..4096; got "
                    + maxConns);
        }
        return new TransferEngineSettings(engine, protocol, opt(c.getString("hostname")), opt(c.getString("devices")),
                slice, batch, inFlight, cap, port, conns, maxConns, opt(c.getString("mooncake.library")));
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

    private static long bytes(Config c, String key) {
        try {
            return c.getBytes(key);
        } catch (ConfigException e) {
            throw new WeightLoaderConfigException(PATH + "." + key, "must be a size such as 64 MiB"
                    + (key.equals("slice-size") ? " or auto" : ""), e);
        }
    }

    private static Optional<String> opt(String s) {
        return s == null || s.isBlank() ? Optional.empty() : Optional.of(s.trim());
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
