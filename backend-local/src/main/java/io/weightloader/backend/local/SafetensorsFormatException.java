package io.weightloader.backend.local;

import io.weightloader.api.WeightLoaderException;
import java.nio.file.Path;

/** A checkpoint file or index is malformed; the message names the file (and the tensor when there is one). */
public class SafetensorsFormatException extends WeightLoaderException {
    public SafetensorsFormatException(Path file, String problem) {
        super(file + ": " + problem);
    }

    public SafetensorsFormatException(Path file, String tensor, String problem) {
        super(file + ": tensor '" + tensor + "': " + problem);
    }

    public SafetensorsFormatException(Path file, String tensor, String problem, Throwable cause) {
        super(file + ": tensor '" + tensor + "': " + problem, cause);
    }

    public SafetensorsFormatException(Path file, String problem, Throwable cause) {
        super(file + ": " + problem, cause);
    }
}
