package io.weightloader.backend.local;

import io.weightloader.api.WeightLoaderException;
import java.io.IOException;
import java.nio.file.Path;
import java.util.Locale;
import java.util.OptionalDouble;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code weight-loader.backends.local.io}: how the local backend reads checkpoint files.
 * <ul>
 *   <li>{@code buffered}: through the page cache (a warm file loads at memory speed);</li>
 *   <li>{@code direct}: with {@code O_DIRECT}, for checkpoints larger than the page cache (no page-cache pollution);
 *       a file system that refuses it is an error;</li>
 *   <li>{@code auto}: per load, when the checkpoint is larger than {@link #PAGE_CACHE_SHARE} of the memory the
 *       kernel reports available (so it cannot stay cached), each file with less than {@link #AUTO_DIRECT_BELOW} of
 *       its pages in the page cache is read with {@code O_DIRECT}; every other file, and every file of a checkpoint
 *       that fits, is read buffered (and where the file system or the kernel's rules leave no choice, that is said
 *       once at INFO).</li>
 * </ul>
 */
enum LocalIo {
    BUFFERED, DIRECT, AUTO;

    static final String KEY = "weight-loader.backends.local.io";

    /**
     * {@code auto} reads a file with O_DIRECT when less than this fraction of it is in the page cache. A cached page
     * is read several times faster buffered than from disk (on the development VM 10x and more), while a cold
     * file read with O_DIRECT ran as fast as buffered there: so O_DIRECT pays only for a file that is essentially
     * cold, and a file with more than a tenth cached is read buffered (docs/PERFORMANCE.md, "Cold checkpoints").
     */
    static final double AUTO_DIRECT_BELOW = 0.10;

    /**
     * {@code auto} considers O_DIRECT only for a checkpoint larger than this share of MemAvailable. On the development
     * VM a cold 1 GiB checkpoint loaded at 0.72x the buffered speed with O_DIRECT (docs/PERFORMANCE.md): where the
     * checkpoint fits in memory, buffered reads are as fast or faster and leave it warm for the next load. A checkpoint
     * above half of the available memory cannot stay cached next to what the host allocates after loading it, and
     * reading it buffered evicts everything else; that is where O_DIRECT is worth its cost.
     */
    static final double PAGE_CACHE_SHARE = 0.5;

    /** Whether {@code checkpointBytes} exceed {@link #PAGE_CACHE_SHARE} of {@code memAvailable} bytes. */
    static boolean largerThanPageCache(long checkpointBytes, long memAvailable) {
        return checkpointBytes > PAGE_CACHE_SHARE * memAvailable;
    }

    /** MemAvailable from /proc/meminfo in bytes, or -1 when it cannot be read. */
    static long memAvailable() {
        try {
            for (String line : java.nio.file.Files.readAllLines(Path.of("/proc/meminfo"))) {
                if (line.startsWith("MemAvailable:")) {
                    String[] f = line.trim().split("\\s+");
                    return Long.parseLong(f[1]) * 1024;
                }
            }
        } catch (IOException | RuntimeException e) {
            return -1;
        }
        return -1;
    }

    /** Logged as the backend that reads (the class is not named: the backend depends on this, not back). */
    private static final Logger LOG = LoggerFactory.getLogger("io.weightloader.backend.local.LocalBackend");

    static LocalIo parse(String text) {
        return valueOf(text.toUpperCase(Locale.ROOT));
    }

    String key() {
        return name().toLowerCase(Locale.ROOT);
    }

    /**
     * Opens {@code file} for one load in this mode. {@code told}: files whose fallback to buffered reads was already
     * logged (each is logged once per backend); {@code largerThanPageCache}: for auto, whether the checkpoint is.
     */
    FileSource open(Path file, Set<Path> told, boolean largerThanPageCache) throws IOException {
        switch (this) {
            case BUFFERED:
                return new BufferedFileSource(file);
            case DIRECT:
                try {
                    return DirectFileReader.open(file);
                } catch (DirectFileReader.Refused e) {
                    throw new WeightLoaderException(KEY + " = direct: " + e.getMessage() + ". Set " + KEY
                            + " = buffered, or auto (which reads such files through the page cache)", e);
                }
            default:
                if (!largerThanPageCache) {
                    return new BufferedFileSource(file);
                }
                OptionalDouble resident = PageCache.residentFraction(file);
                if (resident.isEmpty()) {
                    if (told.add(file)) {
                        LOG.info("{} = auto: cannot see how much of {} is in the page cache (the kernel shows it only"
                                + " to the file's owner or a process that may write it); reading it buffered", KEY, file);
                    }
                    return new BufferedFileSource(file);
                }
                if (resident.getAsDouble() >= AUTO_DIRECT_BELOW) {
                    return new BufferedFileSource(file);
                }
                try {
                    return DirectFileReader.open(file);
                } catch (DirectFileReader.Refused e) {
                    if (told.add(file)) {
                        LOG.info("{} = auto: {}; reading it buffered", KEY, e.getMessage());
                    }
                    return new BufferedFileSource(file);
                }
        }
    }

    /** The engine's note for a load that read {@code direct} of {@code files} files with O_DIRECT. */
    static String engineNote(int direct, int files) {
        if (direct == 0) {
            return "";
        }
        return direct == files ? " (O_DIRECT)" : " (O_DIRECT for " + direct + " of " + files + " files)";
    }
}
