package io.weightloader.testing;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** A {@link TestSeedMain} in a separate JVM, on this JVM's class path. */
public final class SeedProcess implements AutoCloseable {
    public final Process process;
    public final int port;

    public SeedProcess(int tensors, long bytesEach, long seed, String token) throws IOException {
        this(tensors, bytesEach, seed, token, "cpu", "weight-loader.remote-instance.start-seed-via-transfer-engine = true");
    }

    /** A seed holding its tensors on {@code device}, with extra settings in HOCON. */
    public SeedProcess(int tensors, long bytesEach, long seed, String token, String device, String hocon)
            throws IOException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        process = new ProcessBuilder(List.of(java, "-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", System.getProperty("java.class.path"), TestSeedMain.class.getName(),
                String.valueOf(tensors), String.valueOf(bytesEach), String.valueOf(seed), token, device, hocon))
                .redirectError(ProcessBuilder.Redirect.INHERIT).start();
        BufferedReader out = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8));
        String line = out.readLine();
        if (line == null || !line.startsWith("READY ")) {
            process.destroyForcibly();
            throw new IOException("seed JVM did not start: " + line);
        }
        port = Integer.parseInt(line.substring(6).trim());
    }

    /** Kills the seed like a crash would (SIGKILL). */
    public void kill() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor(10, TimeUnit.SECONDS);
    }

    @Override
    public void close() throws Exception {
        process.getOutputStream().close();
        if (!process.waitFor(10, TimeUnit.SECONDS)) {
            kill();
        }
    }
}
