package io.weightloader.examples;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigParseOptions;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;

/**
 * Options that {@code load} and {@code seed} share, each mapped to one {@code weight-loader.*} key, and the
 * layering of settings: flags over {@code --config FILE} over application.conf, system properties and every
 * module's reference.conf.
 */
final class SharedOptions {
    @Option(names = "--config", paramLabel = "FILE", description = "HOCON file of weight-loader settings.")
    Path configFile;

    @Option(names = "--model-path", paramLabel = "PATH",
            description = "Checkpoint file or directory (weight-loader.model-path).")
    String modelPath;

    @Option(names = "--device", paramLabel = "DEVICE", description = "cpu | cuda:N (weight-loader.device); with "
            + "several tp ranks, one device per rank, comma-separated (cuda:1,cuda:0), or cuda: rank r on cuda:r.")
    String device;

    @Option(names = "--tp-rank", paramLabel = "N", description = "weight-loader.rank.tp: only this rank "
            + "(default: every rank of --tp-size).")
    Integer tpRank;

    @Option(names = {"--tp-size", "--tensor-parallel-size"}, paramLabel = "N",
            description = "Tensor-parallel ranks, SGLang's --tp-size (weight-loader.rank.tp-size).")
    Integer tpSize;

    @Option(names = "--load-format", paramLabel = "FORMAT",
            description = "auto | safetensors | remote_instance (weight-loader.load-format); a seed given "
                    + "remote_instance loads from another seed, then serves (a relay).")
    String loadFormat;

    @Option(names = "--remote-instance-weight-loader-seed-instance-ip", paramLabel = "HOST",
            description = "The seed's address (weight-loader.remote-instance.seed-instance-ip).")
    String seedIp;

    @Option(names = "--remote-instance-weight-loader-seed-instance-service-port", paramLabel = "PORT",
            description = "The seed's control-plane port (weight-loader.remote-instance.seed-instance-service-port).")
    Integer seedPort;

    @Option(names = "--remote-instance-weight-loader-backend", paramLabel = "NAME",
            description = "transfer_engine | nccl (weight-loader.remote-instance.backend).")
    String remoteBackend;

    @Option(names = "--source-strategy", paramLabel = "NAME", description = "star | tree | chain: which instance "
            + "serving the root seed's weights to read from (weight-loader.backends.transfer_engine.source-strategy).")
    String sourceStrategy;

    @Option(names = "--directory", paramLabel = "URL", description = "Registry of the model's sources, "
            + "etcd://host:2379[,host:2379...]: a seed registers in it, a client finds its sources there by "
            + "--model-id, no seed address needed (weight-loader.directory; default: the root seed's own directory).")
    String directory;

    @Option(names = "--model-id", paramLabel = "ID", description = "The model's id in the registry, e.g. "
            + "meta-llama/Llama-3.1-8B (weight-loader.model-id).")
    String modelId;

    @Option(names = "--checksum", paramLabel = "ALGO", description = "none | sha256 (weight-loader.checksum).")
    String checksum;

    @Option(names = "--tp-layout", paramLabel = "LAYOUT", description = "How tensors split over the tp ranks: none | "
            + "llama | a rules file (weight-loader.tp-layout); each rank then loads only its slices.")
    String tpLayout;

    @Option(names = "--protocol", paramLabel = "PROTO", description = "Mooncake transport: tcp | rdma | nvlink_intra "
            + "(weight-loader.backends.transfer_engine.protocol; a client's default: what the seed serves).")
    String protocol;

    @Option(names = "--pp-rank", paramLabel = "N", description = "weight-loader.rank.pp.")
    Integer ppRank;

    @Option(names = "--token", paramLabel = "TOKEN", description = "weight-loader.remote-instance.token.")
    String token;

    @Option(names = "--tls-certificate", paramLabel = "PEM", description = "Certificate chain: a seed serves TLS "
            + "with it and --tls-key; a client shows it when its seed asks (weight-loader.tls.certificate).")
    String tlsCertificate;

    @Option(names = "--tls-key", paramLabel = "PEM", description = "PKCS#8 private key of --tls-certificate "
            + "(weight-loader.tls.key).")
    String tlsKey;

    @Option(names = "--tls-ca", paramLabel = "PEM", description = "Certificates trusted: a client speaks TLS and "
            + "accepts only a seed whose certificate chains to them and names the address dialled; a seed with it "
            + "requires client certificates (weight-loader.tls.ca).")
    String tlsCa;

    @Option(names = "--engine", paramLabel = "NAME", description = "transfer_engine's engine: builtin | mooncake "
            + "(weight-loader.backends.transfer_engine.engine).")
    String engine;

    @Option(names = "--mooncake-library", paramLabel = "PATH",
            description = "libtransfer_engine.so (weight-loader.backends.transfer_engine.mooncake.library).")
    String mooncakeLibrary;

    /** The shared flags that were given, as config keys. */
    Map<String, Object> flags() {
        Map<String, Object> m = new LinkedHashMap<>();
        put(m, "weight-loader.model-path", modelPath);
        if (device != null && !device.contains(",") && !device.equals("cuda")) {
            put(m, "weight-loader.device", device); // a list is one device per rank: see HostRanks
        }
        put(m, "weight-loader.rank.tp", tpRank);
        put(m, "weight-loader.rank.tp-size", tpSize);
        put(m, "weight-loader.tp-layout", tpLayout);
        put(m, "weight-loader.load-format", loadFormat);
        put(m, "weight-loader.remote-instance.seed-instance-ip", seedIp);
        put(m, "weight-loader.remote-instance.seed-instance-service-port", seedPort);
        put(m, "weight-loader.remote-instance.backend", remoteBackend);
        put(m, "weight-loader.backends.transfer_engine.source-strategy", sourceStrategy);
        put(m, "weight-loader.directory", directory);
        put(m, "weight-loader.model-id", modelId);
        put(m, "weight-loader.checksum", checksum);
        put(m, "weight-loader.backends.transfer_engine.protocol", protocol);
        put(m, "weight-loader.rank.pp", ppRank);
        put(m, "weight-loader.remote-instance.token", token);
        put(m, "weight-loader.tls.certificate", tlsCertificate);
        put(m, "weight-loader.tls.key", tlsKey);
        put(m, "weight-loader.tls.ca", tlsCa);
        put(m, "weight-loader.backends.transfer_engine.engine", engine);
        put(m, "weight-loader.backends.transfer_engine.mooncake.library", mooncakeLibrary);
        return m;
    }

    static void put(Map<String, Object> m, String key, Object value) {
        if (value != null) {
            m.put(key, value);
        }
    }

    /** The command's own flags and the shared ones that were given, as one config (nothing else). */
    Config flagsConfig(Map<String, Object> commandFlags) {
        Map<String, Object> all = new LinkedHashMap<>(flags());
        all.putAll(commandFlags);
        return ConfigFactory.parseMap(all, "command-line flags");
    }

    /** The command's own flags and the shared ones over the file over {@link ConfigFactory#load()}. */
    Config layered(CommandSpec spec, Map<String, Object> commandFlags) {
        return layered(spec, flagsConfig(commandFlags), configFile);
    }

    /** {@code flags} over {@code --config FILE} (when given) over {@link ConfigFactory#load()}. */
    static Config layered(CommandSpec spec, Config flags, Path configFile) {
        Config file = ConfigFactory.empty();
        if (configFile != null) {
            if (!Files.isRegularFile(configFile)) {
                throw new ParameterException(spec.commandLine(), "--config: no such file: " + configFile);
            }
            file = ConfigFactory.parseFile(configFile.toFile(), ConfigParseOptions.defaults().setAllowMissing(false));
        }
        return flags.withFallback(file).withFallback(ConfigFactory.load()).resolve();
    }
}
