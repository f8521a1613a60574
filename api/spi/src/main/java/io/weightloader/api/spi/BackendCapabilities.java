package io.weightloader.api.spi;

import io.weightloader.api.Device;
import java.util.EnumSet;
import java.util.Objects;
import java.util.Set;

/**
 * What a backend offers, known without loading any native code.
 *
 * @param readsFromSeed  true when the weights come from a running seed instance rather than from disk
 * @param disturbsSeed   true when loading makes the seed's GPU do work (kernels, its scheduler)
 * @param devices        destination device kinds the backend can fill
 */
public record BackendCapabilities(boolean readsFromSeed, boolean disturbsSeed, Set<Device.Kind> devices) {
    public BackendCapabilities {
        Objects.requireNonNull(devices, "devices is null");
        devices = Set.copyOf(devices.isEmpty() ? EnumSet.noneOf(Device.Kind.class) : EnumSet.copyOf(devices));
    }

    public boolean supports(Device device) {
        return devices.contains(device.kind());
    }
}
