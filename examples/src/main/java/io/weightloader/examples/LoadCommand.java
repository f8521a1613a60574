package io.weightloader.examples;

import io.weightloader.host.HostRanks;
import io.weightloader.host.RankLoad;
import com.typesafe.config.Config;
import io.weightloader.api.LoadReport;
import io.weightloader.api.TensorReport;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code weightloader load}: opens the backend the settings select and loads every tensor it offers into one
 * arena on {@code weight-loader.device} (host or GPU) (or maps them, with {@code --zero-copy}), then prints the report.
 *
 * <p>Settings come from, highest first: the flags (named like SGLang's, each mapped to one
 * {@code weight-loader.*} key), {@code --config FILE}, then {@code application.conf}, system properties and
 * every module's {@code reference.conf}.
 */
@Command(name = "load", mixinStandardHelpOptions = true, sortOptions = false,
        description = "Load every tensor of a checkpoint or seed into host or GPU memory (--device cpu | cuda:N; "
                + "several tp ranks onto several GPUs) and report what was loaded.")
final class LoadCommand implements Callable<Integer> {
    private static final int SHORT_TABLE_ROWS = 20;

    @Spec
    CommandSpec spec;

    @Mixin
    SharedOptions shared;

    @Option(names = "--remote-instance-weight-loader-send-weights-group-ports", paramLabel = "PORTS",
            description = "NCCL group ports, index = tp rank, as SGLang takes them ('[29601,29602]') or "
                    + "comma-separated (weight-loader.remote-instance.send-weights-group-ports).")
    String groupPorts;

    @Option(names = {"--remote-instance-weight-loader-start-seed-via-transfer-engine",
            "--remote-instance-weight-loader-support-transfer-engine"},
            description = "Seed: register weights with the transfer engine "
                    + "(weight-loader.remote-instance.start-seed-via-transfer-engine).")
    Boolean startSeedViaTransferEngine;

    @Option(names = "--enable-memory-saver", description = "weight-loader.enable-memory-saver.")
    Boolean enableMemorySaver;

    @Option(names = "--backend", paramLabel = "NAME", description = "Backend by provider name (weight-loader.backend).")
    String backend;

    @Option(names = "--bandwidth-limit", paramLabel = "SIZE", description = "Cap on the remote read rate per "
            + "second, e.g. 2GiB (weight-loader.backends.transfer_engine.bandwidth-limit).")
    String bandwidthLimit;

    @Option(names = "--sources", paramLabel = "N", description = "transfer_engine: read from N sources at once (the "
            + "root seed and the relays its directory lists as ready), or auto: every ready one, at most 8; 1 (default): "
            + "one source (weight-loader.backends.transfer_engine.sources).")
    String sources;

    @Option(names = "--fallback", paramLabel = "MODE", description = "none | local (weight-loader.fallback).")
    String fallback;

    @Option(names = "--report", paramLabel = "FILE", description = "Write the load report as JSON to FILE.")
    Path reportFile;

    @Option(names = "--zero-copy", description = "Map the tensors instead of copying them, when the backend "
            + "can (weight-loader.backends.local.zero-copy).")
    boolean zeroCopy;

    @Option(names = "--progress", negatable = true, description = "Progress bar on stderr for long loads "
            + "(default: on when the console is interactive).")
    Boolean progress;

    /** This command's own flags that were given, as config keys (the shared ones come from {@link SharedOptions}). */
    Map<String, Object> flags() {
        Map<String, Object> m = new LinkedHashMap<>();
        String root = "weight-loader.";
        String ri = root + "remote-instance.";
        SharedOptions.put(m, ri + "send-weights-group-ports", groupPorts);
        SharedOptions.put(m, ri + "start-seed-via-transfer-engine", startSeedViaTransferEngine);
        SharedOptions.put(m, root + "enable-memory-saver", enableMemorySaver);
        SharedOptions.put(m, root + "backend", backend);
        SharedOptions.put(m, root + "fallback", fallback);
        SharedOptions.put(m, root + "backends.transfer_engine.bandwidth-limit", bandwidthLimit);
        SharedOptions.put(m, root + "backends.transfer_engine.sources", sources);
        if (zeroCopy) {
            m.put(root + "backends.local.zero-copy", true);
        }
        return m;
    }

    /** Every flag given (this command's and the shared ones), and nothing else. */
    Config flagsConfig() {
        return shared.flagsConfig(flags());
    }

    /** flags over {@code --config FILE} over application.conf / system properties / reference.conf. */
    Config config() {
        return shared.layered(spec, flags());
    }

    @Override
    public Integer call() throws Exception {
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        HostRanks ranks = HostRanks.of(config(), shared.device);
        List<LoadReport> reports = ranks.parallel(rank -> load(rank, err, ranks.single()));
        if (reportFile != null) {
            if (ranks.single()) {
                WeightLoaderCli.JSON.writeValue(reportFile.toFile(), reports.get(0));
            } else {
                Map<String, LoadReport> byRank = new LinkedHashMap<>();
                for (int i = 0; i < reports.size(); i++) {
                    byRank.put(ranks.ranks().get(i).key().toString(), reports.get(i));
                }
                WeightLoaderCli.JSON.writeValue(reportFile.toFile(), Map.of("ranks", byRank));
            }
        }
        for (int i = 0; i < reports.size(); i++) {
            if (!ranks.single()) {
                out.println("rank " + ranks.ranks().get(i).key() + " on " + ranks.ranks().get(i).device() + ":");
            }
            out.println(reports.get(i).summary());
            printTable(out, reports.get(i));
        }
        if (reportFile != null) {
            out.println("report written to " + reportFile);
        }
        out.flush();
        return 0;
    }

    /** Loads one rank through the library ({@link RankLoad}), with a progress bar for one rank on a console. */
    private LoadReport load(HostRanks.Rank rank, PrintWriter err, boolean oneRank) {
        RankLoad load = RankLoad.copying().withZeroCopy(zeroCopy)
                .withNotes(note -> err.println("weightloader: note: " + note));
        boolean showProgress = oneRank && (progress != null ? progress : System.console() != null);
        if (!showProgress) {
            return load.run(rank);
        }
        ProgressBar bar = new ProgressBar(err);
        try {
            return load.withProgress(bar).run(rank);
        } finally {
            bar.finish();
        }
    }

    private void printTable(PrintWriter out, LoadReport report) {
        boolean all = WeightLoaderCli.verbose(spec);
        boolean sums = report.tensors().stream().anyMatch(t -> t.sha256() != null);
        boolean sliced = report.tensors().stream().anyMatch(t -> t.slice() != null);
        List<String> columns = new java.util.ArrayList<>(List.of("NAME", "DTYPE", "SHAPE"));
        if (sliced) {
            columns.add("SLICE");
        }
        columns.add(">BYTES");
        if (sums) {
            columns.add("SHA256");
        }
        Table table = new Table(columns.toArray(String[]::new));
        List<TensorReport> tensors = report.tensors();
        int shown = all ? tensors.size() : Math.min(SHORT_TABLE_ROWS, tensors.size());
        for (TensorReport t : tensors.subList(0, shown)) {
            List<Object> row = new java.util.ArrayList<>(List.of(t.name(), t.dtype(), t.shape()));
            if (sliced) {
                row.add(t.slice() == null ? "whole" : t.slice());
            }
            row.add(t.bytes());
            if (sums) {
                row.add(t.sha256());
            }
            table.row(row.toArray());
        }
        table.print(out);
        if (shown < tensors.size()) {
            out.println("... and " + (tensors.size() - shown) + " more (--verbose lists all"
                    + (reportFile == null ? ", --report FILE writes them as JSON" : "") + ")");
        }
    }
}
