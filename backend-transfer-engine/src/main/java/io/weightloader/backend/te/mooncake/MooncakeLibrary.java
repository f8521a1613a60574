package io.weightloader.backend.te.mooncake;

import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;
import io.weightloader.api.WeightLoaderException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;

/**
 * A loaded {@code libtransfer_engine.so} (Mooncake Transfer Engine's C API).
 *
 * <p>Nothing is loaded when this class (or a provider referring to it) is loaded: {@link #load(String)} loads on
 * first use and caches per location. Where the library is looked for, in order: the explicit path (config key
 * {@value #CONFIG_KEY}), the environment variable {@value #ENV_VAR}, then the name {@value #LIBRARY_NAME} on
 * JNA's default search path ({@code jna.library.path}, {@code LD_LIBRARY_PATH}, system directories). The
 * library needs a Mooncake build with shared libraries ({@code -DBUILD_SHARED_LIBS=ON}); the Python wheel
 * links the engine statically and does not export the C API.
 */
public final class MooncakeLibrary {

    /** Config key that names the library file. */
    public static final String CONFIG_KEY = "weight-loader.backends.transfer_engine.mooncake.library";
    /** Environment variable that names the library file. */
    public static final String ENV_VAR = "WEIGHTLOADER_MOONCAKE_LIB";
    /** Library name on the default search path. */
    public static final String LIBRARY_NAME = "transfer_engine";
    /** File name, for messages. */
    public static final String FILE_NAME = "libtransfer_engine.so";

    private static final Map<String, MooncakeLibrary> LOADED = new ConcurrentHashMap<>();

    private final MooncakeC api;
    private final String location;

    private MooncakeLibrary(MooncakeC api, String location) {
        this.api = api;
        this.location = location;
    }

    /**
     * Loads (once per location) the library.
     *
     * @param explicitPath the configured path ({@value #CONFIG_KEY}), or null/blank to fall back to
     *     {@value #ENV_VAR} and then the default search path
     * @throws WeightLoaderException when the library cannot be loaded or does not export the C API
     */
    public static MooncakeLibrary load(String explicitPath) {
        return load(explicitPath, System.getenv());
    }

    static MooncakeLibrary load(String explicitPath, Map<String, String> env) {
        String source;
        String target;
        if (explicitPath != null && !explicitPath.isBlank()) {
            target = explicitPath.strip();
            source = "'" + target + "' (from config key " + CONFIG_KEY + ")";
        } else if (env.get(ENV_VAR) != null && !env.get(ENV_VAR).isBlank()) {
            target = env.get(ENV_VAR).strip();
            source = "'" + target + "' (from environment variable " + ENV_VAR + ")";
        } else {
            target = LIBRARY_NAME;
            source = "the default library search path (jna.library.path, LD_LIBRARY_PATH, system directories; "
                    + "neither " + CONFIG_KEY + " nor " + ENV_VAR + " is set)";
        }
        String where = source;
        return LOADED.computeIfAbsent(target, (Function<String, MooncakeLibrary>) t -> doLoad(t, where));
    }

    private static MooncakeLibrary doLoad(String target, String where) {
        if (target.contains("/") && !Files.isRegularFile(Path.of(target))) {
            throw missing(where, "no such file", null);
        }
        try {
            NativeLibrary lib = NativeLibrary.getInstance(target);
            try {
                // Fail now, not at the first call, when the file is some other library (e.g. the Python wheel's).
                lib.getFunction("createTransferEngine");
                lib.getFunction("submitTransfer");
            } catch (UnsatisfiedLinkError e) {
                throw missing(where, "the library does not export Mooncake's C API (transfer_engine_c.h): "
                        + e.getMessage(), e);
            }
            MooncakeC api = Native.load(target, MooncakeC.class);
            return new MooncakeLibrary(api, lib.getFile() != null ? lib.getFile().toString() : target);
        } catch (UnsatisfiedLinkError e) {
            throw missing(where, String.valueOf(e.getMessage()), e);
        } catch (NoClassDefFoundError e) {
            throw missing(where, "JNA (net.java.dev.jna:jna) is missing or broken: " + e, e);
        }
    }

    private static WeightLoaderException missing(String where, String why, Throwable cause) {
        return new WeightLoaderException("cannot load Mooncake Transfer Engine " + FILE_NAME + " from " + where
                + ": " + why + ". Point config key " + CONFIG_KEY + " or environment variable " + ENV_VAR
                + " at " + FILE_NAME + " from a Mooncake build with -DBUILD_SHARED_LIBS=ON (the Python wheel does "
                + "not export the C API); its dependency libasio.so must sit next to it or on LD_LIBRARY_PATH",
                cause);
    }

    /** The bound C API. */
    public MooncakeC api() {
        return api;
    }

    /** Where the library was loaded from. */
    public String location() {
        return location;
    }

    /**
     * Throws unless {@code rc} is 0. Covers both conventions: negative {@code ERR_*} codes
     * (registerLocalMemory, openSegment, ...) and positive {@code Status::Code}s (submitTransfer,
     * getTransferStatus, freeBatchID); the numbers share their meaning.
     *
     * @return {@code rc} (0)
     */
    public static int check(int rc, String operation) {
        Objects.requireNonNull(operation, "operation is null");
        if (rc != 0) {
            throw new WeightLoaderException("Mooncake " + operation + " failed: " + describe(rc));
        }
        return rc;
    }

    /** {@code "code -7 (overlapping region ...)"}. */
    public static String describe(int rc) {
        return "code " + rc + " (" + meaning(rc) + ")";
    }

    static String meaning(int rc) {
        switch (Math.abs(rc)) {
            case 0: return "ok";
            case 1: return "invalid argument";
            case 2: return "too many requests: more than the batch size";
            case 3: return "address not registered";
            case 4: return "batch busy: not every task was polled to a final state";
            case 6: return "device not found";
            case 7: return "overlapping region: the range overlaps memory already registered";
            case 8: return "transport not installed for this request";
            case 101: return "DNS lookup failed";
            case 102: return "socket error";
            case 103: return "malformed JSON";
            case 104: return "handshake rejected";
            case 200: return "metadata error (peer unreachable or segment unknown)";
            case 201: return "endpoint error";
            case 202: return "context error";
            case 300: return "NUMA error";
            case 301: return "clock error";
            case 302: return "memory error";
            case 303:
            case 999: return "not implemented";
            default: return "unknown Mooncake error";
        }
    }

    @Override
    public String toString() {
        return "MooncakeLibrary[" + location + "]";
    }
}
