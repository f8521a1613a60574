package io.weightloader.api.spi;

/**
 * A pluggable weight loader, discovered with {@link java.util.ServiceLoader}.
 *
 * <p>To add a backend: implement this interface with a public no-argument constructor, list the class in
 * {@code META-INF/services/io.weightloader.api.spi.WeightLoaderBackendProvider}, ship a
 * {@code reference.conf} declaring {@code weight-loader.backends.<name> { ... }}, and put the jar on the
 * class path. {@link #name()} and {@link #capabilities()} must be cheap: load native libraries in
 * {@link #create}, never in the constructor.
 */
public interface WeightLoaderBackendProvider {

    /** The name that selects this backend in {@code weight-loader.backend}, e.g. {@code local}. */
    String name();

    /** What the backend offers; no native code may load here. */
    BackendCapabilities capabilities();

    /**
     * Builds the backend. Reads and validates its own settings; a bad one is a
     * {@link io.weightloader.api.config.WeightLoaderConfigException} naming the path.
     */
    WeightLoaderBackend create(BackendContext context);
}
