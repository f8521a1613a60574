package io.weightloader.seed.registry;

import com.typesafe.config.Config;

/**
 * Opens a registry for {@code weight-loader.directory} values of one scheme (ServiceLoader; one
 * {@code META-INF/services/io.weightloader.seed.registry.SourceRegistryProvider} line per module).
 */
public interface SourceRegistryProvider {
    /** The scheme this provider opens, such as {@code etcd}. Cheap: no connection, no native code. */
    String scheme();

    /**
     * Reads and validates this provider's settings (its own subtree of {@code config}) without connecting.
     *
     * @throws io.weightloader.api.config.WeightLoaderConfigException naming the bad path
     */
    void validate(String directory, Config config);

    /**
     * Connects to the registry at {@code directory} (the whole {@code weight-loader.directory} value).
     *
     * @throws io.weightloader.api.config.WeightLoaderConfigException a bad setting, naming its path
     * @throws RegistryException the registry could not be reached (the message names it)
     */
    SourceRegistry open(String directory, Config config);
}
