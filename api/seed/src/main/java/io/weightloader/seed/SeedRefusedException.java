package io.weightloader.seed;

import io.weightloader.api.WeightLoaderException;

/** The seed answered a control-plane request with an error status (the message names the seed and the request). */
public class SeedRefusedException extends WeightLoaderException {
    private final int status;

    public SeedRefusedException(String message, int status) {
        super(message);
        this.status = status;
    }

    public SeedRefusedException(String message, int status, Throwable cause) {
        super(message, cause);
        this.status = status;
    }

    /** The HTTP status the seed answered, e.g. 401, 404, 409. */
    public int status() {
        return status;
    }
}
