package io.weightloader.examples;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The simulated cluster of {@code examples/scripts/sim-cluster.sh} (issue 13): its selftest brings up three hosts
 * as network namespaces on a bridge with every link limited to 100 Mbit/s by tc, checks TCP between them, that a
 * bounded transfer runs within 30% of the rate, and that the root namespace cannot reach them, then removes them.
 * Needs root and {@code ip netns}; skips with the reason printed without them.
 */
class SimClusterIT {
    static final Path SCRIPTS = Path.of("scripts").toAbsolutePath();
    static final Path DIST_SCRIPTS = Path.of("target/weightloader/scripts").toAbsolutePath();
    static final long SELFTEST_TIMEOUT_S = 180;

    @TempDir
    Path tmp;

    record Run(int exitCode, String out) {
    }

    /** Runs a command to completion within {@code seconds}, stdout and stderr together. */
    Run run(long seconds, String... cmd) throws Exception {
        Path out = tmp.resolve("out-" + System.nanoTime() + ".txt");
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(out.toFile()).start();
        if (!p.waitFor(seconds, TimeUnit.SECONDS)) {
            // TERM first so that the script's trap removes its namespaces, then KILL
            p.destroy();
            if (!p.waitFor(20, TimeUnit.SECONDS)) {
                p.destroyForcibly();
            }
            throw new AssertionError(String.join(" ", cmd) + " did not finish in " + seconds + " s:\n"
                    + Files.readString(out, StandardCharsets.UTF_8));
        }
        return new Run(p.exitValue(), Files.readString(out, StandardCharsets.UTF_8));
    }

    static void skip(String reason) {
        System.err.println("SKIPPED SimClusterIT: " + reason);
        Assumptions.abort(reason);
    }

    void assumeRootWithNetns() throws Exception {
        Run id = run(10, "id", "-u");
        if (id.exitCode() != 0 || !id.out().strip().equals("0")) {
            skip("needs root (network namespaces, veths, tc); running as uid " + id.out().strip());
        }
        Run netns;
        try {
            netns = run(10, "ip", "netns", "list");
        } catch (java.io.IOException e) {
            skip("ip (iproute2) is missing: " + e.getMessage());
            return;
        }
        if (netns.exitCode() != 0) {
            skip("ip netns is unavailable: " + netns.out().strip());
        }
    }

    @Test
    void theSelftestRunsThreeRateLimitedIsolatedHostsAndCleansUp() throws Exception {
        assumeRootWithNetns();
        Run r = run(SELFTEST_TIMEOUT_S, "bash", SCRIPTS.resolve("sim-cluster.sh").toString(), "selftest",
                "--rate", "100mbit");
        System.out.print(r.out());
        if (r.exitCode() == 77) {
            skip(r.out().strip());
        }
        assertThat(r.exitCode()).as(r.out()).isZero();
        assertThat(r.out()).contains("PASS sim-cluster selftest").doesNotContain("FAIL");
        Run left = run(10, "ip", "netns", "list");
        assertThat(left.out().lines()).as("namespaces left behind").noneMatch(l -> l.startsWith("wlt-"));
    }

    @Test
    void theDistributionShipsTheClusterScripts() {
        assertThat(DIST_SCRIPTS.resolve("sim-cluster.sh")).isExecutable();
        assertThat(DIST_SCRIPTS.resolve("fanout-bench.sh")).isExecutable();
    }
}
