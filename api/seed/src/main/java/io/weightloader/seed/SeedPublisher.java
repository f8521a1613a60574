package io.weightloader.seed;

/**
 * A rank's weights made readable by one engine (registered once, at seed start). Closing unregisters them.
 */
public interface SeedPublisher extends AutoCloseable {
    /** Engine and transport, e.g. {@code builtin-tcp}, {@code mooncake-rdma}. */
    String engine();

    /** What a client's engine dials, {@code host:port}. */
    String sessionId();

    /** How long registration took, for logs and benchmarks. */
    double registrationSeconds();

    /** Extra POST endpoints this publisher serves for its rank, by path (e.g. {@code /v1/nccl/send}). */
    default java.util.Map<String, SeedEndpoint> endpoints() {
        return java.util.Map.of();
    }

    @Override
    void close();
}
