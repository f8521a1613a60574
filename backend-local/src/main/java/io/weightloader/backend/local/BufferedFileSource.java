package io.weightloader.backend.local;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** Reads through the page cache: {@code pread} straight into the destination ({@code io = buffered}). */
final class BufferedFileSource implements FileSource {
    private final Path path;
    private final FileChannel channel;

    BufferedFileSource(Path path) throws IOException {
        this.path = path;
        this.channel = FileChannel.open(path, StandardOpenOption.READ);
    }

    @Override
    public void read(long position, ByteBuffer dst, String tensor) throws IOException {
        SafetensorsFile.readFully(channel, dst, position, path, tensor);
    }

    @Override
    public Path path() {
        return path;
    }

    @Override
    public boolean direct() {
        return false;
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }
}
