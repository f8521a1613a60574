package io.weightloader.backend.te;

import static org.assertj.core.api.Assertions.assertThat;

import com.typesafe.config.ConfigFactory;
import io.weightloader.api.Device;
import io.weightloader.api.LoadReport;
import io.weightloader.api.LoadRequest;
import io.weightloader.api.TensorReport;
import io.weightloader.api.TensorSpec;
import io.weightloader.host.WeightLoader;
import io.weightloader.memory.TensorArena;
import io.weightloader.testing.Gpus;
import io.weightloader.testing.SeedProcess;
import io.weightloader.testing.TestWeights;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Seed JVM registers GPU 0 memory with Mooncake's nvlink_intra transport (CUDA IPC); this JVM reads it into GPU 1.
 * Needs two GPUs and a CUDA build of Mooncake in WEIGHTLOADER_MOONCAKE_LIB.
 */
class MooncakeGpuTwoProcessTest {
    @Test
    void aClientOnGpu1ReadsTheSeedsGpu0MemoryOverNvlink() throws Exception {
        Gpus.require("MooncakeGpuTwoProcessTest", 2);
        Gpus.requireMooncake("MooncakeGpuTwoProcessTest");
        List<TensorSpec> specs = TestWeights.specs(8, 16 << 20);
        String te = "weight-loader.backends.transfer_engine { engine = mooncake, protocol = nvlink_intra }\n";
        try (SeedProcess seed = new SeedProcess(8, 16 << 20, 9, "tok", "cuda:0",
                te + "weight-loader.remote-instance.start-seed-via-transfer-engine = true");
             WeightLoader loader = WeightLoader.open(ConfigFactory.parseString(te + """
                     weight-loader { load-format = remote_instance, device = "cuda:1", checksum = sha256
                       remote-instance { seed-instance-ip = "127.0.0.1", token = tok } }
                     weight-loader.remote-instance.seed-instance-service-port = """ + seed.port));
             TensorArena arena = TensorArena.allocate(Device.cuda(1), specs)) {
            LoadReport report = loader.load(LoadRequest.of(arena.destinations()));
            assertThat(report.engine()).isEqualTo("mooncake-nvlink_intra");
            for (TensorReport t : report.tensors()) {
                TensorSpec s = specs.stream().filter(x -> x.name().equals(t.name())).findFirst().orElseThrow();
                assertThat(t.sha256()).as(t.name()).isEqualTo(TestWeights.sha256(s, 9));
            }
            System.err.println("mooncake gpu client: " + report.summary());
        }
    }
}
