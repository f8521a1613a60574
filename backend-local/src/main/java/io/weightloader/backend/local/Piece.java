package io.weightloader.backend.local;

import io.weightloader.api.TensorDestination;

/**
 * One task of a load: {@code length} bytes contiguous in the destination from {@code dstOffset}, read from the file at
 * {@code positions[i]} ({@code lengths[i]} bytes each, in order). A whole tensor or a dim-0 slice is one run; a slice
 * of an inner dimension is many, the rows of the slice, gathered so the destination holds it in C order.
 */
record Piece(TensorDestination dest, SafetensorsCheckpoint.Located src, long dstOffset, long[] positions,
             int[] lengths, int length) {
}
