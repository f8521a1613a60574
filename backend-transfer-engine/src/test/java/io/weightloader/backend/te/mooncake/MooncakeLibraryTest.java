package io.weightloader.backend.te.mooncake;

import io.weightloader.memory.NativeLibraries;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.sun.jna.Native;
import io.weightloader.api.WeightLoaderException;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Needs no Mooncake: struct layout, error messages, NIC matrix. */
class MooncakeLibraryTest {

    @Test
    void structLayoutsMatchTheCHeader() {
        assertThat(new MooncakeC.TransferRequest().size()).isEqualTo(40);
        assertThat(Native.getNativeSize(MooncakeC.TransferRequest.class, new MooncakeC.TransferRequest())).isEqualTo(40);
        assertThat(new MooncakeC.TransferStatus().size()).isEqualTo(16);
        assertThat(Native.getNativeSize(MooncakeC.TransferStatus.class, new MooncakeC.TransferStatus())).isEqualTo(16);
        MooncakeC.TransferRequest r = new MooncakeC.TransferRequest();
        r.opcode = 1;
        r.source = new com.sun.jna.Pointer(0x1111L);
        r.target_id = 3;
        r.target_offset = 0x2222L;
        r.length = 0x3333L;
        r.write();
        com.sun.jna.Pointer p = r.getPointer();
        assertThat(p.getInt(0)).isEqualTo(1);
        assertThat(p.getLong(8)).isEqualTo(0x1111L);
        assertThat(p.getInt(16)).isEqualTo(3);
        assertThat(p.getLong(24)).isEqualTo(0x2222L);
        assertThat(p.getLong(32)).isEqualTo(0x3333L);
        MooncakeC.TransferStatus st = new MooncakeC.TransferStatus();
        st.getPointer().setInt(0, 4);
        st.getPointer().setLong(8, 99L);
        st.read();
        assertThat(st.status).isEqualTo(4);
        assertThat(st.transferred_bytes).isEqualTo(99L);
    }

    @Test
    void missingExplicitLibraryNamesFileKeyAndEnvVar() {
        assertThatThrownBy(() -> MooncakeLibrary.load("/nonexistent/dir/libtransfer_engine.so", Map.of()))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining("libtransfer_engine.so")
                .hasMessageContaining("/nonexistent/dir/libtransfer_engine.so")
                .hasMessageContaining(MooncakeLibrary.CONFIG_KEY)
                .hasMessageContaining("WEIGHTLOADER_MOONCAKE_LIB");
    }

    @Test
    void missingLibraryFromEnvVarSaysSo() {
        assertThatThrownBy(() -> MooncakeLibrary.load(null,
                Map.of(MooncakeLibrary.ENV_VAR, "/nonexistent/env/libtransfer_engine.so")))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining("/nonexistent/env/libtransfer_engine.so")
                .hasMessageContaining("from environment variable WEIGHTLOADER_MOONCAKE_LIB");
    }

    @Test
    void aFileThatIsNotALibraryGivesTheClearErrorNotAnUnsatisfiedLinkError() throws Exception {
        java.nio.file.Path bogus = java.nio.file.Files.createTempFile("libtransfer_engine", ".so");
        try {
            assertThatThrownBy(() -> MooncakeLibrary.load(bogus.toString(), Map.of()))
                    .isInstanceOf(WeightLoaderException.class)
                    .hasMessageContaining("libtransfer_engine.so")
                    .hasMessageContaining(bogus.toString())
                    .hasMessageContaining("WEIGHTLOADER_MOONCAKE_LIB");
        } finally {
            java.nio.file.Files.delete(bogus);
        }
    }

    /**
     * A library whose dependency is missing, as a CUDA build of Mooncake is on a machine without the NVIDIA driver:
     * built here with gcc against a stand-in libcuda.so.1 that is then removed, so the dynamic linker's own error
     * (dlerror) is what the message is made from.
     */
    @Test
    void aMissingDependencyIsNamedFromTheLinkersOwnWordsWithWhatToDo(@org.junit.jupiter.api.io.TempDir
                                                                     java.nio.file.Path dir) throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(run(dir, "gcc", "--version") == 0,
                "gcc is not installed: cannot build the test library");
        java.nio.file.Path stub = dir.resolve("stub");
        java.nio.file.Files.createDirectories(stub);
        java.nio.file.Files.writeString(dir.resolve("cuda.c"), "int cuInit(unsigned f) { return (int) f; }\n");
        java.nio.file.Files.writeString(dir.resolve("te.c"), "extern int cuInit(unsigned);\n"
                + "void *createTransferEngine(void) { cuInit(0); return 0; }\nint submitTransfer(void) { return 0; }\n");
        assertThat(run(dir, "gcc", "-shared", "-fPIC", "-o", "stub/libcuda.so.1", "-Wl,-soname,libcuda.so.1", "cuda.c"))
                .isZero();
        assertThat(run(dir, "gcc", "-shared", "-fPIC", "-o", "libtransfer_engine.so", "te.c", "stub/libcuda.so.1"))
                .isZero();
        java.nio.file.Files.delete(stub.resolve("libcuda.so.1"));
        String lib = dir.resolve("libtransfer_engine.so").toString();
        org.junit.jupiter.api.Assumptions.assumeTrue(
                !NativeLibraries.probe("libcuda.so.1", "test").present(),
                "this machine has a real libcuda.so.1, so the dependency is not missing here");
        assertThatThrownBy(() -> MooncakeLibrary.load(lib, Map.of()))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining(lib)
                .hasMessageContaining("its dependency libcuda.so.1 cannot be found")
                .hasMessageContaining("NVIDIA driver").hasMessageContaining("without --cuda")
                .hasMessageNotContaining("libasio");
    }

    private static int run(java.nio.file.Path dir, String... cmd) throws Exception {
        try {
            Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
            return p.waitFor(60, java.util.concurrent.TimeUnit.SECONDS) ? p.exitValue() : -1;
        } catch (java.io.IOException e) {
            return -1;
        }
    }

    @Test
    void aLibraryWithoutTheCApiIsRejectedAtLoad() {
        // libc loads fine but exports no createTransferEngine.
        String libc = "/lib/x86_64-linux-gnu/libc.so.6";
        org.junit.jupiter.api.Assumptions.assumeTrue(new java.io.File(libc).isFile(), "no " + libc);
        assertThatThrownBy(() -> MooncakeLibrary.load(libc, Map.of()))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining("does not export Mooncake's C API");
    }

    @Test
    void checkNamesOperationCodeAndMeaning() {
        assertThat(MooncakeLibrary.check(0, "x")).isZero();
        assertThatThrownBy(() -> MooncakeLibrary.check(-7, "registerLocalMemory"))
                .isInstanceOf(WeightLoaderException.class)
                .hasMessageContaining("registerLocalMemory")
                .hasMessageContaining("-7")
                .hasMessageContaining("overlapping region");
        assertThatThrownBy(() -> MooncakeLibrary.check(4, "freeBatchID"))
                .hasMessageContaining("freeBatchID").hasMessageContaining("code 4").hasMessageContaining("batch busy");
        assertThat(MooncakeLibrary.describe(-1)).contains("invalid argument");
        assertThat(MooncakeLibrary.describe(-200)).contains("metadata error");
        assertThat(MooncakeLibrary.describe(2)).contains("too many requests");
        assertThat(MooncakeLibrary.describe(8)).contains("transport not installed");
    }

    @Test
    void nicListBecomesAPriorityMatrix() {
        assertThat(MooncakeEngine.nicPriorityMatrix(null)).isNull();
        assertThat(MooncakeEngine.nicPriorityMatrix("  ")).isNull();
        assertThat(MooncakeEngine.nicPriorityMatrix("{\"cpu:0\": [[\"a\"], []]}")).isEqualTo("{\"cpu:0\": [[\"a\"], []]}");
        String m = MooncakeEngine.nicPriorityMatrix("mlx5_0, mlx5_1");
        assertThat(m).startsWith("{\"cpu:0\": [[\"mlx5_0\", \"mlx5_1\"], []]")
                .contains("\"cuda:15\": [[\"mlx5_0\", \"mlx5_1\"], []]").endsWith("}");
        assertThatThrownBy(() -> MooncakeEngine.nicPriorityMatrix("a\"b")).isInstanceOf(IllegalArgumentException.class);
    }
}
