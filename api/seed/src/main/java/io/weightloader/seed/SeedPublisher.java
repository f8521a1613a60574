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

    /**
     * A number that changes whenever this publisher serves (bytes sent, transfers started), so that a seed that is
     * stopping can tell when loads in flight have ended; -1 when the engine cannot tell (one-sided reads it never
     * sees), and then the seed waits its whole grace period.
     */
    default long activity() {
        return -1;
    }

    /** Extra POST endpoints this publisher serves for its rank, by path (e.g. {@code /v1/nccl/send}). */
    default java.util.Map<String, SeedEndpoint> endpoints() {
        return java.util.Map.of();
    }

    /** Whether reads wait for the {@link ReadyGate} given at publishing (a relay serving while it loads). */
    default boolean gatesReads() {
        return false;
    }

    @Override
    void close();
}
