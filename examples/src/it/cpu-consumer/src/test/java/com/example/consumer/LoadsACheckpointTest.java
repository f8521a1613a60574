package com.example.consumer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorSpec;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import java.io.File;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What a CPU-only host team writes: depend on the BOM, the SPI and the local backend; load a checkpoint. */
class LoadsACheckpointTest {
    @TempDir
    Path dir;

    @Test
    void theClassPathHoldsNoCudaJars() {
        List<String> jars = Arrays.asList(System.getProperty("java.class.path").split(File.pathSeparator));
        assertTrue(jars.stream().noneMatch(j -> j.contains("cuda") || j.contains("javacpp")),
                "a CPU-only consumer got CUDA jars: " + jars);
        assertTrue(jars.stream().anyMatch(j -> j.contains("weightloader-api")), "no weightloader-api: " + jars);
    }

    @Test
    void aSafetensorsFileLoadsByteExact() throws Exception {
        byte[] data = new byte[4 * 6];
        for (int i = 0; i < data.length; i++) {
            data[i] = (byte) (i * 7 + 3);
        }
        byte[] header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}"
                .getBytes(StandardCharsets.UTF_8);
        ByteBuffer file = ByteBuffer.allocate(8 + header.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        file.putLong(header.length).put(header).put(data);
        Path model = dir.resolve("model.safetensors");
        Files.write(model, file.array());

        try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseMap(Map.of(
                "weight-loader.model-path", model.toString(), "weight-loader.checksum", "sha256")));
             TensorArena arena = TensorArena.allocate(Device.CPU, loader.available())) {
            List<TensorSpec> specs = loader.available();
            assertEquals(List.of(new TensorSpec("w", io.weightloader.api.DType.F32, List.of(2L, 3L))), specs);
            LoadReport report = loader.load(LoadRequest.of(arena.destinations()));
            String expected = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(data));
            assertEquals(expected, report.tensors().get(0).sha256());
            ByteBuffer loaded = arena.destinations().get(0).region().byteBuffer(0, data.length);
            byte[] got = new byte[data.length];
            loaded.get(got);
            assertTrue(Arrays.equals(data, got), "loaded bytes differ");
        }
    }
}
