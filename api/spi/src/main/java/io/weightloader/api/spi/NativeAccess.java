package io.weightloader.api.spi;

import java.nio.ByteBuffer;
import java.util.ServiceLoader;

/**
 * Views of raw host memory, which the SPI needs for {@link io.weightloader.api.MemoryRegion#byteBuffer} but cannot
 * make without native code: {@code weightloader-memory} provides it (through JNA), found with {@link ServiceLoader}
 * so that the SPI itself depends on Typesafe Config and SLF4J only. Regions that own a buffer may override
 * {@code byteBuffer} and never need this.
 */
public interface NativeAccess {

    /** A direct buffer over {@code length} bytes of host memory at {@code address}. */
    ByteBuffer view(long address, int length);

    /**
     * The installed implementation.
     *
     * @throws UnsupportedOperationException naming the artifact to add when none is installed
     */
    static NativeAccess get() {
        return Holder.INSTANCE;
    }

    /** Loaded once, on first use. */
    final class Holder {
        static final NativeAccess INSTANCE = ServiceLoader.load(NativeAccess.class, NativeAccess.class.getClassLoader())
                .findFirst().orElse((address, length) -> {
                    throw new UnsupportedOperationException("views of raw host memory need io.weightloader:"
                            + "weightloader-memory on the class path");
                });

        private Holder() {
        }
    }
}
