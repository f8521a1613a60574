package io.weightloader.backend.te.mooncake;

import io.weightloader.memory.NativeLibraries;
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
        Location l = locate(explicitPath, env, System.getProperty(HOME_PROPERTY));
        return LOADED.computeIfAbsent(l.target(), (Function<String, MooncakeLibrary>) t -> doLoad(t, l.source()));
    }

    /** System property the launcher sets to the distribution's folder; its {@code mooncake/} is searched. */
    public static final String HOME_PROPERTY = "weightloader.home";

    /** Where the library would be loaded from, and which setting said so. */
    public record Location(String target, String source) {
    }

    /**
     * Where {@link #load} looks, in order: the configured path, {@value #ENV_VAR}, the distribution's
     * {@code mooncake/} folder (the launcher sets {@value #HOME_PROPERTY}), then the default search path.
     */
    public static Location locate(String explicitPath, Map<String, String> env, String home) {
        if (explicitPath != null && !explicitPath.isBlank()) {
            String t = explicitPath.strip();
            return new Location(t, "'" + t + "' (from config key " + CONFIG_KEY + ")");
        }
        if (env.get(ENV_VAR) != null && !env.get(ENV_VAR).isBlank()) {
            String t = env.get(ENV_VAR).strip();
            return new Location(t, "'" + t + "' (from environment variable " + ENV_VAR + ")");
        }
        if (home != null && !home.isBlank()) {
            Path bundled = Path.of(home, "mooncake", FILE_NAME);
            if (Files.isRegularFile(bundled)) {
                return new Location(bundled.toString(), "'" + bundled + "' (the distribution's mooncake/ folder)");
            }
        }
        return new Location(LIBRARY_NAME, "the default library search path (jna.library.path, LD_LIBRARY_PATH, "
                + "system directories; neither " + CONFIG_KEY + " nor " + ENV_VAR + " is set"
                + (home != null ? ", and " + Path.of(home, "mooncake", FILE_NAME) + " does not exist" : "") + ")");
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
            throw missing(where, linkerReason(e.getMessage()), e);
        } catch (NoClassDefFoundError e) {
            throw missing(where, "JNA (net.java.dev.jna:jna) is missing or broken: " + e, e);
        }
    }

    private static final java.util.regex.Pattern MISSING_DEPENDENCY =
            java.util.regex.Pattern.compile("([^\\s:/'\"]+\\.so[0-9.]*): cannot open shared object file");

    /**
     * The dynamic linker's reason (dlerror's text, which JNA passes on), turned into what to do: the library that is
     * actually missing, and where it comes from.
     */
    static String linkerReason(String message) {
        String m = message == null ? "unknown reason" : message.replace('\n', ' ');
        java.util.regex.Matcher dep = MISSING_DEPENDENCY.matcher(m);
        while (dep.find()) {
            String lib = dep.group(1);
            if (lib.startsWith("libtransfer_engine")) {
                continue; // the library itself, not a dependency
            }
            String advice;
            if (lib.startsWith("libcuda.so")) {
                advice = "this is a CUDA build of Mooncake and " + lib + " comes with the NVIDIA driver: run it on a "
                        + "machine with a GPU, or use a CPU build (examples/scripts/build-mooncake.sh without --cuda)";
            } else if (lib.startsWith("libcudart")) {
                advice = lib + " is the CUDA runtime this build was made against: install it, or put its folder on "
                        + "LD_LIBRARY_PATH";
            } else {
                advice = "put it beside " + FILE_NAME + " (examples/scripts/build-mooncake.sh bundles every dependency)"
                        + " or on LD_LIBRARY_PATH";
            }
            return "its dependency " + lib + " cannot be found (" + advice + "); the linker said: "
                    + NativeLibraries.reason(m);
        }
        return NativeLibraries.reason(m);
    }

    private static WeightLoaderException missing(String where, String why, Throwable cause) {
        return new WeightLoaderException("cannot load Mooncake Transfer Engine " + FILE_NAME + " from " + where
                + ": " + why + ". Point config key " + CONFIG_KEY + " or environment variable " + ENV_VAR
                + " at " + FILE_NAME + " from a Mooncake build with shared libraries (examples/scripts/"
                + "build-mooncake.sh makes one; the Python wheel does not export the C API)", cause);
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
            case 1: return "invalid argument (for GPU memory: a CUDA build of Mooncake is needed, and the memory must"
                    + " be a cudaMalloc allocation)";
            case 2: return "too many requests: more than the batch size";
            case 3: return "address not registered: the read reaches outside the seed's registered weight memory";
            case 4: return "batch busy: not every task was polled to a final state";
            case 6: return "device not found: no NIC for this transport (rdma needs an RDMA NIC; see "
                    + "weight-loader.backends.transfer_engine.devices)";
            case 7: return "overlapping region: the range overlaps memory already registered";
            case 8: return "transport not installed for this request: the client's engine has no transport that reaches"
                    + " this memory (client and seed must use the same protocol; nvlink_intra reads GPU memory of"
                    + " one host only)";
            case 101: return "DNS lookup failed";
            case 102: return "socket error: the seed's engine port cannot be reached (firewall, or the seed is gone)";
            case 103: return "malformed JSON";
            case 104: return "handshake rejected by the peer's engine (different Mooncake versions or transports?)";
            case 200: return "metadata error: the peer is unreachable or does not know this segment (is "
                    + "weight-loader.backends.transfer_engine.hostname on the seed an address clients can dial?)";
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
