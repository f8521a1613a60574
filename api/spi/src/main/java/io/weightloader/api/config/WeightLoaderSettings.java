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
        Remote remote,
        Seed seed) {

    public static final String ROOT = "weight-loader";

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
    public record Seed(String bindAddress, int servicePort, boolean publishChecksums, List<String> serve) {
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
        return from(config, ConfigFactory.defaultReference());
    }

    /**
     * As {@link #from(Config)}, with the reference settings (every module's reference.conf) given, e.g.
     * {@code ConfigFactory.defaultReference(pluginClassLoader)}.
     */
    public static WeightLoaderSettings from(Config config, Config reference) {
        rejectUnknownKeys(config, reference);
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
        Reader r = new Reader(config);

        LoadFormat format = LoadFormat.parse(r.p("load-format"), r.string("load-format"));
        Optional<String> modelPath = r.optionalString("model-path");
        Device device;
        try {
            device = Device.parse(r.string("device"));
        } catch (IllegalArgumentException e) {
            throw new WeightLoaderConfigException(r.p("device"), e.getMessage());
        }
        boolean memorySaver = r.bool("enable-memory-saver");
        boolean checksum = switch (r.string("checksum")) {
            case "none" -> false;
            case "sha256" -> true;
            default -> throw new WeightLoaderConfigException(r.p("checksum"),
                    "must be none or sha256; got '" + r.string("checksum") + "'");
        };
        Fallback fallback = switch (r.string("fallback")) {
            case "none" -> Fallback.NONE;
            case "local" -> Fallback.LOCAL;
            default -> throw new WeightLoaderConfigException(r.p("fallback"),
                    "must be none or local; got '" + r.string("fallback") + "'");
        };
        boolean ignoreExtra = switch (r.string("extra-tensors")) {
            case "error" -> false;
            case "ignore" -> true;
            default -> throw new WeightLoaderConfigException(r.p("extra-tensors"),
                    "must be error or ignore; got '" + r.string("extra-tensors") + "'");
        };
        RankKey rank = new RankKey(r.nonNegativeInt("rank.tp"), r.nonNegativeInt("rank.pp"));
        int tpSize = r.nonNegativeInt("rank.tp-size");
        if (tpSize < 1) {
            throw new WeightLoaderConfigException(r.p("rank.tp-size"), "must be >= 1; got " + tpSize);
        }
        if (tpSize > 1 && rank.tp() >= tpSize) {
            throw new WeightLoaderConfigException(r.p("rank.tp"), "must be below rank.tp-size (" + tpSize
                    + "); got " + rank.tp());
        }

        String ri = "remote-instance.";
        List<Integer> groupPorts = groupPorts(r, ri + "send-weights-group-ports");
        String remoteBackend = r.string(ri + "backend");
        if (!remoteBackend.matches("[A-Za-z0-9_.-]+")) {
            throw new WeightLoaderConfigException(r.p(ri + "backend"),
                    "must name a backend that reads from a seed, such as transfer_engine or nccl; got '"
                    + remoteBackend + "'");
        }
        int seedPort = r.config.getInt(r.p(ri + "seed-instance-service-port"));
        if (seedPort < 0 || seedPort > 65535) {
            throw new WeightLoaderConfigException(r.p(ri + "seed-instance-service-port"),
                    "port must be in 1..65535; got " + seedPort);
        }
        Remote remote = new Remote(
                r.optionalString(ri + "seed-instance-ip"),
                seedPort,
                List.copyOf(groupPorts),
                r.string(ri + "send-weights-group-name"),
                remoteBackend,
                r.bool(ri + "start-seed-via-transfer-engine"),
                r.optionalString(ri + "token"),
                r.positiveDuration(ri + "connect-timeout"),
                r.positiveDuration(ri + "request-timeout"),
                r.positiveDuration(ri + "transfer-timeout"),
                r.nonNegativeInt(ri + "retries"));

        int servicePort = r.config.getInt(r.p("seed.service-port"));
        if (servicePort < 0 || servicePort > 65535) {
            throw new WeightLoaderConfigException(r.p("seed.service-port"),
                    "port must be in 0..65535; got " + servicePort);
        }
        String bind = r.string("seed.bind-address");
        if (bind.isBlank()) {
            throw new WeightLoaderConfigException(r.p("seed.bind-address"), "must not be empty");
        }
        List<String> serve = names(r, "seed.serve");
        if (remote.startSeedViaTransferEngine() && !serve.contains("transfer_engine")) {
            throw new WeightLoaderConfigException(r.p("seed.serve"), "remote-instance.start-seed-via-transfer-engine"
                    + " = true asks this seed to serve transfer_engine clients, but seed.serve is " + serve
                    + "; add transfer_engine to it, or drop the SGLang flag");
        }
        Seed seed = new Seed(bind, servicePort, r.bool("seed.publish-checksums"), serve);

        String backend = r.string("backend");
        if (backend.isEmpty()) {
            backend = format == LoadFormat.REMOTE_INSTANCE ? remoteBackend : "local";
        }

        // Cross-field checks, each naming the path to change.
        if (format == LoadFormat.REMOTE_INSTANCE) {
            if (remote.seedIp().isEmpty()) {
                throw new WeightLoaderConfigException(r.p(ri + "seed-instance-ip"),
                        "load-format remote_instance needs the seed's address");
            }
            if (seedPort == 0) {
                throw new WeightLoaderConfigException(r.p(ri + "seed-instance-service-port"),
                        "load-format remote_instance needs the seed's control-plane port");
            }
        }
        boolean usesTransferEngine = backend.equals("transfer_engine") || remote.startSeedViaTransferEngine();
        if (memorySaver && usesTransferEngine) {
            throw new WeightLoaderConfigException(r.p("enable-memory-saver"),
                    "memory saver is not compatible with transfer_engine: registered memory must not be remapped");
        }
        if (fallback == Fallback.LOCAL && modelPath.isEmpty()) {
            throw new WeightLoaderConfigException(r.p("model-path"),
                    "fallback = local needs the checkpoint to fall back to");
        }
        return new WeightLoaderSettings(backend, format, modelPath, device, memorySaver, checksum, fallback,
                ignoreExtra, rank, tpSize, remote, seed);
    }

    /**
     * NCCL group ports: a list of ports, or SGLang's spellings as one string, a JSON list {@code "[29601,29602]"}
     * or comma-separated {@code "29601,29602"}.
     */
    private static List<Integer> groupPorts(Reader r, String key) {
        String path = r.p(key);
        List<String> raw = new ArrayList<>();
        if (r.config.getValue(path).valueType() == ConfigValueType.LIST) {
            for (ConfigValue v : r.config.getList(path)) {
                raw.add(String.valueOf(v.unwrapped()));
            }
        } else {
            String text = r.config.getString(path).trim();
            if (text.startsWith("[") && text.endsWith("]")) {
                text = text.substring(1, text.length() - 1);
            }
            for (String part : text.split(",")) {
                if (!part.isBlank()) {
                    raw.add(part.trim());
                }
            }
        }
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

    /** A list of backend names (a HOCON list, or one comma-separated string), each at most once. */
    private static List<String> names(Reader r, String key) {
        String path = r.p(key);
        List<String> raw = new ArrayList<>();
        if (r.config.getValue(path).valueType() == ConfigValueType.LIST) {
            for (ConfigValue v : r.config.getList(path)) {
                raw.add(String.valueOf(v.unwrapped()).trim());
            }
        } else {
            for (String part : r.config.getString(path).split(",")) {
                if (!part.isBlank()) {
                    raw.add(part.trim());
                }
            }
        }
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
    private static void rejectUnknownKeys(Config config, Config reference) {
        if (!config.hasPath(ROOT)) {
            return;
        }
        TreeSet<String> unknown = new TreeSet<>();
        for (Map.Entry<String, ConfigValue> e : config.getConfig(ROOT).entrySet()) {
            String path = ROOT + "." + e.getKey();
            if (!reference.hasPathOrNull(path)) {
                unknown.add(path);
            } else if (reference.getIsNull(path) && e.getValue().valueType() == ConfigValueType.NULL) {
                unknown.add(path);
            }
        }
        if (!unknown.isEmpty()) {
            throw new WeightLoaderConfigException(unknown.first(), "unknown setting" + (unknown.size() > 1
                    ? "s " + unknown : "") + " (no installed module declares it; check the spelling, or install the"
                    + " backend that owns it)");
        }
    }

    /** Small helper that reads keys relative to {@code weight-loader} and names the full path on error. */
    private static final class Reader {
        final Config config;

        Reader(Config config) {
            this.config = config;
        }

        String p(String key) {
            return ROOT + "." + key;
        }

        String string(String key) {
            return config.getString(p(key)).trim();
        }

        Optional<String> optionalString(String key) {
            String v = string(key);
            return v.isEmpty() ? Optional.empty() : Optional.of(v);
        }

        boolean bool(String key) {
            return config.getBoolean(p(key));
        }

        int nonNegativeInt(String key) {
            int v;
            try {
                v = config.getInt(p(key));
            } catch (ConfigException.WrongType e) {
                throw new WeightLoaderConfigException(p(key), "must be a whole number", e);
            }
            if (v < 0) {
                throw new WeightLoaderConfigException(p(key), "must be >= 0; got " + v);
            }
            return v;
        }

        Duration positiveDuration(String key) {
            Duration d;
            try {
                d = config.getDuration(p(key));
            } catch (ConfigException.BadValue | ConfigException.WrongType e) {
                throw new WeightLoaderConfigException(p(key), "must be a duration such as 30s or 5m", e);
            }
            if (d.isNegative() || d.isZero()) {
                throw new WeightLoaderConfigException(p(key), "must be positive; got " + d);
            }
            return d;
        }
    }
}
