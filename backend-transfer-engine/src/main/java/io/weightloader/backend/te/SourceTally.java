package io.weightloader.backend.te;

import io.weightloader.api.SourceReport;
import java.util.ArrayList;
import java.util.List;

/** What one source did for a load from several sources: bytes kept and read, segments, and why it was dropped. */
final class SourceTally {
    final String source;
    /** As messages name it: {@code the root seed h:p}, {@code relay h:p}. */
    final String name;
    private long kept;
    private long read;
    private int segments;
    private String failure;
    private double failedAfter;
    private double quiet;
    private final List<Integer> moved = new ArrayList<>();
    private String wrong;
    private boolean wrongHandled;
    private int wrongUnits;
    private double endedAfter;

    SourceTally(String source, String name) {
        this.source = source;
        this.name = name;
    }

    boolean isRoot() {
        return source.equals(SourceList.ROOT);
    }

    synchronized void read(long bytes) {
        read += bytes;
    }

    synchronized void kept(long bytes) {
        kept += bytes;
    }

    synchronized void segmentDone() {
        segments++;
    }

    synchronized void moved(int segment) {
        if (!moved.contains(segment)) {
            moved.add(segment);
        }
    }

    /** The source was dropped from the load; only the first reason is kept. */
    synchronized void dropped(String why, double afterSeconds, double quietSeconds) {
        if (failure == null) {
            failure = why;
            failedAfter = afterSeconds;
            quiet = quietSeconds;
        }
    }

    synchronized boolean wasDropped() {
        return failure != null;
    }

    /**
     * A unit it sent did not match the root's checksum: its reader stops, the source is reported and excluded.
     *
     * @return whether this is the first (later ones are counted only)
     */
    synchronized boolean wrong(String reason, double afterSeconds) {
        wrongUnits++;
        if (wrong != null) {
            return false;
        }
        wrong = reason;
        dropped("sent wrong bytes: " + reason, afterSeconds, 0);
        return true;
    }

    /** Units it sent that did not match. */
    synchronized int wrongUnits() {
        return wrongUnits;
    }

    /** Why it sent wrong bytes, or null. */
    synchronized String wrongBytes() {
        return wrong;
    }

    /** The wrong bytes not yet reported to the directory (once), or null. */
    synchronized String takeUnreportedWrong() {
        if (wrong == null || wrongHandled) {
            return null;
        }
        wrongHandled = true;
        return wrong;
    }

    /** Its reader ended (nothing left to take, or dropped) at this many seconds into the load. */
    synchronized void ended(double afterSeconds) {
        endedAfter = afterSeconds;
    }

    synchronized double endedAfter() {
        return endedAfter;
    }

    synchronized long kept() {
        return kept;
    }

    synchronized SourceReport report() {
        return new SourceReport(source, kept, read, segments, failure, failedAfter, quiet, moved);
    }
}
