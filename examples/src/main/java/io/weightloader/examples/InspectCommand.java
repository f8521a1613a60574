package io.weightloader.examples;

import io.weightloader.backend.local.CheckpointListing;
import io.weightloader.cli.Sizes;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader inspect PATH [--json]}: the tensors of a safetensors file or sharded checkpoint, as
 * {@link CheckpointListing} lists them, printed as a table or as JSON.
 */
@Command(name = "inspect", mixinStandardHelpOptions = true,
        description = "List the tensors of a safetensors file or checkpoint directory (name, dtype, shape, bytes, "
                + "shard file) with totals.")
final class InspectCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Parameters(index = "0", paramLabel = "PATH", description = "A .safetensors file, or a directory with "
            + "model.safetensors.index.json or *.safetensors shards.")
    Path path;

    @Option(names = "--json", description = "Print {\"path\", \"tensors\": [{name, dtype, shape, bytes, file}], "
            + "\"totalBytes\"} instead of a table.")
    boolean json;

    @Override
    public Integer call() throws Exception {
        if (!Files.exists(path)) { // a path that is not there is bad usage (2), not a failed read (1)
            throw new ParameterException(spec.commandLine(), "PATH: no such file or directory: " + path);
        }
        CheckpointListing result = CheckpointListing.of(path);
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            out.println(WeightLoaderCli.JSON.writeValueAsString(result));
        } else {
            Table table = new Table("NAME", "DTYPE", "SHAPE", ">BYTES", "FILE");
            result.tensors().forEach(t -> table.row(t.name(), t.dtype(), t.shape(), t.bytes(), t.file()));
            table.print(out);
            long files = result.tensors().stream().map(CheckpointListing.Tensor::file).distinct().count();
            out.printf("%d tensors, %d bytes (%s) in %d file%s: %s%n", result.tensors().size(), result.totalBytes(),
                    Sizes.human(result.totalBytes()), files, files == 1 ? "" : "s", path);
        }
        out.flush();
        return 0;
    }
}
