package io.weightloader.examples;

import io.weightloader.cli.Sizes;
import io.weightloader.cli.SyntheticCheckpoint;
import io.weightloader.cli.SyntheticLlama;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader generate --out DIR --size SIZE [--shards N] [--seed S]}: a synthetic Llama-shaped bf16
 * checkpoint of about SIZE bytes, for trying and benchmarking loads without downloading a model; written by
 * {@link SyntheticCheckpoint#write}.
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
        SyntheticCheckpoint.Written w;
        try {
            w = SyntheticCheckpoint.write(out, size, shards, seed, force);
        } catch (IllegalArgumentException e) { // an argument it cannot honour: bad usage (2), nothing was written
            throw new ParameterException(spec.commandLine(), e.getMessage());
        }
        SyntheticLlama model = w.model();
        long total = w.totalBytes();
        double secs = w.seconds();
        PrintWriter o = spec.commandLine().getOut();
        o.println(out);
        o.printf(Locale.ROOT, "wrote %s: %d tensors, %d bytes (%s) of bf16 in %.2f s (%.2f GB/s); "
                        + "hidden %d, intermediate %d, layers %d, vocab %d, seed %d%n", w.files(), w.tensors(), total,
                Sizes.human(total), secs, total / Math.max(secs, 1e-9) / 1e9, model.hidden(), model.intermediate(),
                model.layers(), model.vocab(), seed);
        o.flush();
        return 0;
    }
}
