package io.weightloader.api;

/** Any failure to load weights. Messages name the file, tensor, config path or peer involved. */
public class WeightLoaderException extends RuntimeException {
    public WeightLoaderException(String message) {
        super(message);
    }

    public WeightLoaderException(String message, Throwable cause) {
        super(message, cause);
    }
}
