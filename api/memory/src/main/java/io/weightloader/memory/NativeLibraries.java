package io.weightloader.memory;

import com.sun.jna.NativeLibrary;
import io.weightloader.api.spi.NativePart;
import java.io.File;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Asks the dynamic linker whether a native library can be opened here, in its own words when it cannot. */
public final class NativeLibraries {
    private static final Pattern CANNOT_OPEN = Pattern.compile(
            "([^\\s:'\"()]+: cannot open shared object file[^\\n]*?)(?=\\s+\\S+: cannot open|\\s+Native|\\n|$)");

    private NativeLibraries() {
    }

    /**
     * Opens {@code library} (a file name on the system library path, or a path) and says where it was found, or the
     * linker's reason it was not. Never throws.
     */
    public static NativePart probe(String library, String neededFor) {
        try {
            NativeLibrary lib = NativeLibrary.getInstance(library);
            File f = lib.getFile();
            return new NativePart(library, neededFor, true, f != null ? f.toString() : "found");
        } catch (UnsatisfiedLinkError e) {
            return new NativePart(library, neededFor, false, reason(e.getMessage()));
        } catch (LinkageError e) {
            return new NativePart(library, neededFor, false, "JNA could not load: " + e);
        }
    }

    /** The dynamic linker's own reason (dlerror), out of JNA's longer message. */
    public static String reason(String message) {
        if (message == null) {
            return "not found";
        }
        Matcher m = CANNOT_OPEN.matcher(message);
        if (m.find()) {
            return m.group(1).strip();
        }
        int nl = message.indexOf('\n');
        return (nl < 0 ? message : message.substring(0, nl)).strip();
    }
}
