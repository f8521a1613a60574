package io.weightloader.registry.etcd;

import com.typesafe.config.Config;
import io.weightloader.seed.registry.SourceRegistry;
import io.weightloader.seed.registry.SourceRegistryProvider;

/** {@code weight-loader.directory = "etcd://host:port[,host:port...]"}. */
public final class EtcdRegistryProvider implements SourceRegistryProvider {
    @Override
    public String scheme() {
        return "etcd";
    }

    @Override
    public void validate(String directory, Config config) {
        EtcdSettings.read(directory, config);
    }

    @Override
    public SourceRegistry open(String directory, Config config) {
        return EtcdRegistry.connect(EtcdSettings.read(directory, config));
    }
}
