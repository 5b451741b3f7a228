package io.fasttier.testcontainers;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.Timeout;

/**
 * One fasttier broker in a container (Testcontainers' KafkaContainer with the plugin) and MinIO: the slow tier
 * (segments tiered, local copies deleted, records read back from the bucket) and the fast tier (recent data of the
 * active segment uploaded to the fast bucket).
 */
public class FastTierKafkaContainerTest {
    private static final int SEGMENT = 1024 * 1024;
    private static final int VALUE = 1000;

    @Rule
    public Timeout timeout = Timeout.seconds(300);

    private static FastTierMinioContainer minio;
    private static FastTierKafkaContainer kafka;
    private static Admin admin;

    @BeforeClass
    public static void start() {
        minio = new FastTierMinioContainer();
        kafka = new FastTierKafkaContainer(minio);
        kafka.start();
        admin = Clients.admin(kafka.getBootstrapServers());
    }

    @AfterClass
    public static void stop() {
        if (admin != null) {
            admin.close();
        }
        if (kafka != null) {
            kafka.stop();
        }
        if (minio != null) {
            minio.stop();
            if (minio.getNetwork() != null) {
                minio.getNetwork().close();
            }
        }
    }

    private static Map<String, String> tiered(Map<String, String> extra) {
        Map<String, String> c = new HashMap<>();
        c.put("remote.storage.enable", "true");
        c.put("segment.bytes", Integer.toString(SEGMENT));
        c.putAll(extra);
        return c;
    }

    @Test
    public void segmentsAreTieredAndReadBackFromTheSlowTier() throws Exception {
        String topic = "tiered";
        Map<String, String> cfg = new HashMap<>();
        cfg.put("local.retention.ms", "-2");
        cfg.put("local.retention.bytes", Integer.toString(SEGMENT));
        Clients.createTopic(admin, topic, 1, 1, tiered(cfg));
        long n = 6000; // ~6 MiB: 5 rolled segments of 1 MiB, the oldest deleted locally once tiered
        Clients.produce(kafka.getBootstrapServers(), topic, 1, 0, n, VALUE);

        String segments = kafka.prefix() + "fasttier/v1/segments/" + topic + "-";
        Clients.waitUntil(Duration.ofSeconds(180), () -> "local log start of " + topic + " to move past offset 0", () -> {
            try {
                return Clients.offsets(admin, topic, 1, OffsetSpec.earliestLocal()).get(0) > 0;
            } catch (Exception e) {
                return false;
            }
        });
        long localStart = Clients.offsets(admin, topic, 1, OffsetSpec.earliestLocal()).get(0);
        long logStart = Clients.offsets(admin, topic, 1, OffsetSpec.earliest()).get(0);
        assertEquals("log start offset (nothing deleted from the tier)", 0L, logStart);
        List<String> objects = minio.objectKeys(minio.slowBucket(), segments);
        List<String> logs = objects.stream().filter(k -> k.endsWith(".log")).collect(Collectors.toList());
        assertTrue("segment objects in " + minio.slowBucket() + ": " + objects, logs.size() >= 2);

        // offsets 0..localStart-1 exist only in the bucket: reading from 0 reads them back through the plugin
        Clients.consumeAndVerify(kafka.getBootstrapServers(), topic, 1, n, VALUE);
        Map<String, Double> m = kafka.pluginMetrics();
        System.out.printf("tiered: %d records, local log starts at %d, %d segment objects; plugin metrics: %s%n",
                n, localStart, logs.size(), m.keySet().size());
        assertTrue("the plugin's metrics are registered: " + m, m.containsKey("wal-objects-total"));
    }

    @Test
    public void theFastTierUploadsTheActiveSegment() throws Exception {
        String topic = "fast";
        // one big segment: nothing rolls, so nothing reaches the slow tier; the fast tier still has the data
        Map<String, String> cfg = new HashMap<>();
        cfg.put("segment.bytes", Integer.toString(64 * SEGMENT));
        Clients.createTopic(admin, topic, 1, 1, tiered(cfg));
        Map<String, Double> before = kafka.pluginMetrics();
        Clients.produce(kafka.getBootstrapServers(), topic, 1, 0, 2000, VALUE);

        String wal = kafka.prefix() + "fasttier/v1/wal/1/";
        Clients.waitUntil(Duration.ofSeconds(60), "fast-tier objects under " + wal, () -> {
            try {
                return minio.objectKeys(minio.fastBucket(), wal).stream().anyMatch(k -> k.endsWith(".wal"));
            } catch (Exception e) {
                return false;
            }
        });
        double recordBytes = 2000.0 * VALUE;
        Clients.waitUntil(Duration.ofSeconds(60), "the fast tier to upload the 2 MB produced", () -> {
            try {
                return kafka.pluginMetrics().getOrDefault("wal-record-bytes-total", 0.0)
                        - before.getOrDefault("wal-record-bytes-total", 0.0) >= recordBytes;
            } catch (Exception e) {
                return false;
            }
        });
        List<String> walObjects = minio.objectKeys(minio.fastBucket(), wal);
        List<String> slow = minio.objectKeys(minio.slowBucket(), kafka.prefix() + "fasttier/v1/segments/" + topic + "-");
        assertFalse("fast-tier objects: " + walObjects, walObjects.isEmpty());
        assertTrue("no segment of " + topic + " rolled, so none is in the slow tier: " + slow, slow.isEmpty());
        Clients.consumeAndVerify(kafka.getBootstrapServers(), topic, 1, 2000, VALUE);
        System.out.printf("fast tier: %d objects under %s in %s%n", walObjects.size(), wal, minio.fastBucket());
    }
}
