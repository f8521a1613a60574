package io.weightloader.backend.local;

import io.weightloader.api.LoadRequest;
import io.weightloader.api.SliceCopy;
import io.weightloader.api.TensorDestination;
import java.util.ArrayList;
import java.util.List;

/** How a load is cut into {@link Piece}s: every tensor's runs (its slice's rows in the file), packed per tensor. */
final class PiecePlan {
    private PiecePlan() {
    }

    /** Cuts every tensor's runs into pieces of at most {@code pieceSize} bytes. */
    static List<Piece> plan(SafetensorsCheckpoint checkpoint, LoadRequest request, int pieceSize) {
        List<Piece> pieces = new ArrayList<>();
        for (TensorDestination d : request.tensors()) {
            if (d.byteSize() == 0) {
                continue;
            }
            SafetensorsCheckpoint.Located src = checkpoint.tensors().get(d.spec().name());
            PieceBuilder b = new PieceBuilder(d, src, pieceSize, pieces);
            for (SliceCopy c : SliceCopy.plan(d.spec(), null, d.slice())) {
                for (long i = 0; i < c.count(); i++) {
                    b.add(src.fileOffset() + c.srcOffset() + i * c.srcStride(), c.dstOffset() + i * c.dstStride(),
                            c.length());
                }
            }
            b.flush();
        }
        return pieces;
    }

    /** Packs consecutive runs of one tensor into pieces. */
    private static final class PieceBuilder {
        private final TensorDestination dest;
        private final SafetensorsCheckpoint.Located src;
        private final int pieceSize;
        private final List<Piece> out;
        private final List<long[]> runs = new ArrayList<>();
        private long start = -1;
        private long length;

        PieceBuilder(TensorDestination dest, SafetensorsCheckpoint.Located src, int pieceSize, List<Piece> out) {
            this.dest = dest;
            this.src = src;
            this.pieceSize = pieceSize;
            this.out = out;
        }

        void add(long position, long dstOffset, long bytes) {
            long done = 0;
            while (done < bytes) {
                if (start >= 0 && (length == pieceSize || start + length != dstOffset + done)) {
                    flush();
                }
                if (start < 0) {
                    start = dstOffset + done;
                }
                long n = Math.min(bytes - done, pieceSize - length);
                runs.add(new long[]{position + done, n});
                length += n;
                done += n;
            }
        }

        void flush() {
            if (start < 0) {
                return;
            }
            long[] positions = new long[runs.size()];
            int[] lengths = new int[runs.size()];
            for (int i = 0; i < runs.size(); i++) {
                positions[i] = runs.get(i)[0];
                lengths[i] = (int) runs.get(i)[1];
            }
            out.add(new Piece(dest, src, start, positions, lengths, (int) length));
            runs.clear();
            start = -1;
            length = 0;
        }
    }
}
