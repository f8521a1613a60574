package io.weightloader.api.spi;

import io.weightloader.api.Device;
import java.util.EnumSet;
import java.util.Objects;
import java.util.Set;

/**
 * What a backend offers, known without loading any native code. Plugins build it with {@link #builder()}, so that a
 * capability added later does not break their source (the constructors are kept for plugins written before).
 *
 * @param readsFromSeed  true when the weights come from a running seed instance rather than from disk
 * @param disturbsSeed   true when loading makes the seed's GPU do work (kernels, its scheduler)
 * @param devices        destination device kinds the backend can fill
 * @param memorySaver    true when the backend works with {@code weight-loader.enable-memory-saver} (SGLang's memory
 *                       saver: the host's allocator may release and remap weight memory): it registers nothing that
 *                       such a remap would leave pointing at freed memory. A backend that registers memory with an
 *                       engine (transfer_engine) declares false, and the setting is refused with it at start-up
 */
public record BackendCapabilities(boolean readsFromSeed, boolean disturbsSeed, Set<Device.Kind> devices,
                                  boolean memorySaver) {
    public BackendCapabilities {
        Objects.requireNonNull(devices, "devices is null");
        devices = Set.copyOf(devices.isEmpty() ? EnumSet.noneOf(Device.Kind.class) : EnumSet.copyOf(devices));
    }

    /** As before {@code memorySaver} existed: a backend that registers no memory works with the memory saver. */
    public BackendCapabilities(boolean readsFromSeed, boolean disturbsSeed, Set<Device.Kind> devices) {
        this(readsFromSeed, disturbsSeed, devices, true);
    }

    public boolean supports(Device device) {
        return devices.contains(device.kind());
    }

    /** A builder: reads from disk, disturbs no seed, fills no device, works with the memory saver, until told. */
    public static Builder builder() {
        return new Builder();
    }

    /** Builds {@link BackendCapabilities}; every capability has a default, so new ones never break a plugin. */
    public static final class Builder {
        private boolean readsFromSeed;
        private boolean disturbsSeed;
        private final Set<Device.Kind> devices = EnumSet.noneOf(Device.Kind.class);
        private boolean memorySaver = true;

        private Builder() {
        }

        public Builder readsFromSeed(boolean v) {
            readsFromSeed = v;
            return this;
        }

        public Builder disturbsSeed(boolean v) {
            disturbsSeed = v;
            return this;
        }

        /** Adds destination device kinds the backend can fill. */
        public Builder devices(Device.Kind... kinds) {
            devices.addAll(Set.of(kinds));
            return this;
        }

        public Builder memorySaver(boolean v) {
            memorySaver = v;
            return this;
        }

        public BackendCapabilities build() {
            return new BackendCapabilities(readsFromSeed, disturbsSeed, devices, memorySaver);
        }
    }
}
