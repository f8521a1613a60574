package io.weightloader.examples;

import io.weightloader.cli.Sizes;
import io.weightloader.cli.SyntheticLlama;
import io.weightloader.backend.local.SafetensorsCheckpoint;
import io.weightloader.backend.local.SafetensorsWriter;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader generate --out DIR --size SIZE [--shards N] [--seed S]}: a synthetic Llama-shaped bf16
 * checkpoint of about SIZE bytes, for trying and benchmarking loads without downloading a model.
 */
@Command(name = "generate", mixinStandardHelpOptions = true,
        description = "Write a synthetic Llama-shaped bf16 checkpoint (deterministic pseudo-random weights) of "
                + "about SIZE bytes.")
final class GenerateCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--out", required = true, paramLabel = "DIR", description = "Directory to write into.")
    Path out;

    @Option(names = "--size", required = true, paramLabel = "SIZE", converter = Sizes.Converter.class,
            description = "Target total of tensor bytes: 1GiB, 512MiB, 8GB, or plain bytes.")
    long size;

    @Option(names = "--shards", paramLabel = "N", defaultValue = "1",
            description = "Number of shard files; above 1 also writes model.safetensors.index.json "
                    + "(default: ${DEFAULT-VALUE}).")
    int shards;

    @Option(names = "--seed", paramLabel = "S", defaultValue = "0",
            description = "Seed of the pseudo-random bytes (default: ${DEFAULT-VALUE}).")
    long seed;

    @Option(names = "--force", description = "Replace a checkpoint already in DIR.")
    boolean force;

    @Override
    public Integer call() throws IOException {
        if (shards < 1) {
            throw new ParameterException(spec.commandLine(), "--shards must be at least 1, got " + shards);
        }
        SyntheticLlama model;
        try {
            model = SyntheticLlama.forSize(size);
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), e.getMessage());
        }
        List<SafetensorsWriter.Tensor> tensors = model.tensors(seed);
        if (shards > tensors.size()) {
            throw new ParameterException(spec.commandLine(), "--shards " + shards + " is more than the "
                    + tensors.size() + " tensors of a model of this size");
        }
        clearOldCheckpoint();
        Files.createDirectories(out);
        long t0 = System.nanoTime();
        Map<String, String> metadata = new LinkedHashMap<>(); // fixed order: the same bytes on every run
        metadata.put("format", "pt");
        metadata.put("generator", "weightloader generate");
        metadata.put("seed", Long.toString(seed));
        String files;
        if (shards == 1) {
            SafetensorsWriter.write(out.resolve("model.safetensors"), tensors, metadata);
            files = "model.safetensors";
        } else {
            SafetensorsWriter.writeSharded(out, SafetensorsWriter.split(tensors, shards), metadata);
            files = shards + " shards + " + SafetensorsCheckpoint.INDEX;
        }
        WeightLoaderCli.JSON.writeValue(out.resolve("config.json").toFile(), model.configJson());
        double secs = (System.nanoTime() - t0) / 1e9;
        long total = model.totalBytes();
        PrintWriter o = spec.commandLine().getOut();
        o.println(out);
        o.printf(Locale.ROOT, "wrote %s: %d tensors, %d bytes (%s) of bf16 in %.2f s (%.2f GB/s); "
                        + "hidden %d, intermediate %d, layers %d, vocab %d, seed %d%n", files, tensors.size(), total,
                Sizes.human(total), secs, total / Math.max(secs, 1e-9) / 1e9, model.hidden(), model.intermediate(),
                model.layers(), model.vocab(), seed);
        o.flush();
        return 0;
    }

    /** Refuses to mix with an existing checkpoint, or with --force removes its files (and only those). */
    private void clearOldCheckpoint() throws IOException {
        if (!Files.isDirectory(out)) {
            if (Files.exists(out)) {
                throw new ParameterException(spec.commandLine(), "--out " + out + " exists and is not a directory");
            }
            return;
        }
        List<Path> old = new ArrayList<>();
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(out, "*.safetensors")) {
            ds.forEach(old::add);
        }
        Path index = out.resolve(SafetensorsCheckpoint.INDEX);
        if (Files.exists(index)) {
            old.add(index);
        }
        if (old.isEmpty()) {
            return;
        }
        if (!force) {
            throw new ParameterException(spec.commandLine(), "--out " + out + " already holds a checkpoint ("
                    + old.get(0).getFileName() + (old.size() > 1 ? " and " + (old.size() - 1) + " more" : "")
                    + "); choose another directory or pass --force to replace it");
        }
        for (Path p : old) {
            Files.delete(p);
        }
    }
}
