package io.weightloader.examples;

import io.weightloader.cli.Sizes;
import io.weightloader.cli.SyntheticLlama;
import io.weightloader.cli.Trees;
import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorReport;
import io.weightloader.backend.local.SafetensorsWriter;
import io.weightloader.host.HostRanks;
import io.weightloader.host.RankLoad;
import io.weightloader.host.SeedHost;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader demo}: the main job end to end on one machine, with nothing to install. It writes a
 * small Llama-shaped checkpoint, starts a seed of it through the host layer ({@link SeedHost}: loaded from disk,
 * served), loads it again from the seed through the built-in transfer engine ({@link RankLoad}: a new instance's
 * start-up), and checks that every tensor's SHA-256 is the same on both sides.
 */
@Command(name = "demo", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Local load, then seed + client on this machine: every tensor's SHA-256 must match.")
final class DemoCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--size", paramLabel = "SIZE", converter = Sizes.Converter.class, defaultValue = "256MiB",
            description = "Checkpoint size (default: ${DEFAULT-VALUE}).")
    long size;

    @Option(names = "--dir", paramLabel = "DIR", description = "Where to write the checkpoint (default: a temporary "
            + "directory, deleted afterwards).")
    Path dir;

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        boolean temporary = dir == null;
        Path root = temporary ? Files.createTempDirectory("weightloader-demo") : dir;
        try {
            Path ckpt = root.resolve("checkpoint");
            Files.createDirectories(ckpt);
            SyntheticLlama model = SyntheticLlama.forSize(size);
            List<SafetensorsWriter.Tensor> tensors = model.tensors(1);
            SafetensorsWriter.writeSharded(ckpt, SafetensorsWriter.split(tensors, 2), Map.of("format", "pt"));
            out.printf("1. wrote a synthetic Llama-shaped bf16 checkpoint: %d tensors, %s, 2 shards, in %s%n",
                    tensors.size(), Sizes.human(model.totalBytes()), ckpt);

            Config seedConfig = ConfigFactory.parseMap(Map.of(
                    "weight-loader.model-path", ckpt.toString(),
                    "weight-loader.checksum", "sha256",
                    "weight-loader.remote-instance.start-seed-via-transfer-engine", true,
                    "weight-loader.remote-instance.token", token(),
                    "weight-loader.seed.bind-address", "127.0.0.1")).withFallback(ConfigFactory.load()).resolve();
            try (SeedHost seed = SeedHost.start(seedConfig)) {
                LoadReport fromDisk = seed.reports().get(0);
                out.println("2. seed start-up, " + fromDisk.summary());
                int port = seed.service().port();
                var m = seed.service().manifest(seed.ranks().ranks().get(0).key()).orElseThrow();
                out.printf("3. seed serving: control plane 127.0.0.1:%d, engine %s at %s (token on)%n",
                        port, m.engine(), m.session());
                LoadReport fromSeed = loadFromSeed(port, seedConfig);
                out.println("4. new instance start-up, " + fromSeed.summary());
                return compare(out, fromDisk, fromSeed);
            }
        } finally {
            if (temporary) {
                Trees.deleteTree(root);
            }
        }
    }

    private static LoadReport loadFromSeed(int port, Config seedConfig) {
        Config client = ConfigFactory.parseMap(Map.of(
                "weight-loader.load-format", "remote_instance",
                "weight-loader.checksum", "sha256",
                "weight-loader.remote-instance.seed-instance-ip", "127.0.0.1",
                "weight-loader.remote-instance.seed-instance-service-port", port,
                "weight-loader.remote-instance.backend", "transfer_engine",
                "weight-loader.remote-instance.token", seedConfig.getString("weight-loader.remote-instance.token")))
                .withFallback(ConfigFactory.load()).resolve();
        return RankLoad.copying().run(HostRanks.of(client).ranks().get(0));
    }

    private static int compare(PrintWriter out, LoadReport a, LoadReport b) {
        Map<String, String> left = new LinkedHashMap<>();
        for (TensorReport t : a.tensors()) {
            left.put(t.name(), t.sha256());
        }
        List<String> differ = new ArrayList<>();
        for (TensorReport t : b.tensors()) {
            if (!t.sha256().equals(left.remove(t.name()))) {
                differ.add(t.name());
            }
        }
        differ.addAll(left.keySet());
        if (!differ.isEmpty()) {
            out.println("5. FAILED: " + differ.size() + " tensor(s) differ between disk and seed: " + differ);
            out.flush();
            return WeightLoaderCli.EXIT_FAILURE;
        }
        out.printf("5. OK: all %d tensors have the same SHA-256 on disk and through the seed (%s)%n",
                b.tensors().size(), Sizes.human(b.totalBytes()));
        out.flush();
        return 0;
    }

    private static String token() {
        byte[] b = new byte[16];
        new SecureRandom().nextBytes(b);
        return HexFormat.of().formatHex(b);
    }
}
