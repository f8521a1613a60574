package io.weightloader.examples;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The simulated cluster of {@code examples/scripts/sim-cluster.sh} (issue 13): its selftest brings up three hosts
 * as network namespaces on a bridge with every link limited to 100 Mbit/s by tc, checks TCP between them, that a
 * bounded transfer runs within 30% of the rate, and that the root namespace cannot reach them, then removes them.
 * Every run uses its own namespace prefix and subnet, so runs side by side (two builds on one host, or the two
 * selftests here) never remove each other's namespaces (issue 20). Needs root and {@code ip netns}; skips with the
 * reason printed without them.
 */
class SimClusterIT {
    static final Path SCRIPTS = Path.of("scripts").toAbsolutePath();
    static final Path DIST_SCRIPTS = Path.of("target/weightloader/scripts").toAbsolutePath();
    static final long SELFTEST_TIMEOUT_S = 180;
    /** This JVM's prefixes: {@code wlt<pid><letter>-}, which {@code down --stale wlt} removes once this JVM is gone. */
    static final String PREFIX = "wlt" + ProcessHandle.current().pid();

    @TempDir
    Path tmp;

    record Run(int exitCode, String out) {
    }

    /** Runs a command to completion within {@code seconds}, stdout and stderr together. */
    Run run(long seconds, String... cmd) throws Exception {
        Path out = Files.createTempFile(tmp, "out-", ".txt");
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

    /** {@code sim-cluster.sh ARGS}, to completion within {@code seconds}. */
    Run runSim(long seconds, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of("bash", SCRIPTS.resolve("sim-cluster.sh").toString()));
        cmd.addAll(List.of(args));
        return run(seconds, cmd.toArray(String[]::new));
    }

    List<String> namespaces() throws Exception {
        return run(10, "ip", "netns", "list").out().lines().map(l -> l.split(" ")[0]).toList();
    }

    @Test
    void twoSelftestsSideBySideEachRunThreeRateLimitedIsolatedHostsAndCleanUpOnlyTheirOwn() throws Exception {
        assumeRootWithNetns();
        String[] prefixes = {PREFIX + "a-", PREFIX + "b-"};
        List<CompletableFuture<Run>> selftests = new ArrayList<>();
        for (String prefix : prefixes) {
            selftests.add(CompletableFuture.supplyAsync(() -> {
                try {
                    return runSim(SELFTEST_TIMEOUT_S, "selftest", "--rate", "100mbit", "--prefix", prefix);
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            }));
        }
        for (int i = 0; i < prefixes.length; i++) {
            Run r = selftests.get(i).get(SELFTEST_TIMEOUT_S + 30, TimeUnit.SECONDS);
            System.out.print(r.out());
            if (r.exitCode() == 77) {
                skip(r.out().strip());
            }
            assertThat(r.exitCode()).as(r.out()).isZero();
            assertThat(r.out()).contains("PASS sim-cluster selftest").contains("prefix " + prefixes[i])
                    .doesNotContain("FAIL");
        }
        assertThat(namespaces()).as("namespaces left behind").noneMatch(n -> n.startsWith(PREFIX));
    }

    @Test
    void downRemovesOnlyItsOwnPrefixAndStaleOnlyTheClustersOfRunsThatAreGone() throws Exception {
        assumeRootWithNetns();
        // a run that died without cleaning up: its pid is that of a process that has exited
        Process gone = new ProcessBuilder("true").start();
        assertThat(gone.waitFor(10, TimeUnit.SECONDS)).isTrue();
        String dead = "wlt" + gone.pid() + "-";
        String live = PREFIX + "c-";
        String other = PREFIX + "d-";
        Assumptions.assumeFalse(namespaces().stream().anyMatch(n -> n.startsWith(dead)),
                "pid " + gone.pid() + " already names a cluster here");
        try {
            for (String p : List.of(dead, live, other)) {
                Run up = runSim(60, "up", "1", "--prefix", p, "--subnet", "10.123");
                assertThat(up.exitCode()).as(up.out()).isZero();
            }
            assertThat(namespaces()).contains(dead + "sw", live + "h1", other + "h0");
            Run stale = runSim(60, "down", "--stale", "wlt");
            assertThat(stale.exitCode()).as(stale.out()).isZero();
            assertThat(namespaces()).doesNotContain(dead + "sw", dead + "h0", dead + "h1")
                    .contains(live + "sw", live + "h0", live + "h1", other + "sw");
            Run down = runSim(60, "down", "--prefix", live);
            assertThat(down.exitCode()).as(down.out()).isZero();
            assertThat(namespaces()).noneMatch(n -> n.startsWith(live)).contains(other + "sw", other + "h1");
            assertThat(runSim(10, "addr", "1", "--subnet", "10.123").out().strip()).isEqualTo("10.123.0.2");
        } finally {
            for (String p : List.of(dead, live, other)) {
                runSim(60, "down", "--prefix", p);
            }
        }
        assertThat(namespaces()).noneMatch(n -> n.startsWith(PREFIX) || n.startsWith(dead));
    }

    @Test
    void theDistributionShipsTheClusterScripts() {
        assertThat(DIST_SCRIPTS.resolve("sim-cluster.sh")).isExecutable();
        assertThat(DIST_SCRIPTS.resolve("fanout-bench.sh")).isExecutable();
        assertThat(DIST_SCRIPTS.resolve("multisource-bench.sh")).isExecutable();
    }
}
