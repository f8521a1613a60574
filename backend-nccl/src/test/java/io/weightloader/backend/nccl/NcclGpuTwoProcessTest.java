package io.weightloader.backend.nccl;

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

/** Seed JVM on GPU 0, client (this JVM) on GPU 1, over NCCL: the client's bytes equal the seed's. */
class NcclGpuTwoProcessTest {
    @Test
    void aClientOnGpu1ReceivesTheSeedsTensorsFromGpu0() throws Exception {
        Gpus.require("NcclGpuTwoProcessTest", 2);
        List<TensorSpec> specs = TestWeights.specs(8, 16 << 20);
        try (SeedProcess seed = new SeedProcess(8, 16 << 20, 5, "tok", "cuda:0",
                "weight-loader.seed.serve = [nccl]")) {
            for (int client = 0; client < 2; client++) { // one after another, each with its own communicator
                try (WeightLoader loader = WeightLoader.open(ConfigFactory.parseString("""
                        weight-loader { load-format = remote_instance, device = "cuda:1", checksum = sha256
                          remote-instance { seed-instance-ip = "127.0.0.1", backend = nccl, token = tok
                            transfer-timeout = 60s } }
                        weight-loader.remote-instance.seed-instance-service-port = """ + seed.port));
                     TensorArena arena = TensorArena.allocate(Device.cuda(1), specs)) {
                    LoadReport report = loader.load(LoadRequest.of(arena.destinations()));
                    assertThat(report.engine()).isEqualTo("nccl-send-recv");
                    assertThat(report.device()).isEqualTo("cuda:1");
                    for (TensorReport t : report.tensors()) {
                        TensorSpec s = specs.stream().filter(x -> x.name().equals(t.name())).findFirst().orElseThrow();
                        assertThat(t.sha256()).as(t.name()).isEqualTo(TestWeights.sha256(s, 5));
                    }
                    System.err.println("nccl client " + client + ": " + report.summary());
                }
            }
        }
    }
}
