package io.weightloader.memory;

import io.weightloader.api.WeightLoaderException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletionService;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorCompletionService;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * The one way weightloader runs tasks at once and waits for them all: on a pool of its own daemon threads (on the
 * caller's thread when there is one thread or one task), results in task order. A failure stops the tasks that have not
 * started and interrupts the running ones it makes moot; a run returns or throws only once none of its tasks runs any
 * more (at most 10 minutes after a failure), so none still touches memory the caller frees after a failure.
 *
 * <p>The failure thrown is a task's own {@link RuntimeException}, or a {@link WeightLoaderException} saying
 * {@code failed + ": " + cause} for anything else it threw, or {@code interrupted} when the waiting thread was
 * interrupted (its interrupt status is kept).
 */
public final class Parallel {
    /** Longest a failed or interrupted run waits for its tasks to end. */
    private static final long AWAIT_MINUTES = 10;

    private final String threadName;
    private final int threads;
    private final String failed;
    private final String interrupted;
    private final boolean firstToFail;

    private Parallel(String threadName, int threads, String failed, String interrupted, boolean firstToFail) {
        this.threadName = threadName;
        this.threads = threads;
        this.failed = failed;
        this.interrupted = interrupted;
        this.firstToFail = firstToFail;
    }

    /**
     * Runs on at most {@code threads} threads named {@code threadName-N}. By default the failure thrown is the first
     * in task order: the tasks before the failed one are waited for (one of them may fail too, and is then the one
     * thrown), those after it are stopped.
     *
     * @param failed      what failed, for a failure that is not a RuntimeException ({@code failed + ": " + cause})
     * @param interrupted the message when the waiting thread is interrupted
     */
    public static Parallel of(String threadName, int threads, String failed, String interrupted) {
        return new Parallel(threadName, threads, failed, interrupted, false);
    }

    /**
     * The first failure to happen is the one thrown, and stops every other task at once: for tasks that may wait for
     * each other (the ranks of one load), where a task before the failed one might never end.
     */
    public Parallel firstToFail() {
        return new Parallel(threadName, threads, failed, interrupted, true);
    }

    /** Runs every task; see {@link Parallel}. */
    public void run(List<? extends Runnable> tasks) {
        List<Callable<Void>> calls = new ArrayList<>(tasks.size());
        for (Runnable r : tasks) {
            calls.add(() -> {
                r.run();
                return null;
            });
        }
        call(calls);
    }

    /** Calls every task and returns their results in task order; see {@link Parallel}. */
    public <T> List<T> call(List<? extends Callable<T>> tasks) {
        return call(tasks, t -> { });
    }

    /**
     * As {@link #call(List)}; when the run fails, the results of the tasks that finished anyway are handed to
     * {@code discard} (to free what they hold) before the failure is thrown.
     */
    public <T> List<T> call(List<? extends Callable<T>> tasks, Consumer<? super T> discard) {
        int n = tasks.size();
        List<T> out = new ArrayList<>(Collections.nCopies(n, null));
        boolean[] ok = new boolean[n];
        if (Math.min(threads, n) <= 1) {
            try {
                for (int i = 0; i < n; i++) {
                    out.set(i, tasks.get(i).call());
                    ok[i] = true;
                }
                return out;
            } catch (RuntimeException | Error e) {
                discard(out, ok, discard);
                throw e;
            } catch (Exception e) {
                discard(out, ok, discard);
                throw new WeightLoaderException(failed + ": " + e, e);
            }
        }
        ExecutorService pool = Executors.newFixedThreadPool(Math.min(threads, n), Threads.daemon(threadName));
        CompletionService<T> done = new ExecutorCompletionService<>(pool);
        List<Future<T>> futures = new ArrayList<>(n);
        Map<Future<T>, Integer> index = new IdentityHashMap<>();
        Throwable failure = null;
        int failedAt = n;
        InterruptedException interruption = null;
        try {
            for (int i = 0; i < n; i++) {
                Future<T> f = done.submit(tasks.get(i));
                futures.add(f);
                index.put(f, i);
            }
            boolean[] ended = new boolean[n];
            int prefix = 0; // tasks [0, prefix) have ended
            while (failure == null ? prefix < n : !firstToFail && prefix < failedAt) {
                Future<T> f = done.take();
                int i = index.get(f);
                ended[i] = true;
                try {
                    out.set(i, f.get());
                    ok[i] = true;
                } catch (ExecutionException e) {
                    if (i < failedAt) {
                        failure = e.getCause();
                        failedAt = i;
                        for (int k = firstToFail ? 0 : i + 1; k < n; k++) {
                            futures.get(k).cancel(true);
                        }
                    }
                } catch (CancellationException e) {
                    // stopped after a failure
                }
                while (prefix < n && ended[prefix]) {
                    prefix++;
                }
            }
        } catch (InterruptedException e) {
            interruption = e;
        } catch (RuntimeException e) { // a pool that takes no more tasks
            failure = e;
        } finally {
            futures.forEach(f -> f.cancel(true)); // nothing left to cancel after a good run
            pool.shutdown();
            try {
                if (!pool.awaitTermination(AWAIT_MINUTES, TimeUnit.MINUTES)) {
                    pool.shutdownNow();
                }
            } catch (InterruptedException e) {
                pool.shutdownNow();
                interruption = interruption == null ? e : interruption;
            }
        }
        if (interruption != null) {
            discard(out, ok, discard);
            Thread.currentThread().interrupt();
            throw new WeightLoaderException(interrupted, interruption);
        }
        if (failure != null) {
            discard(out, ok, discard);
            if (failure instanceof RuntimeException re) {
                throw re;
            }
            throw new WeightLoaderException(failed + ": " + failure, failure);
        }
        return out;
    }

    private static <T> void discard(List<T> out, boolean[] ok, Consumer<? super T> discard) {
        for (int i = 0; i < ok.length; i++) {
            if (ok[i] && out.get(i) != null) {
                discard.accept(out.get(i));
            }
        }
    }
}
