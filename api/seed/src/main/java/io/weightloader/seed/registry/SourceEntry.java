package io.weightloader.seed.registry;

import java.util.Objects;
import java.util.regex.Pattern;

/**
 * One source of a model in a registry: a seed (the root, or a relay) at {@code address} that serves the weights the
 * fingerprint names.
 *
 * @param address     the source's control-plane {@code host:port}
 * @param modelId     the model's id ({@code weight-loader.model-id})
 * @param fingerprint what it serves (rank included)
 * @param ready       true once it holds every byte, checked; false while it loads (a pipelined relay)
 */
public record SourceEntry(String address, String modelId, Fingerprint fingerprint, boolean ready) {
    /** A host name or an IPv4 address, or a bracketed IPv6 address, then a port (as the directory accepts). */
    static final Pattern ADDRESS = Pattern.compile("(\\[[0-9A-Fa-f:.]{2,64}\\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}");
    /** A model id: a name such as {@code meta-llama/Llama-3.1-8B} or {@code llama-3.1-8b@v2}. */
    static final Pattern MODEL_ID = Pattern.compile("[A-Za-z0-9._:@+-]+(/[A-Za-z0-9._:@+-]+)*");
    static final int MAX_MODEL_ID = 200;

    public SourceEntry {
        Objects.requireNonNull(address, "address is null");
        Objects.requireNonNull(modelId, "modelId is null");
        Objects.requireNonNull(fingerprint, "fingerprint is null");
        checkAddress(address);
        checkModelId(modelId);
    }

    /** @throws IllegalArgumentException unless {@code address} is a {@code host:port} with a port in 1..65535 */
    public static String checkAddress(String address) {
        if (!ADDRESS.matcher(address).matches()) {
            throw new IllegalArgumentException("a source address must be host:port; got '"
                    + Fingerprint.clip(address) + "'");
        }
        int port = Integer.parseInt(address.substring(address.lastIndexOf(':') + 1));
        if (port < 1 || port > 65535) {
            throw new IllegalArgumentException("a source's port must be in 1..65535; got '"
                    + Fingerprint.clip(address) + "'");
        }
        return address;
    }

    /** @throws IllegalArgumentException unless {@code id} is a model id (see {@link #MODEL_ID}, at most 200 chars) */
    public static String checkModelId(String id) {
        if (id.isEmpty() || id.length() > MAX_MODEL_ID || !MODEL_ID.matcher(id).matches() || id.contains("..")) {
            throw new IllegalArgumentException("a model id must be 1.." + MAX_MODEL_ID + " characters of letters,"
                    + " digits and ._:@+- in '/'-separated parts (no '..'); got '" + Fingerprint.clip(id) + "'");
        }
        return id;
    }
}
