package io.weightloader.memory;

import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

class HostMemoryTest {
    private long liveBefore;

    @BeforeEach
    void before() {
        liveBefore = HostMemory.liveBytes();
    }

    @AfterEach
    void noLeaks() {
        assertThat(HostMemory.liveBytes()).as("host memory leaked by the test").isEqualTo(liveBefore);
    }

    @Test
    void allocationsArePageAlignedAndCloseTwiceSafely() {
        HostMemory m = HostMemory.allocate(10_000);
        assertThat(m.address() % 4096).isZero();
        assertThat(m.length()).isEqualTo(10_000);
        m.close();
        m.close();
        assertThat(m.isClosed()).isTrue();
        assertThatThrownBy(m::address).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void holdsMoreThanTwoGibibytes() {
        long size = (3L << 30) + 123;
        try (HostMemory m = HostMemory.allocate(size)) {
            ByteBuffer tail = m.byteBuffer(size - 8, 8);
            tail.putLong(0, 0x1122334455667788L);
            assertThat(m.slice(size - 8, 8).byteBuffer(0, 8).getLong(0)).isEqualTo(0x1122334455667788L);
            assertThat(m.slice(size - 8, 8).address()).isEqualTo(m.address() + size - 8);
        }
    }

    @Test
    void viewsAreBoundsChecked() {
        try (HostMemory m = HostMemory.allocate(64)) {
            assertThatThrownBy(() -> m.byteBuffer(60, 8)).isInstanceOf(IndexOutOfBoundsException.class);
            assertThatThrownBy(() -> m.slice(0, 65)).isInstanceOf(IndexOutOfBoundsException.class);
        }
    }

    @Test
    void deviceRegionsHaveNoHostView() {
        MemoryRegion r = MemoryRegion.of(0x1000, 16, Device.cuda(1));
        assertThat(r.device().toString()).isEqualTo("cuda:1");
        assertThatThrownBy(() -> r.byteBuffer(0, 4)).hasMessageContaining("cuda:1");
    }

    @Test
    void devicesParse() {
        assertThat(Device.parse("cuda:3")).isEqualTo(Device.cuda(3));
        assertThat(Device.parse("cpu")).isEqualTo(Device.CPU);
        assertThatThrownBy(() -> Device.parse("cuda")).hasMessageContaining("cuda:N");
    }
}
