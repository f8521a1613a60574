package io.weightloader.seed.registry;

import com.typesafe.config.Config;
import io.weightloader.api.config.SettingsReader;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.config.WeightLoaderSettings;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.ServiceConfigurationError;
import java.util.ServiceLoader;

/**
 * {@code weight-loader.directory} and {@code weight-loader.model-id}: which registry the sources of a model are found
 * in, read and checked up front ({@link #settings(Config)}), and opened by its provider ({@link #open(Config)}).
 */
public final class Registries {
    public static final String DIRECTORY = WeightLoaderSettings.ROOT + ".directory";
    public static final String MODEL_ID = WeightLoaderSettings.ROOT + ".model-id";

    /**
     * @param directory "" (in-process) or a registry's URL, such as {@code etcd://host:port[,host:port...]}
     * @param modelId   the model's id, or empty when not set
     */
    public record Settings(String directory, Optional<String> modelId) {
        public boolean inProcess() {
            return directory.isEmpty();
        }

        /** The directory's scheme ({@code etcd}), or "" for the in-process one. */
        public String scheme() {
            int colon = directory.indexOf("://");
            return colon < 0 ? "" : directory.substring(0, colon);
        }
    }

    private Registries() {
    }

    /**
     * Reads and checks the registry settings, including the chosen provider's own (without connecting).
     *
     * @throws WeightLoaderConfigException naming the bad path
     */
    public static Settings settings(Config config) {
        SettingsReader r = new SettingsReader(config, WeightLoaderSettings.ROOT);
        String directory = r.string("directory").trim();
        Optional<String> modelId = r.optionalString("model-id").map(String::trim).filter(s -> !s.isEmpty());
        if (modelId.isPresent()) {
            try {
                SourceEntry.checkModelId(modelId.get());
            } catch (IllegalArgumentException e) {
                throw r.error("model-id", e.getMessage());
            }
        }
        Settings s = new Settings(directory, modelId);
        if (!s.inProcess()) {
            if (!directory.matches("[a-z][a-z0-9+.-]*://.+")) {
                throw r.error("directory", "must be empty (the in-process directory) or a registry's URL such as"
                        + " etcd://host:2379[,host:2379...]; got '" + Fingerprint.clip(directory) + "'");
            }
            provider(s).validate(directory, config);
        }
        return s;
    }

    /**
     * Opens the configured registry: a new in-process one when {@code weight-loader.directory} is empty.
     *
     * @throws WeightLoaderConfigException a bad setting, naming its path
     * @throws RegistryException the registry could not be reached (the message names it)
     */
    public static SourceRegistry open(Config config) {
        Settings s = settings(config);
        return s.inProcess() ? new InProcessRegistry() : provider(s).open(s.directory(), config);
    }

    private static SourceRegistryProvider provider(Settings s) {
        List<String> available = new ArrayList<>();
        SourceRegistryProvider found = null;
        ClassLoader cl = Thread.currentThread().getContextClassLoader();
        var it = ServiceLoader.load(SourceRegistryProvider.class,
                cl != null ? cl : Registries.class.getClassLoader()).iterator();
        while (true) {
            SourceRegistryProvider p;
            try {
                if (!it.hasNext()) {
                    break;
                }
                p = it.next();
            } catch (ServiceConfigurationError e) {
                throw new WeightLoaderConfigException(DIRECTORY, "a registry provider could not be loaded: "
                        + e.getMessage(), e);
            }
            available.add(p.scheme());
            if (p.scheme().equals(s.scheme()) && found == null) {
                found = p;
            }
        }
        if (found == null) {
            throw new WeightLoaderConfigException(DIRECTORY, "no registry for '" + s.scheme() + "://' is installed"
                    + (s.scheme().equals("etcd") ? " (add io.weightloader:weightloader-registry-etcd to the class path)"
                    : "") + ". Available: " + available + " and \"\" (in-process)");
        }
        return found;
    }
}
