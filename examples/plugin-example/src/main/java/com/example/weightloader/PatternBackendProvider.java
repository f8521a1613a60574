package com.example.weightloader;

import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorMatcher;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.config.SettingsReader;
import io.weightloader.api.spi.BackendCapabilities;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * An example third-party backend, "pattern": it offers the tensors listed in its own config and fills each
 * with a deterministic byte pattern ({@code (seed + i) & 0xff} for byte i). It shows everything a plugin
 * needs: a provider with a cheap name, its own reference.conf subtree read with {@link SettingsReader} and checked at
 * start-up ({@link #validateSettings}, {@link #validate}) with errors that name the config path, matching by name
 * through {@link TensorMatcher}, and a report.
 */
public final class PatternBackendProvider implements WeightLoaderBackendProvider {
    public static final String NAME = "pattern";

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
        return BackendCapabilities.builder().devices(Device.Kind.CPU).build();
    }

    /**
     * Reads and checks {@code weight-loader.backends.pattern} alone, for every installed backend at start-up: the
     * defaults (no tensors) are valid, so an installed but unselected plugin never stops a host.
     */
    @Override
    public void validateSettings(BackendContext context) {
        PatternSettings.from(context);
    }

    /** As {@link #validateSettings}, and, since it is selected, it must offer something to load. */
    @Override
    public void validate(BackendContext context) {
        selected(context);
    }

    @Override
    public WeightLoaderBackend create(BackendContext context) {
        PatternSettings s = selected(context);
        return new PatternBackend(s.seed(), s.tensors());
    }

    private static PatternSettings selected(BackendContext context) {
        PatternSettings s = PatternSettings.from(context);
        if (s.tensors().isEmpty()) {
            throw new SettingsReader(context.config(), BackendContext.backendPath(NAME)).error("tensors",
                    "lists no tensors, so the pattern backend has nothing to load; list them as { name, dtype, shape }");
        }
        return s;
    }

    static final class PatternBackend implements WeightLoaderBackend {
        private final int seed;
        private final List<TensorSpec> specs;

        PatternBackend(int seed, List<TensorSpec> specs) {
            this.seed = seed;
            this.specs = List.copyOf(specs);
        }

        @Override
        public String name() {
            return NAME;
        }

        @Override
        public String source() {
            return "pattern(seed=" + seed + ")";
        }

        @Override
        public String engine() {
            return "java";
        }

        @Override
        public List<TensorSpec> available() {
            return specs;
        }

        @Override
        public LoadReport load(LoadRequest request) {
            long t0 = System.nanoTime();
            TensorMatcher.check(source(), specs, request.specs(), request.ignoreExtraTensors());
            List<TensorReport> reports = new ArrayList<>();
            for (TensorDestination d : request.tensors()) {
                int n = (int) d.byteSize();
                ByteBuffer b = d.region().byteBuffer(0, n);
                for (int i = 0; i < n; i++) {
                    b.put(i, (byte) (seed + i));
                }
                reports.add(TensorReport.of(d.spec(),
                        request.checksum() ? sha256(d.region().byteBuffer(0, (int) n)) : null));
            }
            return LoadReport.builder(NAME).engine(engine()).source(source()).device("cpu").tensors(reports)
                    .totalBytes(request.totalBytes()).seconds((System.nanoTime() - t0) / 1e9).build();
        }

        @Override
        public void close() {
        }
    }

    /** Hex SHA-256 with the JDK alone: a plugin needs nothing beyond weightloader-api. */
    static String sha256(ByteBuffer bytes) {
        try {
            java.security.MessageDigest md = java.security.MessageDigest.getInstance("SHA-256");
            md.update(bytes);
            return java.util.HexFormat.of().formatHex(md.digest());
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
