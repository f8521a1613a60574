package io.weightloader.examples;

import io.weightloader.cli.Sizes;
import io.weightloader.backend.local.SafetensorsCheckpoint;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** {@code weightloader inspect PATH [--json]}: the tensors of a safetensors file or sharded checkpoint. */
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

    /** One tensor as {@code --json} prints it. */
    record TensorInfo(String name, String dtype, List<Long> shape, long bytes, String file) {
    }

    /** The {@code --json} document. */
    record Inspection(String path, List<TensorInfo> tensors, long totalBytes) {
    }

    static Inspection inspect(Path path) {
        SafetensorsCheckpoint cp = SafetensorsCheckpoint.open(path);
        List<TensorInfo> tensors = new ArrayList<>();
        cp.tensors().values().forEach(l -> tensors.add(new TensorInfo(l.spec().name(),
                l.spec().dtype().safetensorsName(), l.spec().shape(), l.entry().bytes(),
                l.file().path().getFileName().toString())));
        return new Inspection(path.toString(), tensors, cp.totalBytes());
    }

    @Override
    public Integer call() throws Exception {
        if (!java.nio.file.Files.exists(path)) { // a path that is not there is bad usage (2), not a failed read (1)
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "PATH: no such file or directory: "
                    + path);
        }
        Inspection result = inspect(path);
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            out.println(WeightLoaderCli.JSON.writeValueAsString(result));
        } else {
            Table table = new Table("NAME", "DTYPE", "SHAPE", ">BYTES", "FILE");
            result.tensors().forEach(t -> table.row(t.name(), t.dtype(), t.shape(), t.bytes(), t.file()));
            table.print(out);
            long files = result.tensors().stream().map(TensorInfo::file).distinct().count();
            out.printf("%d tensors, %d bytes (%s) in %d file%s: %s%n", result.tensors().size(), result.totalBytes(),
                    Sizes.human(result.totalBytes()), files, files == 1 ? "" : "s", path);
        }
        out.flush();
        return 0;
    }
}
