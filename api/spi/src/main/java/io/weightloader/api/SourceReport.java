package io.weightloader.api;

import java.util.List;
import java.util.Objects;

/**
 * One source of a load that read from several at once ({@link LoadReport#sources()}): what it delivered, and, when it
 * stopped serving the load before the end, why and what was moved from it to the others.
 *
 * @param source        the source as its directory names it ({@code root}, or a relay's {@code host:port})
 * @param bytes         bytes it delivered that the load kept (arrived whole and, where checked, matched)
 * @param bytesRead     every byte that arrived from it; beyond {@code bytes}: the part of a block it had not finished
 *                      when it was dropped, and blocks that did not match (both read again from another source)
 * @param segments      segments it read to the end
 * @param failure       why it was dropped before the load ended ({@code stalled: ...}, {@code failed: ...},
 *                      {@code sent wrong bytes: ...}), or null
 * @param failedAfter   seconds from the start of the load to when it was dropped, or 0
 * @param quietSeconds  for a stalled source: seconds without any of its reads completing when it was dropped; else 0
 * @param moved         the segments (numbered from 0 in the load's plan) whose unfinished part was moved from it to
 *                      other sources
 */
public record SourceReport(String source, long bytes, long bytesRead, int segments, String failure, double failedAfter,
                           double quietSeconds, List<Integer> moved) {
    public SourceReport {
        Objects.requireNonNull(source, "source is null");
        moved = moved == null ? List.of() : List.copyOf(moved);
    }
}
