package io.weightloader.host;

import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.WeightLoaderConfigException;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.ServiceConfigurationError;
import java.util.ServiceLoader;
import java.util.TreeMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The backend providers found on a class path. Discovery never lets one broken provider hide the others:
 * each failure is kept and named in the errors, and two providers with one name are refused outright.
 */
public final class BackendRegistry {
    private static final Logger LOG = LoggerFactory.getLogger(BackendRegistry.class);

    /** The artifacts that provide this project's own backends, named when one is missing from the class path. */
    static final Map<String, String> KNOWN_ARTIFACTS = Map.of(
            "local", "io.weightloader:weightloader-backend-local",
            "transfer_engine", "io.weightloader:weightloader-backend-transfer-engine",
            "nccl", "io.weightloader:weightloader-backend-nccl");

    private final Map<String, WeightLoaderBackendProvider> providers;
    private final List<String> failures;

    private BackendRegistry(Map<String, WeightLoaderBackendProvider> providers, List<String> failures) {
        this.providers = Collections.unmodifiableMap(providers);
        this.failures = List.copyOf(failures);
    }

    /** Discovers providers with the thread's context class loader. */
    public static BackendRegistry discover() {
        ClassLoader cl = Thread.currentThread().getContextClassLoader();
        return discover(cl != null ? cl : BackendRegistry.class.getClassLoader());
    }

    /**
     * Discovers providers with {@link ServiceLoader} on {@code loader}.
     *
     * @throws WeightLoaderException when two providers share a name (both are named, with their jars)
     */
    public static BackendRegistry discover(ClassLoader loader) {
        Map<String, WeightLoaderBackendProvider> found = new TreeMap<>();
        List<String> failures = new ArrayList<>();
        Iterator<WeightLoaderBackendProvider> it =
                ServiceLoader.load(WeightLoaderBackendProvider.class, loader).iterator();
        while (true) {
            WeightLoaderBackendProvider p;
            try {
                if (!it.hasNext()) {
                    break;
                }
                p = it.next();
            } catch (ServiceConfigurationError e) {
                String why = e.getMessage() + (e.getCause() != null ? " (" + e.getCause() + ")" : "");
                failures.add(why);
                LOG.warn("a weight-loader backend provider could not be instantiated: {}", why);
                continue;
            }
            String name;
            try {
                name = p.name();
                int v = p.spiVersion();
                if (v > WeightLoaderBackendProvider.SPI_VERSION || v < 1) {
                    failures.add(where(p) + " was built for weightloader SPI version " + v + ", but this weightloader"
                            + " speaks version " + WeightLoaderBackendProvider.SPI_VERSION + ": use a build of the plugin"
                            + " for this version, or upgrade weightloader");
                    LOG.warn("weight-loader backend provider {} skipped: SPI version {} (this is {})",
                            p.getClass().getName(), v, WeightLoaderBackendProvider.SPI_VERSION);
                    continue;
                }
                java.util.Objects.requireNonNull(p.capabilities(), "capabilities() returned null");
            } catch (RuntimeException | LinkageError e) {
                failures.add(where(p) + " is broken or built against an incompatible weightloader-api (SPI version "
                        + WeightLoaderBackendProvider.SPI_VERSION + " here): " + e);
                LOG.warn("a weight-loader backend provider could not be used: {}", e.toString());
                continue;
            }
            WeightLoaderBackendProvider previous = found.putIfAbsent(name, p);
            if (previous != null) {
                throw new WeightLoaderException("Two weight-loader backend providers are named '" + name + "': "
                        + where(previous) + " and " + where(p) + ". Remove one jar from the class path.");
            }
        }
        return new BackendRegistry(found, failures);
    }

    /**
     * A registry of the given providers, without discovery (for hosts that wire providers themselves, and tests).
     *
     * @throws WeightLoaderException when two providers share a name
     */
    public static BackendRegistry of(List<? extends WeightLoaderBackendProvider> providers) {
        Map<String, WeightLoaderBackendProvider> found = new TreeMap<>();
        for (WeightLoaderBackendProvider p : providers) {
            WeightLoaderBackendProvider previous = found.putIfAbsent(p.name(), p);
            if (previous != null) {
                throw new WeightLoaderException("Two weight-loader backend providers are named '" + p.name() + "': "
                        + where(previous) + " and " + where(p));
            }
        }
        return new BackendRegistry(found, List.of());
    }

    private static String where(WeightLoaderBackendProvider p) {
        var cs = p.getClass().getProtectionDomain().getCodeSource();
        return p.getClass().getName() + " (" + (cs != null && cs.getLocation() != null ? cs.getLocation() : "unknown jar")
                + ")";
    }

    /** Names of the available backends, sorted. */
    public List<String> names() {
        return List.copyOf(providers.keySet());
    }

    /**
     * Every installed backend, sorted by name, with its capabilities and its native libraries looked for with
     * {@code context}'s settings (e.g. {@code backends.transfer_engine.mooncake.library}); see {@link #failures()} for
     * providers that failed to load.
     */
    public List<InstalledBackend> describe(BackendContext context) {
        return providers.values().stream().map(p -> InstalledBackend.of(p, context)).toList();
    }

    /** Providers that failed to instantiate, with the reason, for diagnostics. */
    public List<String> failures() {
        return failures;
    }

    /**
     * The provider named {@code name}.
     *
     * @throws WeightLoaderConfigException naming {@code weight-loader.backend} and the available backends
     */
    public WeightLoaderBackendProvider provider(String name) {
        WeightLoaderBackendProvider p = providers.get(name);
        if (p == null) {
            StringBuilder msg = new StringBuilder("No backend '").append(name).append("'. Available backends: ")
                    .append(names());
            String artifact = KNOWN_ARTIFACTS.get(name);
            if (artifact != null) {
                msg.append(". '").append(name).append("' is provided by ").append(artifact)
                        .append(": put its jar on the class path (the weightloader distribution's lib/ carries it)");
            }
            if (!failures.isEmpty()) {
                msg.append(". Providers that failed to load: ").append(failures);
            }
            throw new WeightLoaderConfigException("weight-loader.backend", msg.toString());
        }
        return p;
    }

    /** Every provider found, by name. */
    public Map<String, WeightLoaderBackendProvider> providers() {
        return providers;
    }

    /**
     * The provider named {@code name}, which must read from a seed (selected by
     * {@code weight-loader.remote-instance.backend}).
     *
     * @throws WeightLoaderConfigException naming {@code path} when it is missing or reads from elsewhere
     */
    public WeightLoaderBackendProvider remoteProvider(String name, String path) {
        WeightLoaderBackendProvider p;
        try {
            p = provider(name);
        } catch (WeightLoaderConfigException e) {
            throw new WeightLoaderConfigException(path, e.problem());
        }
        if (!p.capabilities().readsFromSeed()) {
            throw new WeightLoaderConfigException(path, "backend '" + name + "' does not read from a seed; backends "
                    + "that do: " + providers.values().stream().filter(x -> x.capabilities().readsFromSeed())
                    .map(WeightLoaderBackendProvider::name).toList());
        }
        return p;
    }

    /**
     * Checks the own settings of every installed backend ({@link WeightLoaderBackendProvider#validateSettings}),
     * whichever is selected: a bad value under {@code weight-loader.backends.<name>} is refused at start-up.
     *
     * @throws WeightLoaderConfigException naming the bad path, and, for a backend other than {@code selected}, that
     *                                     its settings are checked because it is installed
     */
    public void validateSettings(BackendContext context, String selected) {
        for (WeightLoaderBackendProvider p : providers.values()) {
            try {
                p.validateSettings(context);
            } catch (WeightLoaderConfigException e) {
                if (p.name().equals(selected)) {
                    throw e;
                }
                throw new WeightLoaderConfigException(e.path(), e.problem() + " (backend '" + p.name() + "' is"
                        + " installed: the settings of every installed backend are checked, whichever one loads)", e);
            }
        }
    }

    /**
     * Creates the named backend; a provider that throws is reported with its name and class.
     */
    public WeightLoaderBackend create(String name, BackendContext context) {
        WeightLoaderBackendProvider p = provider(name);
        if (!p.capabilities().supports(context.settings().device())) {
            throw new WeightLoaderConfigException("weight-loader.device", "backend '" + name + "' cannot fill "
                    + context.settings().device() + " memory; it supports " + p.capabilities().devices());
        }
        try {
            return p.create(context);
        } catch (WeightLoaderException e) {
            throw e;
        } catch (RuntimeException | LinkageError e) {
            throw new WeightLoaderException("backend '" + name + "' (" + p.getClass().getName()
                    + ") failed to start: " + e, e);
        }
    }
}
