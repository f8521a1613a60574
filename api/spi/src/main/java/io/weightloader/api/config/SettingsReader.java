package io.weightloader.api.config;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigValue;
import com.typesafe.config.ConfigValueType;
import java.math.BigDecimal;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reads settings under one config path and checks each against its documented range, the one way every module reads
 * its settings. An error names the full path, what is allowed, the value given, and where it was set (the file and
 * line, "system properties", "env variables", "command-line flags") unless it is a module's own default.
 *
 * <p>Sizes follow one grammar everywhere, in files, system properties and on the command line ({@link #parseSize}):
 * a whole number of bytes, or a number with a unit, binary ({@code KiB MiB GiB TiB}, also {@code K M G T}) or decimal
 * ({@code kB MB GB TB}), in any case: {@code 64 MiB}, {@code 8GB}, {@code 1.5g}.
 */
public final class SettingsReader {
    private static final Pattern SIZE = Pattern.compile("\\s*(\\d+(?:\\.\\d+)?)\\s*([a-zA-Z]*)\\s*");

    private final Config config;
    private final String base;

    /**
     * @param config the resolved config (with every module's reference.conf under it)
     * @param base   the path the keys are read under, e.g. {@code weight-loader.backends.local}
     */
    public SettingsReader(Config config, String base) {
        this.config = config;
        this.base = base;
    }

    /** The config read from. */
    public Config config() {
        return config;
    }

    /** The full path of {@code key}. */
    public String path(String key) {
        return base + "." + key;
    }

    /** An error about {@code key}, naming where its value was set. */
    public WeightLoaderConfigException error(String key, String problem) {
        return new WeightLoaderConfigException(path(key), problem + origin(key));
    }

    private String origin(String key) {
        try {
            String where = config.getValue(path(key)).origin().description();
            return where.contains("reference.conf") ? "" : " (set in " + where + ")";
        } catch (ConfigException e) {
            return "";
        }
    }

    private ConfigValue value(String key) {
        try {
            return config.getValue(path(key));
        } catch (ConfigException.Missing e) {
            throw new WeightLoaderConfigException(path(key), "is missing (is the module that declares it installed?)");
        }
    }

    /** Text as given, trimmed; numbers and booleans are accepted as their text. */
    public String string(String key) {
        ConfigValue v = value(key);
        if (v.valueType() == ConfigValueType.OBJECT || v.valueType() == ConfigValueType.LIST) {
            throw error(key, "must be a single value, not a " + v.valueType().name().toLowerCase(Locale.ROOT));
        }
        return v.valueType() == ConfigValueType.NULL ? "" : String.valueOf(v.unwrapped()).trim();
    }

    /** Text, or empty when blank. */
    public Optional<String> optionalString(String key) {
        String v = string(key);
        return v.isEmpty() ? Optional.empty() : Optional.of(v);
    }

    public boolean bool(String key) {
        try {
            return config.getBoolean(path(key));
        } catch (ConfigException.WrongType e) {
            throw error(key, "must be true or false; got '" + string(key) + "'");
        }
    }

    /** A whole number in {@code [min, max]}: {@code 1.5}, {@code many} and {@code 1e9} beyond the range are refused. */
    public int integer(String key, int min, int max) {
        return (int) whole(key, min, max);
    }

    /** As {@link #integer}, for longs. */
    public long whole(String key, long min, long max) {
        String text = string(key);
        long v;
        try {
            v = new BigDecimal(text).longValueExact();
        } catch (NumberFormatException | ArithmeticException e) {
            throw error(key, "must be a whole number in " + min + ".." + max + "; got '" + text + "'");
        }
        if (v < min || v > max) {
            throw error(key, "must be in " + min + ".." + max + "; got " + v);
        }
        return v;
    }

    /** A size in bytes in {@code [min, max]}, in the one size grammar ({@link #parseSize}). */
    public long size(String key, long min, long max) {
        String text = string(key);
        long v;
        try {
            v = parseSize(text);
        } catch (IllegalArgumentException e) {
            throw error(key, e.getMessage());
        }
        if (v < min || v > max) {
            throw error(key, "must be between " + describeSize(min) + " and " + describeSize(max) + "; got " + v
                    + " bytes");
        }
        return v;
    }

    /** A duration such as {@code 30s}, {@code 5m}, {@code 500ms}, in {@code [min, max]}. */
    public Duration duration(String key, Duration min, Duration max) {
        Duration d;
        try {
            d = config.getDuration(path(key));
        } catch (ConfigException.BadValue | ConfigException.WrongType e) {
            throw error(key, "must be a duration such as 30s, 5m or 500ms; got '" + string(key) + "'");
        }
        if (d.compareTo(min) < 0 || d.compareTo(max) > 0) {
            throw error(key, "must be between " + min + " and " + max + "; got " + d);
        }
        return d;
    }

    /** One of {@code allowed}. */
    public String oneOf(String key, List<String> allowed) {
        String v = string(key);
        if (!allowed.contains(v)) {
            throw error(key, "must be " + String.join(" or ", allowed) + "; got '" + v + "'");
        }
        return v;
    }

    /**
     * Parses a size: a whole number of bytes, or a number with a unit, binary ({@code KiB MiB GiB TiB}, also
     * {@code K M G T}) or decimal ({@code kB MB GB TB}), case-insensitive.
     *
     * @throws IllegalArgumentException saying what is wrong with {@code text}
     */
    public static long parseSize(String text) {
        Matcher m = SIZE.matcher(text);
        if (!m.matches()) {
            throw new IllegalArgumentException("'" + text + "' is not a size (examples: 1GiB, 512MiB, 8GB, 4096)");
        }
        long unit = switch (m.group(2).toLowerCase(Locale.ROOT)) {
            case "", "b", "byte", "bytes" -> 1L;
            case "k", "ki", "kib", "kibibyte", "kibibytes" -> 1L << 10;
            case "m", "mi", "mib", "mebibyte", "mebibytes" -> 1L << 20;
            case "g", "gi", "gib", "gibibyte", "gibibytes" -> 1L << 30;
            case "t", "ti", "tib", "tebibyte", "tebibytes" -> 1L << 40;
            case "kb", "kilobyte", "kilobytes" -> 1_000L;
            case "mb", "megabyte", "megabytes" -> 1_000_000L;
            case "gb", "gigabyte", "gigabytes" -> 1_000_000_000L;
            case "tb", "terabyte", "terabytes" -> 1_000_000_000_000L;
            default -> throw new IllegalArgumentException("'" + text + "' has an unknown unit '" + m.group(2)
                    + "' (use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB)");
        };
        try {
            return new BigDecimal(m.group(1)).multiply(BigDecimal.valueOf(unit)).longValueExact();
        } catch (ArithmeticException e) {
            throw new IllegalArgumentException("'" + text + "' is not a whole number of bytes below 2^63");
        }
    }

    private static String describeSize(long bytes) {
        if (bytes >= (1L << 30) && bytes % (1L << 30) == 0) {
            return (bytes >> 30) + " GiB";
        }
        if (bytes >= (1L << 20) && bytes % (1L << 20) == 0) {
            return (bytes >> 20) + " MiB";
        }
        if (bytes >= (1L << 10) && bytes % (1L << 10) == 0) {
            return (bytes >> 10) + " KiB";
        }
        return bytes + " bytes";
    }
}
