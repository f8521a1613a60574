package io.weightloader.examples;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The README's single-host command blocks, read from README.md so that they stay true (issue 20): every
 * {@code ```bash} block that runs {@code $bin} on one machine (none naming a GPU, another host or an elided
 * {@code ...}) runs through the distribution's launcher, each command to exit 0. A {@code seed} runs in the
 * background until the block ends, and the commands after it wait until it serves (its {@code --ready-file}).
 * What is changed from the text, and only that: {@code /tmp/} is this test's folder (relative paths too: the
 * commands run in it), ports 30000, 30001, 2379 and 2380 free ports, {@code generate}'s size 64 MiB instead of 1 GiB,
 * and optional {@code [--flag]} runs with the flag. An {@code etcd} command (the fleet's registry) runs in the
 * background like a seed, the commands after it waiting until it is healthy; where etcd is not installed, its block is
 * skipped with the reason printed.
 */
class ReadmeIT {
    static final Path README = Path.of("../README.md").toAbsolutePath();
    static final Pattern BLOCK = Pattern.compile("```bash\\n(.*?)```", Pattern.DOTALL);

    @TempDir
    Path tmp;
    private final List<Process> seeds = new ArrayList<>();
    private int runs;

    @AfterEach
    void stopSeeds() throws InterruptedException {
        for (Process p : seeds) {
            p.destroy();
            if (!p.waitFor(15, TimeUnit.SECONDS)) {
                p.destroyForcibly();
            }
        }
        seeds.clear();
    }

    /** The README's {@code ```bash} blocks that run {@code $bin} on this machine alone. */
    static List<String> singleHostBlocks() throws IOException {
        List<String> blocks = new ArrayList<>();
        Matcher m = BLOCK.matcher(Files.readString(README, StandardCharsets.UTF_8));
        while (m.find()) {
            String b = m.group(1);
            if (b.contains("$bin ") && !b.contains("cuda") && !b.contains(" ... ") && !b.matches("(?s).*\\b10\\.\\d+\\.\\d+\\.\\d+.*")) {
                blocks.add(b);
            }
        }
        return blocks;
    }

    /** One block's commands: continuation lines joined, comments and the {@code bin=} line dropped. */
    static List<String> commands(String block) {
        List<String> out = new ArrayList<>();
        StringBuilder cur = new StringBuilder();
        for (String line : block.split("\n")) {
            String code = line.replaceFirst("(^|\\s)#.*$", "").strip();
            boolean more = code.endsWith("\\");
            cur.append(more ? code.substring(0, code.length() - 1) : code).append(' ');
            if (!more) {
                String cmd = cur.toString().strip();
                cur.setLength(0);
                if (!cmd.isEmpty() && !cmd.startsWith("bin=")) {
                    out.add(cmd);
                }
            }
        }
        return out;
    }

    /** The ports a README block names, each replaced by a free one of this run. */
    static final List<String> PORTS = List.of("30000", "30001", "2379", "2380");

    /** A command's words after {@code $bin} (or the whole {@code etcd} command), with this test's substitutions. */
    List<String> words(String cmd, Map<String, String> ports) {
        boolean etcd = cmd.startsWith("etcd ");
        assertThat(cmd).as("a README command").matches("(\\$bin|etcd) .*");
        String s = (etcd ? cmd : cmd.substring(5).replace("[", "").replace("]", "")).replace("/tmp/", tmp + "/");
        for (Map.Entry<String, String> p : ports.entrySet()) {
            s = s.replaceAll("(?<![0-9])" + p.getKey() + "(?![0-9])", p.getValue());
        }
        List<String> w = new ArrayList<>(List.of(s.trim().split("\\s+")));
        for (int i = 0; i + 1 < w.size(); i++) {
            if (w.get(0).equals("generate") && w.get(i).equals("--size")) {
                w.set(i + 1, "64MiB");
            }
        }
        return w;
    }

    Process start(List<String> args, Path out) throws IOException {
        List<String> cmd = new ArrayList<>();
        if (args.get(0).equals("etcd")) {
            cmd.add(ETCD.toString());
            cmd.addAll(args.subList(1, args.size()));
        } else {
            cmd.add(DistributionIT.LAUNCHER.toString());
            cmd.addAll(args);
        }
        ProcessBuilder pb = new ProcessBuilder(cmd).directory(tmp.toFile()).redirectErrorStream(true)
                .redirectOutput(out.toFile());
        pb.environment().keySet().removeIf(k -> k.startsWith("WEIGHT_LOADER_") || k.startsWith("WEIGHTLOADER_"));
        return pb.start();
    }

    /** Debian's etcd-server (or $ETCD), for the fleet's block. */
    static final Path ETCD = Path.of(System.getenv("ETCD") != null && !System.getenv("ETCD").isBlank()
            ? System.getenv("ETCD") : "/usr/bin/etcd");

    /** Waits (bounded) until the etcd started with {@code args} answers its health check. */
    void awaitEtcd(Process p, List<String> args, Path log) throws Exception {
        int i = args.indexOf("--listen-client-urls");
        URI health = URI.create(args.get(i + 1).split(",")[0] + "/health");
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(1)).build();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (true) {
            try {
                HttpResponse<String> r = http.send(HttpRequest.newBuilder(health).timeout(Duration.ofSeconds(2))
                        .build(), HttpResponse.BodyHandlers.ofString());
                if (r.statusCode() == 200 && r.body().contains("true")) {
                    return;
                }
            } catch (IOException e) {
                // not listening yet
            }
            if (!p.isAlive() || System.nanoTime() > deadline) {
                throw new AssertionError("README: etcd did not become healthy within 60 s (ran: "
                        + String.join(" ", args) + "):\n" + Files.readString(log));
            }
            Thread.sleep(100);
        }
    }

    static int freePort() throws IOException {
        try (java.net.ServerSocket s = new java.net.ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    @Test
    void theReadmesSingleHostCommandsWorkAsWritten() throws Exception {
        List<String> blocks = singleHostBlocks();
        // "Using it" (generate, inspect, load, a seed and its client) and the tensor-parallel layouts, at least
        assertThat(blocks).as("single-host blocks in README.md").hasSizeGreaterThanOrEqualTo(2);
        int ran = 0;
        boolean fleet = false;
        for (String block : blocks) {
            Map<String, String> ports = new HashMap<>();
            for (String p : PORTS) {
                ports.put(p, String.valueOf(freePort()));
            }
            if (commands(block).stream().anyMatch(c -> c.startsWith("etcd ")) && !Files.isExecutable(ETCD)) {
                System.out.println("SKIPPED: README block with etcd: etcd is not installed (no executable " + ETCD
                        + "; apt-get install etcd-server, or set ETCD to its path)");
                continue;
            }
            for (String cmd : commands(block)) {
                List<String> args = words(cmd, ports);
                Path log = tmp.resolve("readme-" + runs++ + ".log");
                if (args.get(0).equals("etcd")) {
                    Process p = start(args, log);
                    seeds.add(p);
                    awaitEtcd(p, args, log);
                    fleet = true;
                } else if (args.get(0).equals("seed")) {
                    Path ready = tmp.resolve("ready-" + runs);
                    args.add("--ready-file");
                    args.add(ready.toString());
                    Process p = start(args, log);
                    seeds.add(p);
                    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
                    while (!Files.exists(ready)) {
                        if (!p.isAlive() || System.nanoTime() > deadline) {
                            throw new AssertionError("README: `" + cmd + "` did not start serving within 120 s"
                                    + " (ran: " + String.join(" ", args) + "):\n" + Files.readString(log));
                        }
                        Thread.sleep(50);
                    }
                } else {
                    Process p = start(args, log);
                    if (!p.waitFor(180, TimeUnit.SECONDS)) {
                        p.destroyForcibly();
                        throw new AssertionError("README: `" + cmd + "` did not finish within 180 s:\n"
                                + Files.readString(log));
                    }
                    assertThat(p.exitValue()).as("README: `%s` (ran: %s):%n%s", cmd, String.join(" ", args),
                            Files.readString(log)).isZero();
                }
                ran++;
            }
            stopSeeds(); // the next block's seed may take the same port
        }
        System.out.println("ReadmeIT: ran " + ran + " commands of " + blocks.size() + " README blocks");
        assertThat(tmp.resolve("report.json")).as("load --report /tmp/report.json").isRegularFile();
        assertThat(tmp.resolve("remote.json")).as("the seed's client's --report").isRegularFile();
        assertThat(tmp.resolve("r1.json")).as("the tp rank's --report r1.json").isRegularFile();
        if (fleet) {
            assertThat(tmp.resolve("fleet.json")).as("the fleet's client by model id, --report /tmp/fleet.json")
                    .isRegularFile();
            assertThat(Files.readString(tmp.resolve("fleet.json"))).contains("from registry etcd://127.0.0.1:");
        }
    }
}
