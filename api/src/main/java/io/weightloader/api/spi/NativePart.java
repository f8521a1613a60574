package io.weightloader.api.spi;

import com.sun.jna.NativeLibrary;
import java.io.File;
import java.util.Objects;

/**
 * A native library a backend needs, and whether this machine has it: what {@code weightloader backends} prints.
 *
 * @param name      the library, e.g. {@code libnccl.so.2}
 * @param neededFor what it is needed for, e.g. {@code cuda:N destinations}
 * @param present   whether the dynamic linker could open it here
 * @param detail    where it was found, or why it could not be opened (the linker's own words)
 */
public record NativePart(String name, String neededFor, boolean present, String detail) {
    public NativePart {
        Objects.requireNonNull(name, "name is null");
        Objects.requireNonNull(neededFor, "neededFor is null");
        Objects.requireNonNull(detail, "detail is null");
    }

    /**
     * Opens {@code library} (a file name on the system library path, or a path) with the dynamic linker and says
     * where it was found, or the linker's reason it was not. Never throws.
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
        java.util.regex.Matcher m = java.util.regex.Pattern
                .compile("([^\\s:'\"()]+: cannot open shared object file[^\\n]*?)(?=\\s+\\S+: cannot open|\\s+Native|\\n|$)")
                .matcher(message);
        if (m.find()) {
            return m.group(1).strip();
        }
        int nl = message.indexOf('\n');
        return (nl < 0 ? message : message.substring(0, nl)).strip();
    }
}
