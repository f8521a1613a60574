package io.weightloader.backend.te.builtin;

import io.weightloader.api.MemoryRegion;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/** Non-overlapping registered ranges, looked up by binary search; the only memory the seed ever serves. */
final class RegisteredRegions {
    /** Starts and ends swapped in together, so a lookup never sees half an update. */
    private record Table(long[] starts, long[] ends) {
    }

    private volatile Table table = new Table(new long[0], new long[0]);

    synchronized void add(List<MemoryRegion> regions) {
        List<long[]> all = new ArrayList<>();
        Table t = table;
        for (int i = 0; i < t.starts().length; i++) {
            all.add(new long[] {t.starts()[i], t.ends()[i]});
        }
        for (MemoryRegion r : regions) {
            if (!r.device().isHost()) {
                throw new IllegalArgumentException("the built-in engine serves host memory only, not " + r.device());
            }
            if (r.length() > 0) {
                all.add(new long[] {r.address(), Math.addExact(r.address(), r.length())});
            }
        }
        all.sort(Comparator.comparingLong(a -> a[0]));
        for (int i = 1; i < all.size(); i++) {
            if (all.get(i)[0] < all.get(i - 1)[1]) {
                throw new IllegalArgumentException("registered regions overlap at 0x" + Long.toHexString(all.get(i)[0])
                        + "; merge them first");
            }
        }
        long[] s = new long[all.size()];
        long[] e = new long[all.size()];
        for (int i = 0; i < s.length; i++) {
            s[i] = all.get(i)[0];
            e[i] = all.get(i)[1];
        }
        table = new Table(s, e);
    }

    synchronized void clear() {
        table = new Table(new long[0], new long[0]);
    }

    /** True when {@code [address, address + length)} lies inside one registered region. */
    boolean contains(long address, long length) {
        if (length <= 0 || address <= 0) {
            return false;
        }
        long end;
        try {
            end = Math.addExact(address, length);
        } catch (ArithmeticException e) {
            return false;
        }
        Table t = table;
        long[] s = t.starts();
        long[] e = t.ends();
        int i = Arrays.binarySearch(s, address);
        if (i < 0) {
            i = -i - 2;
        }
        return i >= 0 && i < s.length && address >= s[i] && end <= e[i];
    }

    int count() {
        return table.starts().length;
    }
}
