package io.weightloader.benchmarks;

import io.weightloader.cli.CliSubcommand;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * {@code bench-gpu}'s seed JVM as the driver sees it: starts it ({@link GpuBenchSeed}), reads what it prints (its port,
 * its GEMM throughput every half second, each GEMM's completion time), pauses and resumes its GEMM load, and measures
 * its throughput over a window.
 */
final class SeedProcess {
    /** The seed's GEMM throughput over the half second that ended at {@code epochMillis}. */
    record Sample(long epochMillis, double tflops) {
    }

    private final Process process;
    private final List<Sample> samples = new CopyOnWriteArrayList<>();
    /** GEMM completion times (System.nanoTime of the seed; CLOCK_MONOTONIC, comparable on one host). */
    private final List<Long> completions = Collections.synchronizedList(new ArrayList<>());
    private PrintWriter toSeed;

    private SeedProcess(Process process) {
        this.process = process;
    }

    /** Starts the seed JVM: this class path, {@code bench-gpu --role seed}. */
    static SeedProcess start(long size, int gemm, String mooncakeLibrary) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), CliSubcommand.MAIN_CLASS, "bench-gpu",
                "--role", "seed", "--size", Long.toString(size), "--gemm", Integer.toString(gemm)));
        if (mooncakeLibrary != null) {
            cmd.add("--mooncake-library");
            cmd.add(mooncakeLibrary);
        }
        return new SeedProcess(new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start());
    }

    /** Reads the seed's output from now on, and waits (5 minutes at most) until it serves: returns its port. */
    int awaitReady() throws Exception {
        BufferedReader r = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8));
        int[] port = {-1};
        Object lock = new Object();
        Thread reader = new Thread(() -> {
            try {
                for (String line; (line = r.readLine()) != null; ) {
                    if (line.startsWith("g ")) {
                        completions.add(Long.parseLong(line.substring(2).trim()));
                    } else if (line.startsWith("GEMM ")) {
                        String[] f = line.split(" ");
                        samples.add(new Sample(Long.parseLong(f[1]), Double.parseDouble(f[2])));
                    } else if (line.startsWith("READY ")) {
                        synchronized (lock) {
                            port[0] = Integer.parseInt(line.substring(6).trim());
                            lock.notifyAll();
                        }
                    } else {
                        System.err.println("[seed] " + line);
                    }
                }
            } catch (Exception ignored) {
                // the seed ended
            }
            synchronized (lock) {
                lock.notifyAll();
            }
        }, "seed-output");
        reader.setDaemon(true);
        reader.start();
        synchronized (lock) {
            long until = System.currentTimeMillis() + 300_000;
            while (port[0] < 0 && process.isAlive() && System.currentTimeMillis() < until) {
                lock.wait(1000);
            }
        }
        if (port[0] < 0) {
            throw new IllegalStateException("the seed JVM did not start");
        }
        toSeed = new PrintWriter(process.getOutputStream(), true, StandardCharsets.UTF_8);
        return port[0];
    }

    /** Pauses the seed's GEMM load. */
    void pause() {
        toSeed.println("pause");
    }

    /** Resumes the seed's GEMM load. */
    void resume() {
        toSeed.println("resume");
    }

    /** Closes the seed's stdin, which ends it, and waits for it to exit. */
    void stop() throws IOException, InterruptedException {
        process.getOutputStream().close();
        process.waitFor();
    }

    /** GEMMs the seed completed inside (from, to], in its System.nanoTime. */
    int completionsIn(long from, long to) {
        synchronized (completions) {
            int n = 0;
            for (long t : completions) {
                if (t > from && t <= to) {
                    n++;
                }
            }
            return n;
        }
    }

    /** Mean TFLOP/s of the half-second samples that ended inside (from + 500 ms, to]. */
    double meanTflops(long from, long to) {
        return samples.stream().filter(s -> s.epochMillis() > from + 500 && s.epochMillis() <= to)
                .mapToDouble(Sample::tflops).average().orElse(Double.NaN);
    }

    /** Two seconds of the seed's GEMMs with nothing else going on: {TFLOP/s, GEMMs per second}. */
    double[] idleWindow() throws InterruptedException {
        long fromMillis = System.currentTimeMillis();
        long fromNanos = System.nanoTime();
        Thread.sleep(2100);
        Thread.sleep(100); // let the last completions arrive
        long toNanos = System.nanoTime() - 100_000_000L;
        double tflops = meanTflops(fromMillis, System.currentTimeMillis() - 100);
        double rate = completionsIn(fromNanos, toNanos) / ((toNanos - fromNanos) / 1e9);
        return new double[] {tflops, rate};
    }
}
