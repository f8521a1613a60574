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

    /**
     * The version of this SPI and of the SPIs a provider offers through {@link #extension} (the seed's
     * {@code io.weightloader.seed.SeedPublisherProvider}). It grows when either changes in a way a plugin can notice;
     * discovery refuses a plugin built for a newer one, naming it, instead of failing later with a raw
     * {@link LinkageError}. 3: {@link #extension}, {@link #validateSettings}, {@code BackendCapabilities.memorySaver}
     * and the builders of {@link BackendCapabilities} and {@code LoadReport}; 4: {@code LoadReport.sources} and
     * {@code SourceReport} (a load from several sources at once); plugins built for 1 to 3 still load.
     */
    int SPI_VERSION = 4;

    /**
     * The SPI version this provider was built against. Implement it as {@code return SPI_VERSION;}: the compiler
     * copies the constant into the plugin, so a plugin reports the version it was compiled with. Plugins built
     * before the SPI had versions report 1.
     */
    default int spiVersion() {
        return 1;
    }

    /**
     * What this provider offers beyond loading, looked up by interface: a backend that serves a seed's weights returns
     * its {@code io.weightloader.seed.SeedPublisherProvider} for that type. The default finds interfaces the provider
     * itself implements (as plugins built before this method did); a provider may return another object.
     */
    default <T> java.util.Optional<T> extension(Class<T> type) {
        return type.isInstance(this) ? java.util.Optional.of(type.cast(this)) : java.util.Optional.empty();
    }

    /** The name that selects this backend in {@code weight-loader.backend}, e.g. {@code local}. */
    String name();

    /** What the backend offers; no native code may load here. */
    BackendCapabilities capabilities();

    /**
     * Builds the backend. Reads and validates its own settings; a bad one is a
     * {@link io.weightloader.api.config.WeightLoaderConfigException} naming the path.
     */
    WeightLoaderBackend create(BackendContext context);

    /**
     * Reads and checks this backend's own settings (and their combination with the common ones) without starting
     * anything or loading native code. {@code io.weightloader.host.WeightLoader.open} calls it for the selected
     * backend and for the fallback, so a bad setting of either fails at start-up, not after a failed load.
     *
     * @throws io.weightloader.api.config.WeightLoaderConfigException naming the bad path
     */
    default void validate(BackendContext context) {
    }

    /**
     * Reads and checks this backend's own settings ({@code weight-loader.backends.<name>}) alone: nothing that depends
     * on which backend is selected (a seed address, a model path), no native code. Called at start-up for every
     * installed backend, selected or not, so a bad value under any backend's subtree is refused before it can surface
     * in a later load, and {@link #validate} of the selected one follows.
     *
     * @throws io.weightloader.api.config.WeightLoaderConfigException naming the bad path
     */
    default void validateSettings(BackendContext context) {
    }

    /**
     * The native libraries this backend can use and whether this machine has them, for diagnostics
     * ({@code weightloader backends}). May open libraries with the dynamic linker; must not throw.
     */
    default java.util.List<NativePart> nativeParts(BackendContext context) {
        return java.util.List.of();
    }
}
