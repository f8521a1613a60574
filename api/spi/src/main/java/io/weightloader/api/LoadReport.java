package io.weightloader.api;

import java.util.List;
import java.util.Objects;

/**
 * What a load did: which backend and engine, from where, every tensor (with its SHA-256 when asked),
 * totals, time and throughput. Serialises to JSON with Jackson as it stands.
 *
 * @param fallbackReason why the configured backend was abandoned for the local fallback, or null
 * @param phases         seconds per phase of the load when the backend measures them, or null
 */
public record LoadReport(String backend, String engine, String source, String device, List<TensorReport> tensors,
                         long totalBytes, double seconds, String fallbackReason, java.util.Map<String, Double> phases) {
    public LoadReport {
        Objects.requireNonNull(backend, "backend is null");
        tensors = List.copyOf(tensors);
        phases = phases == null ? null : java.util.Collections.unmodifiableMap(new java.util.LinkedHashMap<>(phases));
    }

    public LoadReport(String backend, String engine, String source, String device, List<TensorReport> tensors,
                      long totalBytes, double seconds, String fallbackReason) {
        this(backend, engine, source, device, tensors, totalBytes, seconds, fallbackReason, null);
    }

    /** The same report with seconds spent per phase (e.g. {@code group-init}, {@code transfer}). */
    public LoadReport withPhases(java.util.Map<String, Double> phaseSeconds) {
        return new LoadReport(backend, engine, source, device, tensors, totalBytes, seconds, fallbackReason,
                phaseSeconds);
    }

    public int tensorCount() {
        return tensors.size();
    }

    /** Decimal gigabytes per second. */
    public double gigabytesPerSecond() {
        return seconds <= 0 ? 0 : totalBytes / seconds / 1e9;
    }

    public LoadReport withFallbackReason(String reason) {
        return new LoadReport(backend, engine, source, device, tensors, totalBytes, seconds, reason, phases);
    }

    public String summary() {
        return String.format("loaded %d tensors, %.3f GB in %.3f s (%.2f GB/s) with backend %s, engine %s, from %s%s",
                tensors.size(), totalBytes / 1e9, seconds, gigabytesPerSecond(), backend, engine, source,
                fallbackReason == null ? "" : " [FALLBACK: " + fallbackReason + "]");
    }
}
