package io.weightloader.host;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorDestination;
import io.weightloader.api.TensorSlice;
import io.weightloader.api.TensorSpec;
import io.weightloader.api.TpLayout;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.api.config.LoadFormat;
import io.weightloader.api.config.WeightLoaderSettings;
import io.weightloader.api.spi.BackendContext;
import io.weightloader.api.spi.WeightLoaderBackend;
import io.weightloader.api.spi.WeightLoaderBackendProvider;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What a host calls at start-up: validates the configuration, selects the backend it names, and loads.
 *
 * <p>When {@code weight-loader.fallback = local} and the selected backend fails (to connect, to match or to
 * transfer), the local checkpoint at {@code weight-loader.model-path} is loaded instead, with a WARN log line
 * and the reason in the report. Without that setting a failure is an error: there is no silent fallback.
 *
 * <p>Thread safety: a loader may be shared between threads. Its calls are serialised (a load runs to its end
 * before another call starts, so a fallback never swaps the backend under a running load, and {@link #close()}
 * waits for the load in progress). To load in parallel, open one loader per rank or device, as
 * {@code weightloader load --tp-size N} does.
 */
public final class WeightLoader implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(WeightLoader.class);

    private final WeightLoaderSettings settings;
    private final BackendRegistry registry;
    private final BackendContext context;
    private WeightLoaderBackend backend;
    private String fallbackReason;

    private WeightLoader(WeightLoaderSettings settings, BackendRegistry registry, BackendContext context) {
        this.settings = settings;
        this.registry = registry;
        this.context = context;
    }

    /** Opens the backend that {@code config} selects, discovering providers on the context class loader. */
    public static WeightLoader open(Config config) {
        ClassLoader cl = Thread.currentThread().getContextClassLoader();
        return open(config, cl != null ? cl : WeightLoader.class.getClassLoader());
    }

    /**
     * Opens the backend that {@code config} selects, with providers and their reference.conf files found
     * through {@code loader} (for hosts that load plugins in their own class loader).
     */
    public static WeightLoader open(Config config, ClassLoader loader) {
        return open(config, BackendRegistry.discover(loader), ConfigFactory.defaultReference(loader), loader);
    }

    public static WeightLoader open(Config config, BackendRegistry registry, Config reference) {
        return open(config, registry, reference, null); // the reference's class loader is not known here
    }

    /**
     * As {@link #open(Config, BackendRegistry, Config)}, naming the class loader whose reference.conf files declare
     * the settings (where the providers come from), so that settings given as system properties are checked too;
     * null skips that check.
     */
    public static WeightLoader open(Config config, BackendRegistry registry, Config reference, ClassLoader declaring) {
        Config resolved = config.withFallback(reference).resolve();
        WeightLoaderSettings settings = WeightLoaderSettings.from(resolved, reference, declaring);
        BackendContext context = new BackendContext(settings, resolved);
        WeightLoader loader = new WeightLoader(settings, registry, context);
        // Fail fast on a backend that cannot even be selected (unknown name, wrong device, bad settings), and on
        // the fallback's settings too, before any work: a bad fallback must not surface only after a failed load.
        if (settings.loadFormat() == LoadFormat.REMOTE_INSTANCE) {
            registry.remoteProvider(settings.backend(), settings.backendFromRemoteInstance()
                    ? "weight-loader.remote-instance.backend" : "weight-loader.backend");
        }
        registry.validateSettings(context, settings.backend());
        validate(registry, settings.backend(), context);
        if (settings.remote().startSeedViaTransferEngine() && registry.providers().containsKey("transfer_engine")) {
            // SGLang's flag: this instance will also serve as a seed through transfer_engine
            refuseMemorySaverUnlessCapable(settings, "transfer_engine",
                    registry.providers().get("transfer_engine").capabilities());
        }
        if (!settings.remote().groupPorts().isEmpty()) {
            LOG.warn("weight-loader.remote-instance.send-weights-group-ports is a seed's setting (the NCCL bootstrap"
                    + " port of each of its tp ranks); this loader ignores it");
        }
        if (settings.fallback() == WeightLoaderSettings.Fallback.LOCAL && !settings.backend().equals("local")) {
            validate(registry, "local", context);
        }
        try {
            loader.backend = registry.create(settings.backend(), context);
        } catch (WeightLoaderException e) {
            if (!loader.canFallBack()) {
                throw e;
            }
            loader.fallBack(e);
        }
        LOG.info("weight loader: backend {}, engine {}, source {}", loader.backend.name(), loader.backend.engine(),
                loader.backend.source());
        return loader;
    }

    private static void validate(BackendRegistry registry, String name, BackendContext context) {
        var provider = registry.provider(name);
        if (!provider.capabilities().supports(context.settings().device())) {
            throw new io.weightloader.api.config.WeightLoaderConfigException("weight-loader.device", "backend '"
                    + name + "' cannot fill " + context.settings().device() + " memory; it supports "
                    + provider.capabilities().devices());
        }
        refuseMemorySaverUnlessCapable(context.settings(), name, provider.capabilities());
        try {
            provider.validate(context);
        } catch (LinkageError e) {
            throw new WeightLoaderException("backend '" + name + "' (" + provider.getClass().getName() + ") is built"
                    + " against an incompatible weightloader-api (SPI version " + WeightLoaderBackendProvider.SPI_VERSION
                    + " here, the plugin says " + provider.spiVersion() + "): " + e, e);
        }
    }

    /**
     * {@code enable-memory-saver} with a backend that does not declare {@link
     * io.weightloader.api.spi.BackendCapabilities#memorySaver()} is refused, naming the setting, the backend and the
     * capability.
     */
    public static void refuseMemorySaverUnlessCapable(WeightLoaderSettings settings, String backend,
                                                      io.weightloader.api.spi.BackendCapabilities capabilities) {
        if (settings.enableMemorySaver() && !capabilities.memorySaver()) {
            throw new io.weightloader.api.config.WeightLoaderConfigException("weight-loader.enable-memory-saver",
                    "memory saver is not compatible with backend '" + backend + "': it does not declare the"
                            + " memory-saver capability (BackendCapabilities.memorySaver); memory it registers must not"
                            + " be released and remapped under it");
        }
    }

    public WeightLoaderSettings settings() {
        return settings;
    }

    /** The backend in use now (the local one after a fallback). */
    public synchronized WeightLoaderBackend backend() {
        return backend;
    }

    public synchronized List<TensorSpec> available() {
        try {
            return backend.available();
        } catch (WeightLoaderException e) {
            if (!canFallBack()) {
                throw e;
            }
            fallBack(e);
            return backend.available();
        }
    }

    /**
     * What this rank holds of {@link #available()} under {@code weight-loader.tp-layout}: each split tensor's slice
     * (its shape is the slice's), every other tensor whole. Allocate memory for these, then load
     * {@link #rankRequest(List)}. With {@code tp-layout = none} (or one rank) this is {@link #available()}.
     *
     * @throws io.weightloader.api.config.WeightLoaderConfigException naming {@code weight-loader.tp-layout} when a
     *         tensor cannot be split over the tp size
     */
    public synchronized List<TensorSpec> rankSpecs() {
        List<TensorSpec> specs = available();
        return TpLayout.heldSpecs(specs, rankSlices(specs));
    }

    /**
     * The request that loads this rank's slices into {@code memory}: one destination per spec of {@link #rankSpecs()},
     * in that order (as {@code TensorArena.allocate(device, loader.rankSpecs()).destinations()} gives them).
     */
    public synchronized LoadRequest rankRequest(List<TensorDestination> memory) {
        List<TensorSpec> specs = available();
        return LoadRequest.of(TpLayout.destinations(specs, memory, rankSlices(specs)));
    }

    /** The slice of each split tensor this rank holds under the configured layout (empty: every tensor whole). */
    private Map<String, TensorSlice> rankSlices(List<TensorSpec> specs) {
        TpLayout layout = settings.tpLayout();
        return layout.isNone() ? Map.of() : layout.plan(specs, settings.tpSize(), settings.rank().tp());
    }

    /**
     * With a {@code tp-layout}, a request must ask for exactly this rank's slices: a host that allocated whole
     * tensors would otherwise get whole tensors where its rank holds slices.
     */
    private void checkRankSlices(LoadRequest request) {
        TpLayout layout = settings.tpLayout();
        if (layout.isNone()) {
            return;
        }
        Map<String, TensorSlice> planned = layout.plan(request.specs(), settings.tpSize(), settings.rank().tp());
        List<String> wrong = new ArrayList<>();
        for (TensorDestination d : request.tensors()) {
            if (!Objects.equals(planned.get(d.spec().name()), d.slice())) {
                wrong.add("'" + d.spec().name() + "' (" + (d.slice() == null ? "whole" : d.slice().toString())
                        + ", the layout gives this rank " + (planned.get(d.spec().name()) == null ? "the whole tensor"
                        : planned.get(d.spec().name()).toString()) + ")");
            }
        }
        if (!wrong.isEmpty()) {
            throw new io.weightloader.api.config.WeightLoaderConfigException(TpLayout.PATH, "tp-layout "
                    + layout.name() + " gives rank " + settings.rank().tp() + " of " + settings.tpSize()
                    + " other slices than the request holds for " + wrong.size() + " tensor(s): "
                    + String.join(", ", wrong.subList(0, Math.min(3, wrong.size())))
                    + (wrong.size() > 3 ? " and " + (wrong.size() - 3) + " more" : "")
                    + "; allocate loader.rankSpecs() and load loader.rankRequest(destinations), or set tp-layout"
                    + " = none to load whole tensors");
        }
    }

    /**
     * Loads the request with the selected backend, applying the configured checksum and extra-tensor policy
     * on top of the request's own flags. With a {@code tp-layout}, the request must hold this rank's slices
     * ({@link #rankRequest(List)}).
     */
    public synchronized LoadReport load(LoadRequest request) {
        LoadRequest effective = request.withChecksum(request.checksum() || settings.checksum())
                .withIgnoreExtraTensors(request.ignoreExtraTensors() || settings.ignoreExtraTensors());
        checkRankSlices(effective);
        try {
            refuseSlicesUnlessLoaded(effective);
            return withFallbackReason(backend.load(effective));
        } catch (WeightLoaderException e) {
            if (!canFallBack()) {
                throw e;
            }
            fallBack(e);
            refuseSlicesUnlessLoaded(effective);
            return withFallbackReason(backend.load(effective));
        }
    }

    /** A backend that would fill a slice's destination with the whole tensor must never be handed one. */
    private void refuseSlicesUnlessLoaded(LoadRequest request) {
        if (backend.loadsSlices()) {
            return;
        }
        for (TensorDestination d : request.tensors()) {
            if (d.slice() != null) {
                throw new WeightLoaderException("backend '" + backend.name() + "' cannot load tensor slices (tensor '"
                        + d.spec().name() + "' asks for " + d.slice() + " of " + d.spec().shape() + "); load whole"
                        + " tensors (weight-loader.tp-layout = none) or use a backend that loads slices (local,"
                        + " transfer_engine, nccl)");
            }
        }
    }

    private LoadReport withFallbackReason(LoadReport report) {
        return fallbackReason == null ? report : report.withFallbackReason(fallbackReason);
    }

    private boolean canFallBack() {
        return settings.fallback() == WeightLoaderSettings.Fallback.LOCAL && fallbackReason == null
                && !settings.backend().equals("local");
    }

    private void fallBack(WeightLoaderException cause) {
        fallbackReason = "backend " + settings.backend() + " failed: " + cause.getMessage();
        LOG.warn("FALLBACK TO LOCAL CHECKPOINT (weight-loader.fallback = local): backend '{}' failed: {}. "
                + "Loading {} from disk instead.", settings.backend(), cause.getMessage(),
                settings.modelPath().orElseThrow());
        if (backend != null) {
            try {
                backend.close();
            } catch (RuntimeException closeFailure) {
                LOG.warn("closing backend {} after its failure also failed", settings.backend(), closeFailure);
            }
        }
        backend = registry.create("local", context);
    }

    @Override
    public synchronized void close() {
        if (backend != null) {
            backend.close();
        }
    }
}
