package io.weightloader.memory;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.weightloader.api.DType;
import io.weightloader.api.Device;
import io.weightloader.api.TensorSpec;
import io.weightloader.memory.cuda.VirtualDeviceArena;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * What the memory saver's arenas promise without a GPU: the GPU arena's size rounding to the allocation granularity,
 * the refusals, and the host arena's release contract (a host copy, releasable bytes). The GPU arena itself is
 * exercised on a GPU by {@code GpuMemorySaverTest} (api/host, run by examples/scripts/device-tests.sh).
 */
class ReleasableArenaTest {
    private static final long TWO_MIB = 2L << 20;

    @Test
    void aGpuReservationIsRoundedUpToWholeGranules() {
        assertThat(VirtualDeviceArena.roundUp(0, TWO_MIB)).isZero();
        assertThat(VirtualDeviceArena.roundUp(1, TWO_MIB)).isEqualTo(TWO_MIB);
        assertThat(VirtualDeviceArena.roundUp(TWO_MIB, TWO_MIB)).isEqualTo(TWO_MIB);
        assertThat(VirtualDeviceArena.roundUp(TWO_MIB + 1, TWO_MIB)).isEqualTo(2 * TWO_MIB);
        assertThat(VirtualDeviceArena.roundUp((5L << 30) + 7, TWO_MIB)).isEqualTo((5L << 30) + TWO_MIB);
        assertThat(VirtualDeviceArena.roundUp(10, 3)).as("any granularity, not only powers of two").isEqualTo(12);
        assertThatThrownBy(() -> VirtualDeviceArena.roundUp(-1, TWO_MIB)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> VirtualDeviceArena.roundUp(1, 0)).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> VirtualDeviceArena.roundUp(Long.MAX_VALUE - 1, TWO_MIB))
                .isInstanceOf(ArithmeticException.class);
    }

    @Test
    void aGpuArenaIsRefusedForHostMemoryBeforeCudaIsTouched() {
        assertThatThrownBy(() -> VirtualDeviceArena.allocate(Device.CPU, 1024))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("not a CUDA device: cpu");
    }

    @Test
    void anArenaNotAllocatedReleasableRefusesToReleaseNamingHowItWasAllocated() {
        try (TensorArena arena = TensorArena.allocate(Device.CPU, List.of(TensorSpec.of("w", DType.U8, 4096)))) {
            assertThat(arena.releasable()).isFalse();
            assertThat(arena.releasableBytes()).isZero();
            assertThatThrownBy(arena::releasePages).isInstanceOf(IllegalStateException.class)
                    .hasMessageContaining("cpu").hasMessageContaining("posix_memalign")
                    .hasMessageContaining("TensorArena.allocate(device, specs, true)");
        }
    }

    @Test
    void aReleasableHostArenaReadsZerosAfterReleaseAndRefillsFromItsHostCopyInPlace() {
        try (TensorArena arena = TensorArena.allocate(Device.CPU, List.of(TensorSpec.of("w", DType.U8, 10_000)), true)) {
            assertThat(arena.releasable()).isTrue();
            assertThat(arena.releasableBytes()).isGreaterThanOrEqualTo(10_000);
            long address = arena.region().address();
            byte[] want = new byte[10_000];
            for (int i = 0; i < want.length; i++) {
                want[i] = (byte) (i * 31 + 7);
            }
            arena.destinations().get(0).region().byteBuffer(0, want.length).put(want);
            try (HostMemory copy = arena.copyToHost()) {
                arena.releasePages();
                assertThat(arena.released()).as("host memory stays mapped: it reads zeros").isFalse();
                byte[] got = new byte[want.length];
                arena.destinations().get(0).region().byteBuffer(0, got.length).get(got);
                assertThat(got).containsOnly(0);
                arena.populate();
                arena.copyFrom(copy);
                arena.destinations().get(0).region().byteBuffer(0, got.length).get(got);
                assertThat(got).isEqualTo(want);
                assertThat(arena.region().address()).isEqualTo(address);
                try (HostMemory small = HostMemory.allocate(10)) {
                    assertThatThrownBy(() -> arena.copyFrom(small)).isInstanceOf(IllegalArgumentException.class);
                }
            }
        }
    }
}
