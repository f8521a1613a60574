package io.weightloader.backend.te.engine;

import io.weightloader.api.Device;
import io.weightloader.api.MemoryRegion;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Merges tensors' byte ranges into the fewest non-overlapping regions per device (overlapping or touching
 * ranges join), so registration covers every tensor however the host allocated it, engines that reject
 * overlaps (Mooncake) accept it, and thousands of tensors become a handful of registrations.
 */
public final class RegionMerger {
    private RegionMerger() {
    }

    public static List<MemoryRegion> merge(List<? extends MemoryRegion> ranges) {
        return merge(ranges, 0);
    }

    /**
     * As {@link #merge(List)}, also bridging gaps of at most {@code maxGap} bytes between ranges of one device,
     * such as the alignment padding between tensors of one GPU arena. Use 0 for host memory, whose gaps may hold
     * other data.
     */
    public static List<MemoryRegion> merge(List<? extends MemoryRegion> ranges, long maxGap) {
        List<MemoryRegion> sorted = new ArrayList<>();
        for (MemoryRegion r : ranges) {
            if (r.length() > 0) {
                sorted.add(r);
            }
        }
        sorted.sort(Comparator.comparing((MemoryRegion r) -> r.device().toString())
                .thenComparingLong(MemoryRegion::address));
        List<MemoryRegion> out = new ArrayList<>();
        long start = 0;
        long end = 0;
        Device dev = null;
        for (MemoryRegion r : sorted) {
            long rEnd = r.address() + r.length();
            if (dev != null && dev.equals(r.device()) && Long.compareUnsigned(r.address(), end + maxGap) <= 0) {
                if (Long.compareUnsigned(rEnd, end) > 0) {
                    end = rEnd;
                }
            } else {
                if (dev != null) {
                    out.add(MemoryRegion.of(start, end - start, dev));
                }
                dev = r.device();
                start = r.address();
                end = rEnd;
            }
        }
        if (dev != null) {
            out.add(MemoryRegion.of(start, end - start, dev));
        }
        return out;
    }
}
