package io.weightloader.api.spi;

import com.typesafe.config.Config;
import io.weightloader.api.config.WeightLoaderSettings;
import java.util.Objects;

/**
 * What a provider gets to build its backend: the validated common settings and the whole resolved config,
 * from which it reads (and validates) its own subtree {@code weight-loader.backends.<name>}.
 */
public record BackendContext(WeightLoaderSettings settings, Config config) {
    public BackendContext {
        Objects.requireNonNull(settings, "settings is null");
        Objects.requireNonNull(config, "config is null");
    }

    /** Config path of a backend's own subtree. */
    public static String backendPath(String backendName) {
        return WeightLoaderSettings.ROOT + ".backends." + backendName;
    }

    /** The backend's own subtree; present whenever the backend ships a reference.conf. */
    public Config backendConfig(String backendName) {
        return config.getConfig(backendPath(backendName));
    }
}
