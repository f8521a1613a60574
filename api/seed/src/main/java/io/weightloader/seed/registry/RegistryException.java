package io.weightloader.seed.registry;

/** A registry could not be reached or refused a request; the message names the registry. */
public final class RegistryException extends RuntimeException {
    public RegistryException(String message, Throwable cause) {
        super(message, cause);
    }

    public RegistryException(String message) {
        super(message);
    }
}
