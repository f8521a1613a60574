package io.weightloader.api.config;

import io.weightloader.api.WeightLoaderException;

/** A setting is missing, unknown or invalid; the message starts with its config path. */
public class WeightLoaderConfigException extends WeightLoaderException {
    private final String path;
    private final String problem;

    public WeightLoaderConfigException(String path, String problem) {
        super(path + ": " + problem);
        this.path = path;
        this.problem = problem;
    }

    public WeightLoaderConfigException(String path, String problem, Throwable cause) {
        super(path + ": " + problem, cause);
        this.path = path;
        this.problem = problem;
    }

    /** What is wrong, without the path. */
    public String problem() {
        return problem;
    }

    /** The config path at fault, e.g. {@code weight-loader.remote-instance.seed-instance-ip}. */
    public String path() {
        return path;
    }
}
