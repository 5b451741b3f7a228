package io.fasttier.testcontainers;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import org.apache.kafka.clients.admin.Admin;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.Timeout;

/**
 * Three fasttier brokers in containers on one Docker network, replicating through the fast tier
 * (docs/replication.md): followers' replica fetches go to the plugin's proxy in their own container, which serves
 * record bytes from the leader's fast-tier objects in MinIO. Then a broker restart (controlled shutdown, a new
 * container on the same data volume) under acks=all produce.
 */
public class FastReplicationClusterTest {
    private static final int VALUE = 1000;
    private static final int PARTITIONS = 3;
    private static final String FAST_BYTES = "replication-fast-bytes-total";

    @Rule
    public Timeout timeout = Timeout.seconds(420);

    private static FastTierKafkaCluster cluster;

    @BeforeClass
    public static void start() {
        cluster = new FastTierKafkaCluster(3, true);
        cluster.start();
    }

    @AfterClass
    public static void stop() {
        if (cluster != null) {
            cluster.close();
        }
    }

    private static double fastBytes(int node) {
        try {
            return cluster.broker(node).pluginMetrics().getOrDefault(FAST_BYTES, 0.0);
        } catch (Exception e) {
            return 0.0;
        }
    }

    private static double fastBytesAll() {
        double sum = 0;
        for (int node = 1; node <= 3; node++) {
            sum += fastBytes(node);
        }
        return sum;
    }

    private static String directoryId(FastTierKafkaContainer b) throws Exception {
        String props = b.execInContainer("cat", FastTierKafkaContainer.DATA_PATH + "/data/meta.properties").getStdout();
        String id = props.replaceAll("(?s).*directory\\.id=([^\\n]*).*", "$1");
        assertTrue("meta.properties: " + props, !id.isEmpty() && !id.equals(props));
        return id;
    }

    private static void waitForFullIsr(Admin admin, String topic) throws InterruptedException {
        Clients.waitUntil(Duration.ofSeconds(120), () -> "ISR of " + topic + " to be 3 everywhere", () -> {
            try {
                return Clients.isrSizes(admin, topic).values().stream().allMatch(s -> s == 3);
            } catch (Exception e) {
                return false;
            }
        });
    }

    @Test
    public void replicationThroughTheFastTierAndABrokerRestart() throws Exception {
        try {
            run();
        } catch (Throwable t) {
            for (FastTierKafkaContainer b : cluster.brokers()) {
                if (b.getContainerId() != null) {
                    String[] lines = b.getLogs().split("\n");
                    System.out.println("---- " + b + ": last 60 of " + lines.length + " log lines");
                    for (int i = Math.max(0, lines.length - 60); i < lines.length; i++) {
                        System.out.println(lines[i]);
                    }
                }
            }
            throw t;
        }
    }

    private void run() throws Exception {
        String topic = "replicated";
        Map<String, String> cfg = new HashMap<>();
        cfg.put("remote.storage.enable", "true");
        cfg.put("min.insync.replicas", "2");
        cfg.put("segment.bytes", Integer.toString(1024 * 1024));
        try (Admin admin = Clients.admin(cluster.bootstrapServers())) {
            Clients.createTopic(admin, topic, PARTITIONS, 3, cfg);
            waitForFullIsr(admin, topic);

            // 1. acks=all produce; the followers' record bytes come from the fast tier
            long n1 = 1500;
            Clients.produce(cluster.bootstrapServers(), topic, PARTITIONS, 0, n1, VALUE);
            double produced = (double) n1 * PARTITIONS * VALUE;
            // each partition has two followers: up to 2x the produced bytes can be served from the fast tier
            Clients.waitUntil(Duration.ofSeconds(90), () -> "followers to be served >= the produced bytes from the fast tier"
                    + " (now " + fastBytesAll() + " of " + produced + ")", () -> fastBytesAll() >= produced);
            waitForFullIsr(admin, topic);
            Clients.consumeAndVerify(cluster.bootstrapServers(), topic, PARTITIONS, n1, VALUE);
            Map<Integer, Double> perBroker = new HashMap<>();
            for (int node = 1; node <= 3; node++) {
                perBroker.put(node, fastBytes(node));
            }
            System.out.printf("fast replication: produced %.0f bytes, served from the fast tier per broker %s%n",
                    produced, perBroker);

            // 2. restart broker 2 (a follower or leader of some partitions) while producing continues
            String dirBefore = directoryId(cluster.broker(2));
            cluster.restartBroker(2);
            // a new container on the same volume: the log dir is the one formatted before, with its data
            assertEquals("directory.id of broker 2's log dir across the restart", dirBefore, directoryId(cluster.broker(2)));
            long n2 = 3000;
            Clients.produce(cluster.bootstrapServers(), topic, PARTITIONS, n1, n2, VALUE);
            waitForFullIsr(admin, topic);
            // the restarted broker is a new JVM: its counters start at 0, so anything now is after the restart
            Clients.waitUntil(Duration.ofSeconds(90), () -> "the restarted broker 2 to replicate through the fast tier"
                    + " (served " + fastBytes(2) + " bytes)", () -> fastBytes(2) > 0);
            Clients.consumeAndVerify(cluster.bootstrapServers(), topic, PARTITIONS, n2, VALUE);

            // the data of every partition is on all three brokers again, byte for byte the leader's
            assertEquals(3, Clients.isrSizes(admin, topic).values().stream().mapToInt(Integer::intValue).min().getAsInt());
            assertTrue("fast-tier objects of the restarted broker", !cluster.minio()
                    .objectKeys(cluster.minio().fastBucket(), cluster.prefix() + "fasttier/v1/wal/").isEmpty());
            System.out.printf("after the restart of broker 2: %d records per partition, broker 2 served %.0f bytes "
                    + "from the fast tier%n", n2, fastBytes(2));
        }
    }
}
