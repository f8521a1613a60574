package io.weightloader.backend.te.mooncake;

import io.weightloader.backend.te.engine.OneSidedEngine.Batch;
import io.weightloader.backend.te.engine.OneSidedEngine.OpState;
import io.weightloader.backend.te.engine.OneSidedEngine.OpStatus;
import java.util.Objects;

/** Ops of several runs over a batch of one task per run: an op is final when all its runs are. */
final class RunsBatch implements Batch {
    private final Batch tasks;
    private final int[] first;

    /** @param first op i's tasks are {@code first[i]} to {@code first[i + 1]} (exclusive) of {@code tasks} */
    RunsBatch(Batch tasks, int[] first) {
        this.tasks = tasks;
        this.first = first;
    }

    @Override
    public int size() {
        return first.length - 1;
    }

    @Override
    public OpStatus status(int index) {
        Objects.checkIndex(index, size());
        OpStatus failed = null;
        for (int t = first[index]; t < first[index + 1]; t++) {
            OpStatus s = tasks.status(t);
            if (!s.isFinal()) {
                return OpStatus.PENDING;
            }
            if (s.state() == OpState.FAILED && failed == null) {
                failed = s;
            }
        }
        return failed != null ? failed : OpStatus.COMPLETED;
    }

    @Override
    public boolean release() {
        return tasks.release();
    }
}
