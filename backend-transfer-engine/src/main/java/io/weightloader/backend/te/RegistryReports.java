package io.weightloader.backend.te;

import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorReport;
import io.weightloader.api.WeightLoaderException;
import io.weightloader.seed.registry.RegistrySources;
import java.util.List;

/** What a registry client ({@link RegistryBackend}) reports: a load's source line, and why no source would do. */
record RegistryReports(String modelId, String rank, String directory, String strategy, int maxTries) {
    WeightLoaderException noSource(RegistrySources.Candidates c, List<String> failed, int tried, String note) {
        int untried = Math.max(0, c.sources().size() - tried);
        return new WeightLoaderException("model " + modelId + " rank " + rank + ": no source listed in"
                + " registry " + directory + " could be loaded from; " + (failed.isEmpty() ? "none tried"
                : "tried " + String.join("; ", failed)) + (untried > 0 ? "; " + untried + " not tried (at most "
                + maxTries + " per load" + (note == null ? "" : ", " + note) + ")" : "")
                + (c.skipped().isEmpty() ? "" : "; skipped " + String.join("; ", c.skipped().stream().limit(10)
                .toList()) + (c.skipped().size() > 10 ? " and " + (c.skipped().size() - 10) + " more" : ""))
                + "; nothing was loaded");
    }

    /**
     * The source's report, naming the registry, the source read from ({@code from}, as its client names it), the
     * sources that failed before it, and those skipped.
     */
    LoadReport report(LoadReport r, LoadRequest request, RegistrySources.Candidates c, List<String> failed,
                      String from) {
        List<TensorReport> tensors = request.checksum() ? r.tensors() : r.tensors().stream()
                .map(t -> new TensorReport(t.name(), t.dtype(), t.shape(), t.bytes(), null, t.slice())).toList();
        StringBuilder src = new StringBuilder("model " + modelId + " rank " + rank + " from registry "
                + directory + ": " + from + (strategy.equals("star") ? "" : " (" + strategy
                + ")"));
        if (!failed.isEmpty()) {
            src.append(" (after ").append(failed.size()).append(" failed: ").append(addresses(failed)).append(')');
        }
        // a chain's relays that still load are not skipped by a chain's client: they are its links
        List<String> skipped = strategy.equals("chain") ? c.skipped().stream()
                .filter(x -> !x.endsWith(": not ready (it still loads)")).toList() : c.skipped();
        if (!skipped.isEmpty()) {
            src.append(" (skipped ").append(skipped.size()).append(": ").append(addresses(skipped)).append(')');
        }
        return new LoadReport(r.backend(), r.engine(), src.toString(), r.device(), tensors, r.totalBytes(),
                r.seconds(), r.fallbackReason(), r.phases(), r.sources());
    }

    /** The addresses of {@code host:port: why} lines, the first ten. */
    private static String addresses(List<String> lines) {
        List<String> a = lines.stream().limit(10).map(f -> f.substring(0, f.indexOf(": "))).toList();
        return String.join(", ", a) + (lines.size() > a.size() ? " and " + (lines.size() - a.size()) + " more" : "");
    }
}
