package io.weightloader.api.config;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigValue;
import com.typesafe.config.ConfigValueType;
import io.weightloader.api.Device;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.TreeSet;

/**
 * Every {@code weight-loader} setting, read once from {@link Config} and validated up front: a bad value
 * fails here, at start-up, with its config path in the message, never later in the middle of a load.
 */
public record WeightLoaderSettings(
        String backend,
        LoadFormat loadFormat,
        Optional<String> modelPath,
        Device device,
        boolean enableMemorySaver,
        boolean checksum,
        Fallback fallback,
        boolean ignoreExtraTensors,
        RankKey rank,
        int tpSize,
        io.weightloader.api.TpLayout tpLayout,
        Remote remote,
        Seed seed,
        Tls tls) {

    public static final String ROOT = "weight-loader";

    /** Largest tp rank or pp stage accepted (the control plane's limit too). */
    public static final int MAX_RANK = 1_000_000;

    /** Settings given as a list or as one string holding the list. */
    private static final java.util.Set<String> LIST_OR_STRING = java.util.Set.of(
            ROOT + ".remote-instance.send-weights-group-ports", ROOT + ".seed.serve");

    /** What to do when a remote load fails. */
    public enum Fallback { NONE, LOCAL }

    /** {@code weight-loader.remote-instance}: where the seed is and how long to wait for it. */
    public record Remote(
            Optional<String> seedIp,
            int seedPort,
            List<Integer> groupPorts,
            String groupName,
            String backend,
            boolean startSeedViaTransferEngine,
            Optional<String> token,
            Duration connectTimeout,
            Duration requestTimeout,
            Duration transferTimeout,
            int retries) {
    }

    /** {@code weight-loader.seed}: where this process's control plane listens when it serves as a seed. */
    /**
     * @param serve the backends whose clients this seed serves ({@code transfer_engine}, {@code nccl}, or any
     *              installed backend that can publish a seed's weights), in the order given
     */
    /**
     * {@code weight-loader.tls}: PEM files. A seed serves TLS when it has a certificate and key; a client speaks TLS
     * when it has a ca; a seed with a ca requires client certificates.
     */
    public record Tls(Optional<java.nio.file.Path> certificate, Optional<java.nio.file.Path> key,
                      Optional<java.nio.file.Path> ca) {
        /** Whether a seed serves TLS. */
        public boolean serves() {
            return certificate.isPresent();
        }

        /** Whether a client speaks TLS to its seed. */
        public boolean speaks() {
            return ca.isPresent();
        }
    }

    public record Seed(String bindAddress, int servicePort, boolean publishChecksums, List<String> serve,
                       Duration shutdownGrace, boolean allowPlainToken) {
        public Seed {
            serve = List.copyOf(serve);
        }

        /** True when the bind address is only reachable from this machine. */
        public boolean isLoopback() {
            try {
                return InetAddress.getByName(bindAddress).isLoopbackAddress();
            } catch (UnknownHostException e) {
                return false;
            }
        }
    }

    public WeightLoaderSettings {
        Objects.requireNonNull(backend, "backend is null");
        Objects.requireNonNull(loadFormat, "loadFormat is null");
        Objects.requireNonNull(remote, "remote is null");
        Objects.requireNonNull(seed, "seed is null");
    }

    /** True when the backend was chosen by {@code remote-instance.backend} (not set by {@code backend}). */
    public boolean backendFromRemoteInstance() {
        return loadFormat == LoadFormat.REMOTE_INSTANCE && backend.equals(remote.backend());
    }

    /** Loads application.conf / system properties / environment over every module's reference.conf. */
    public static WeightLoaderSettings load() {
        return from(ConfigFactory.load());
    }

    /**
     * Reads and validates {@code weight-loader} from a resolved config that includes the reference
     * settings (as {@link ConfigFactory#load()} gives).
     *
     * @throws WeightLoaderConfigException naming the first bad path (unknown keys are all listed)
     */
    public static WeightLoaderSettings from(Config config) {
        ClassLoader cl = Thread.currentThread().getContextClassLoader();
        cl = cl != null ? cl : WeightLoaderSettings.class.getClassLoader();
        return from(config, ConfigFactory.defaultReference(cl), cl);
    }

    /**
     * As {@link #from(Config)}, with the reference settings (every module's reference.conf) given, e.g.
     * {@code ConfigFactory.defaultReference(pluginClassLoader)}.
     */
    public static WeightLoaderSettings from(Config config, Config reference) {
        // the reference may come from a plugin's class loader, which this method does not know: keys set with -D
        // are then taken as declared when the reference has them (from(config, reference, loader) checks them)
        return from(config, reference, null);
    }

    /**
     * As {@link #from(Config, Config)}, with the class loader whose reference.conf files declare the settings:
     * Typesafe's reference config carries every system property, so it alone cannot tell a declared key set with
     * {@code -D} from a misspelt one.
     */
    public static WeightLoaderSettings from(Config config, Config reference, ClassLoader declaring) {
        rejectUnknownKeys(config, reference, declaring);
        try {
            config.checkValid(reference, ROOT);
        } catch (ConfigException.ValidationFailed e) {
            for (ConfigException.ValidationProblem problem : e.problems()) {
                // these take a list, or SGLang's spelling of one as a string: read (and checked) below
                if (!LIST_OR_STRING.contains(problem.path())) {
                    throw new WeightLoaderConfigException(problem.path(), problem.problem(), e);
                }
            }
        }
        SettingsReader r = new SettingsReader(config, ROOT);

        LoadFormat format = LoadFormat.parse(r.path("load-format"), r.string("load-format"));
        Optional<String> modelPath = r.optionalString("model-path");
        Device device;
        try {
            device = Device.parse(r.string("device"));
        } catch (IllegalArgumentException e) {
            throw r.error("device", e.getMessage());
        }
        boolean memorySaver = r.bool("enable-memory-saver");
        boolean checksum = r.oneOf("checksum", List.of("none", "sha256")).equals("sha256");
        Fallback fallback = r.oneOf("fallback", List.of("none", "local")).equals("local") ? Fallback.LOCAL
                : Fallback.NONE;
        boolean ignoreExtra = r.oneOf("extra-tensors", List.of("error", "ignore")).equals("ignore");
        RankKey rank = new RankKey(r.integer("rank.tp", 0, MAX_RANK), r.integer("rank.pp", 0, MAX_RANK));
        int tpSize = r.integer("rank.tp-size", 1, MAX_RANK + 1);
        if (tpSize > 1 && rank.tp() >= tpSize) {
            throw r.error("rank.tp", "must be below rank.tp-size (" + tpSize + "); got " + rank.tp());
        }
        io.weightloader.api.TpLayout tpLayout;
        try {
            tpLayout = io.weightloader.api.TpLayout.parse(r.string("tp-layout"));
        } catch (WeightLoaderConfigException e) {
            throw r.error("tp-layout", e.problem());
        }

        String ri = "remote-instance.";
        List<Integer> groupPorts = groupPorts(r, ri + "send-weights-group-ports");
        String remoteBackend = r.string(ri + "backend");
        if (!remoteBackend.matches("[A-Za-z0-9_.-]+")) {
            throw r.error(ri + "backend", "must name a backend that reads from a seed, such as transfer_engine or nccl;"
                    + " got '" + remoteBackend + "'");
        }
        int seedPort = r.integer(ri + "seed-instance-service-port", 0, 65535);
        String seedIp = r.string(ri + "seed-instance-ip");
        if (!seedIp.isEmpty() && !seedIp.matches("[A-Za-z0-9._:\\[\\]%-]+")) {
            throw r.error(ri + "seed-instance-ip", "must be a host name or an IP address; got '" + seedIp + "'");
        }
        Remote remote = new Remote(
                seedIp.isEmpty() ? Optional.empty() : Optional.of(seedIp),
                seedPort,
                List.copyOf(groupPorts),
                r.string(ri + "send-weights-group-name"),
                remoteBackend,
                r.bool(ri + "start-seed-via-transfer-engine"),
                r.optionalString(ri + "token"),
                r.duration(ri + "connect-timeout", Duration.ofMillis(1), Duration.ofHours(1)),
                r.duration(ri + "request-timeout", Duration.ofMillis(1), Duration.ofHours(1)),
                r.duration(ri + "transfer-timeout", Duration.ofMillis(1), Duration.ofDays(1)),
                r.integer(ri + "retries", 0, 100));

        int servicePort = r.integer("seed.service-port", 0, 65535);
        String bind = r.string("seed.bind-address");
        if (bind.isBlank()) {
            throw r.error("seed.bind-address", "must not be empty");
        }
        List<String> serve = names(r, "seed.serve");
        if (remote.startSeedViaTransferEngine() && !serve.contains("transfer_engine")) {
            throw r.error("seed.serve", "remote-instance.start-seed-via-transfer-engine = true asks this seed to serve"
                    + " transfer_engine clients, but seed.serve is " + serve
                    + "; add transfer_engine to it, or drop the SGLang flag");
        }
        Seed seed = new Seed(bind, servicePort, r.bool("seed.publish-checksums"), serve,
                r.duration("seed.shutdown-grace", Duration.ZERO, Duration.ofHours(1)), r.bool("seed.allow-plain-token"));
        Tls tls = new Tls(pemFile(r, "tls.certificate"), pemFile(r, "tls.key"), pemFile(r, "tls.ca"));
        if (tls.certificate().isPresent() != tls.key().isPresent()) {
            throw r.error(tls.certificate().isPresent() ? "tls.key" : "tls.certificate",
                    "tls.certificate and tls.key go together: set both, or neither");
        }

        String backend = r.string("backend");
        if (backend.isEmpty()) {
            backend = format == LoadFormat.REMOTE_INSTANCE ? remoteBackend : "local";
        }

        // Cross-field checks, each naming the path to change.
        if (format == LoadFormat.REMOTE_INSTANCE) {
            // a registry (weight-loader.directory, declared by the seed module) lists the sources instead
            boolean registry = config.hasPath(ROOT + ".directory") && !config.getString(ROOT + ".directory").isBlank();
            if (remote.seedIp().isEmpty() && !registry) {
                throw r.error(ri + "seed-instance-ip", "load-format remote_instance needs the seed's address (or a"
                        + " registry that lists the model's sources: weight-loader.directory and weight-loader.model-id)");
            }
            if (seedPort == 0 && remote.seedIp().isPresent()) {
                throw r.error(ri + "seed-instance-service-port",
                        "load-format remote_instance needs the seed's control-plane port");
            }
        }
        // enable-memory-saver is checked against the backends' capabilities where they are known (WeightLoader.open,
        // SeedService.bind): BackendCapabilities.memorySaver
        if (fallback == Fallback.LOCAL && modelPath.isEmpty()) {
            throw r.error("model-path", "fallback = local needs the checkpoint to fall back to");
        }
        return new WeightLoaderSettings(backend, format, modelPath, device, memorySaver, checksum, fallback,
                ignoreExtra, rank, tpSize, tpLayout, remote, seed, tls);
    }

    /** A PEM file setting: empty, or a readable regular file. */
    private static Optional<java.nio.file.Path> pemFile(SettingsReader r, String key) {
        Optional<String> v = r.optionalString(key);
        if (v.isEmpty()) {
            return Optional.empty();
        }
        java.nio.file.Path p = java.nio.file.Path.of(v.get());
        if (!java.nio.file.Files.isRegularFile(p) || !java.nio.file.Files.isReadable(p)) {
            throw r.error(key, "no readable file " + p);
        }
        return Optional.of(p);
    }

    /**
     * NCCL group ports: a list of ports, or SGLang's spellings as one string, a JSON list {@code "[29601,29602]"}
     * or comma-separated {@code "29601,29602"}.
     */
    private static List<Integer> groupPorts(SettingsReader r, String key) {
        String path = r.path(key);
        List<String> raw = elements(r, path, true);
        List<Integer> out = new ArrayList<>();
        for (int i = 0; i < raw.size(); i++) {
            int port;
            try {
                port = Integer.parseInt(raw.get(i));
            } catch (NumberFormatException e) {
                throw new WeightLoaderConfigException(path + "[" + i + "]", "must be a port number; got '" + raw.get(i)
                        + "' (give a list such as [29601, 29602] or \"29601,29602\")");
            }
            if (port < 1 || port > 65535) {
                throw new WeightLoaderConfigException(path + "[" + i + "]", "port must be in 1..65535; got " + port);
            }
            out.add(port);
        }
        return List.copyOf(out);
    }

    /**
     * The elements of a setting given as a list, as an object with numbered keys (what system properties key.0, key.1
     * make), or as one comma-separated string (with {@code jsonBrackets}, also wrapped in [ ], as SGLang writes its
     * lists); blank parts of a string are skipped.
     */
    private static List<String> elements(SettingsReader r, String path, boolean jsonBrackets) {
        List<String> raw = new ArrayList<>();
        ConfigValueType type = r.config().getValue(path).valueType();
        if (type == ConfigValueType.LIST || type == ConfigValueType.OBJECT) {
            List<ConfigValue> list;
            try {
                list = r.config().getList(path);
            } catch (com.typesafe.config.ConfigException.WrongType e) {
                throw new WeightLoaderConfigException(path, "must be a list, such as [a, b] or \"a,b\"", e);
            }
            for (ConfigValue v : list) {
                raw.add(String.valueOf(v.unwrapped()));
            }
            return raw;
        }
        String text = r.config().getString(path).trim();
        if (jsonBrackets && text.startsWith("[") && text.endsWith("]")) {
            text = text.substring(1, text.length() - 1);
        }
        for (String part : text.split(",")) {
            if (!part.isBlank()) {
                raw.add(part.trim());
            }
        }
        return raw;
    }

    /** A list of backend names (a HOCON list, or one comma-separated string), each at most once. */
    private static List<String> names(SettingsReader r, String key) {
        String path = r.path(key);
        List<String> raw = elements(r, path, false).stream().map(String::trim).toList();
        List<String> out = new ArrayList<>();
        for (String n : raw) {
            if (!n.matches("[A-Za-z0-9_.-]+")) {
                throw new WeightLoaderConfigException(path, "must list backend names such as transfer_engine, nccl; got '"
                        + n + "'");
            }
            if (out.contains(n)) {
                throw new WeightLoaderConfigException(path, "lists " + n + " twice");
            }
            out.add(n);
        }
        return List.copyOf(out);
    }

    /** Every leaf under {@code weight-loader} must be declared by some module's reference.conf. */
    private static void rejectUnknownKeys(Config config, Config reference, ClassLoader declaring) {
        // a misspelt root would be silently ignored: refuse it (weightloader.home and weightloader.leak.* are the
        // launcher's and the leak detector's system properties, not settings)
        for (String wrong : List.of("weightloader", "weight_loader", "weightLoader", "WeightLoader")) {
            if (config.hasPath(wrong)) {
                for (Map.Entry<String, ConfigValue> e : config.getConfig(wrong).entrySet()) {
                    String key = e.getKey();
                    if (wrong.equals("weightloader") && (key.equals("home") || key.startsWith("leak."))) {
                        continue;
                    }
                    throw new WeightLoaderConfigException(wrong + "." + key, "unknown setting (did you mean "
                            + ROOT + "." + key + "?) set in " + e.getValue().origin().description());
                }
            }
        }
        if (!config.hasPath(ROOT)) {
            return;
        }
        TreeSet<String> unknown = new TreeSet<>();
        Config declared = null;
        for (Map.Entry<String, ConfigValue> e : config.getConfig(ROOT).entrySet()) {
            String path = ROOT + "." + e.getKey();
            int dot = path.lastIndexOf('.');
            if (LIST_OR_STRING.contains(path.substring(0, dot)) && path.substring(dot + 1).matches("\\d+")) {
                continue; // an element of a list given as numbered keys (-Dkey.0=...)
            }
            if (!reference.hasPathOrNull(path)) {
                unknown.add(path);
            } else if (declaring != null && System.getProperty(path) != null) {
                // set by -D: declared only if some reference.conf (not the system properties merged into the
                // reference) has it
                if (declared == null) {
                    declared = ConfigFactory.parseResourcesAnySyntax(declaring, "reference")
                            .resolve(com.typesafe.config.ConfigResolveOptions.defaults().setAllowUnresolved(true));
                }
                if (!declared.hasPathOrNull(path)) {
                    unknown.add(path);
                }
            } else if (reference.getIsNull(path) && e.getValue().valueType() == ConfigValueType.NULL) {
                unknown.add(path);
            }
        }
        for (String moved : List.of("source-strategy", "client-id", "verify-relays")) {
            String old = ROOT + ".remote-instance." + moved;
            if (unknown.contains(old)) {
                throw new WeightLoaderConfigException(old, "moved to " + ROOT + ".backends.transfer_engine." + moved
                        + " (the transfer_engine backend's setting; the command line's flag is unchanged)");
            }
        }
        if (unknown.contains(ROOT + ".seed.serve-nccl")) {
            throw new WeightLoaderConfigException(ROOT + ".seed.serve-nccl", "was replaced by weight-loader.seed.serve:"
                    + " list the backends a seed serves, e.g. serve = [transfer_engine, nccl] (seed --serve)");
        }
        if (!unknown.isEmpty()) {
            throw new WeightLoaderConfigException(unknown.first(), "unknown setting" + (unknown.size() > 1
                    ? "s " + unknown : "") + " (no installed module declares it; check the spelling, or install the"
                    + " backend that owns it)");
        }
    }
}
