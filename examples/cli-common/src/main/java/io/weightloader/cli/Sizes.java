package io.weightloader.cli;

import io.weightloader.api.config.SettingsReader;
import java.util.Locale;
import picocli.CommandLine;

/** Byte sizes on the command line: {@code 1GiB}, {@code 512MiB}, {@code 8GB}, {@code 4096}; and back to text. */
public final class Sizes {

    private Sizes() {
    }

    /** Parses a size in the one grammar of settings and flags ({@link SettingsReader#parseSize}). */
    public static long parse(String text) {
        return SettingsReader.parseSize(text);
    }

    /** {@code 1.50 GiB}, {@code 512.0 MiB}, {@code 123 B}. */
    public static String human(long bytes) {
        String[] units = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
        double v = bytes;
        int u = 0;
        while (Math.abs(v) >= 1024 && u < units.length - 1) {
            v /= 1024;
            u++;
        }
        return u == 0 ? bytes + " B" : String.format(Locale.ROOT, "%.2f %s", v, units[u]);
    }

    /** A duration as people write it: {@code 250 ms}, {@code 1.2 s}, {@code 10 s}, {@code 2 min 5 s}, {@code 1 h}. */
    public static String human(java.time.Duration d) {
        long ms = d.toMillis();
        if (ms < 1000) {
            return ms + " ms";
        }
        if (ms < 60_000) {
            return ms % 1000 == 0 ? ms / 1000 + " s" : String.format(Locale.ROOT, "%.1f s", ms / 1000.0);
        }
        long s = d.toSeconds();
        if (s < 3600) {
            return s / 60 + " min" + (s % 60 == 0 ? "" : " " + s % 60 + " s");
        }
        return s / 3600 + " h" + (s % 3600 / 60 == 0 ? "" : " " + s % 3600 / 60 + " min");
    }

    /** picocli converter: a bad size is a usage error naming the option. */
    public static final class Converter implements CommandLine.ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            try {
                return parse(value);
            } catch (IllegalArgumentException e) {
                throw new CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }
}
