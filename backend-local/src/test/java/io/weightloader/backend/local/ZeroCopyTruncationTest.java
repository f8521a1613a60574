package io.weightloader.backend.local;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code load --zero-copy --checksum sha256} of a shard truncated mid-load printed the right error and then the JVM
 * died (SIGSEGV, exit 134, an hs_err file left): the mappings were unmapped while other threads still hashed through
 * them. The load runs in its own JVM ({@link TruncatedUnderZeroCopyMain}), since a crash would take this one with it.
 */
class ZeroCopyTruncationTest {
    @TempDir
    Path dir;

    @Test
    @org.junit.jupiter.api.Timeout(180)
    void aShardTruncatedUnderAZeroCopyChecksumLoadIsOneErrorAndExit1NotACrash() throws Exception {
        Path work = Files.createDirectories(dir.resolve("run"));
        Path ck = Files.createDirectories(dir.resolve("ck"));
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(List.of(java, "-Xmx256m", "-XX:-CreateCoredumpOnCrash",
                "-XX:ErrorFile=" + work.resolve("hs_err_pid%p.log"),
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", System.getProperty("java.class.path"), TruncatedUnderZeroCopyMain.class.getName(), ck.toString()))
                .directory(work.toFile()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).as(out).isTrue();
        assertThat(p.exitValue()).as(out).isEqualTo(1);
        assertThat(out).doesNotContain("A fatal error has been detected");
        assertThat(hsErrFiles(work)).as(out).isEmpty();
        Path cut = ck.resolve("a.safetensors");
        assertThat(cut).as(out).exists();
        byte[] length = new byte[8];
        try (var in = Files.newInputStream(cut)) {
            assertThat(in.readNBytes(length, 0, 8)).isEqualTo(8);
        }
        long headerNeeds = 8 + ByteBuffer.wrap(length).order(ByteOrder.LITTLE_ENDIAN).getLong() + (1 << 20);
        assertThat(out).contains(cut.toString()).contains("tensor 'a'").contains("truncated")
                .contains(Files.size(cut) + " bytes").contains("needs " + headerNeeds)
                .doesNotContain("InternalError");
    }

    private static List<Path> hsErrFiles(Path d) throws IOException {
        try (Stream<Path> s = Files.list(d)) {
            return s.filter(f -> f.getFileName().toString().startsWith("hs_err")).toList();
        }
    }
}
