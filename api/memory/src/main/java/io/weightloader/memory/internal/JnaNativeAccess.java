package io.weightloader.memory.internal;

import com.sun.jna.Pointer;
import io.weightloader.api.spi.NativeAccess;
import java.nio.ByteBuffer;

/** {@link NativeAccess} through JNA: a direct buffer over raw host memory. */
public final class JnaNativeAccess implements NativeAccess {
    @Override
    public ByteBuffer view(long address, int length) {
        return new Pointer(address).getByteBuffer(0, length);
    }
}
