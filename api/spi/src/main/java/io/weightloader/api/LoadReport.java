package io.weightloader.api;

import java.util.List;
import java.util.Objects;

/**
 * What a load did: which backend and engine, from where, every tensor (with its SHA-256 when asked),
 * totals, time and throughput. Serialises to JSON with Jackson as it stands.
 *
 * @param fallbackReason why the configured backend was abandoned for the local fallback, or null
 * @param phases         seconds per phase of the load when the backend measures them, or null
 * @param sources        a load that read from several sources at once: each source, what it delivered and any failover;
 *                       null otherwise
 */
public record LoadReport(String backend, String engine, String source, String device, List<TensorReport> tensors,
                         long totalBytes, double seconds, String fallbackReason, java.util.Map<String, Double> phases,
                         List<SourceReport> sources) {
    public LoadReport {
        Objects.requireNonNull(backend, "backend is null");
        tensors = List.copyOf(tensors);
        phases = phases == null ? null : java.util.Collections.unmodifiableMap(new java.util.LinkedHashMap<>(phases));
        sources = sources == null ? null : List.copyOf(sources);
    }

    public LoadReport(String backend, String engine, String source, String device, List<TensorReport> tensors,
                      long totalBytes, double seconds, String fallbackReason, java.util.Map<String, Double> phases) {
        this(backend, engine, source, device, tensors, totalBytes, seconds, fallbackReason, phases, null);
    }

    public LoadReport(String backend, String engine, String source, String device, List<TensorReport> tensors,
                      long totalBytes, double seconds, String fallbackReason) {
        this(backend, engine, source, device, tensors, totalBytes, seconds, fallbackReason, null, null);
    }

    /** The same report with seconds spent per phase (e.g. {@code group-init}, {@code transfer}). */
    public LoadReport withPhases(java.util.Map<String, Double> phaseSeconds) {
        return new LoadReport(backend, engine, source, device, tensors, totalBytes, seconds, fallbackReason,
                phaseSeconds, sources);
    }

    public int tensorCount() {
        return tensors.size();
    }

    /** Decimal gigabytes per second. */
    public double gigabytesPerSecond() {
        return seconds <= 0 ? 0 : totalBytes / seconds / 1e9;
    }

    public LoadReport withFallbackReason(String reason) {
        return new LoadReport(backend, engine, source, device, tensors, totalBytes, seconds, reason, phases, sources);
    }

    /** A builder: backends build their reports with it, so that a field added later does not break their source. */
    public static Builder builder(String backend) {
        return new Builder(backend);
    }

    /** Builds a {@link LoadReport}; every field but the backend has a default (none, zero, empty). */
    public static final class Builder {
        private final String backend;
        private String engine = "";
        private String source = "";
        private String device = "cpu";
        private List<TensorReport> tensors = List.of();
        private long totalBytes;
        private double seconds;
        private String fallbackReason;
        private java.util.Map<String, Double> phases;
        private List<SourceReport> sources;

        private Builder(String backend) {
            this.backend = Objects.requireNonNull(backend, "backend is null");
        }

        public Builder engine(String v) {
            engine = v;
            return this;
        }

        public Builder source(String v) {
            source = v;
            return this;
        }

        public Builder device(String v) {
            device = v;
            return this;
        }

        public Builder tensors(List<TensorReport> v) {
            tensors = v;
            return this;
        }

        public Builder totalBytes(long v) {
            totalBytes = v;
            return this;
        }

        public Builder seconds(double v) {
            seconds = v;
            return this;
        }

        public Builder fallbackReason(String v) {
            fallbackReason = v;
            return this;
        }

        public Builder phases(java.util.Map<String, Double> v) {
            phases = v;
            return this;
        }

        /** Each source of a load that read from several at once. */
        public Builder sources(List<SourceReport> v) {
            sources = v;
            return this;
        }

        public LoadReport build() {
            return new LoadReport(backend, engine, source, device, tensors, totalBytes, seconds, fallbackReason,
                    phases, sources);
        }
    }

    public String summary() {
        return String.format("loaded %d tensors, %.3f GB in %.3f s (%.2f GB/s) with backend %s, engine %s, from %s%s",
                tensors.size(), totalBytes / 1e9, seconds, gigabytesPerSecond(), backend, engine, source,
                fallbackReason == null ? "" : " [FALLBACK: " + fallbackReason + "]");
    }
}
