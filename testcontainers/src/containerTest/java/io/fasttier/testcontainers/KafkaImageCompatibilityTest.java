package io.fasttier.testcontainers;

import static org.junit.Assert.assertTrue;

import java.time.Duration;
import java.util.Collections;
import org.apache.kafka.clients.admin.Admin;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.Timeout;
import org.testcontainers.kafka.KafkaContainer;

/**
 * The image without the plugin is a compatible substitute for apache/kafka: Testcontainers' own KafkaContainer
 * (its start command, its start script, its log wait) runs it unchanged.
 */
public class KafkaImageCompatibilityTest {
    @Rule
    public Timeout timeout = Timeout.seconds(180);

    @Test
    public void stockKafkaContainerRunsTheImage() throws Exception {
        try (KafkaContainer kafka = new KafkaContainer(FastTierImages.stockKafka())
                .withStartupTimeout(Duration.ofMinutes(3))) {
            kafka.start();
            try (Admin admin = Clients.admin(kafka.getBootstrapServers())) {
                Clients.createTopic(admin, "plain", 2, 1, Collections.emptyMap());
                Clients.produce(kafka.getBootstrapServers(), "plain", 2, 0, 500, 100);
                Clients.consumeAndVerify(kafka.getBootstrapServers(), "plain", 2, 500, 100);
            }
            assertTrue("INFO logs on stdout", kafka.getLogs().contains("Transitioning from RECOVERY to RUNNING"));
        }
    }
}
