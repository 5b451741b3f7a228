package io.fasttier.kafka;

import org.apache.kafka.common.MetricName;
import org.junit.Test;

import java.util.concurrent.atomic.AtomicReference;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

/** Per-partition replication metrics: registered for new partitions, updated, removed when gone. */
public class ReplicationMetricsTest {

    private static long value(RecordingPluginMetrics m, String name, String partition) {
        for (MetricName n : m.metrics.keySet()) {
            if (n.name().equals(name) && partition.equals(n.tags().get("partition"))) {
                return (Long) ((org.apache.kafka.common.metrics.Gauge<?>) m.metrics.get(n))
                        .value(new org.apache.kafka.common.metrics.MetricConfig(), 0L);
            }
        }
        throw new AssertionError("no metric " + name + " for partition " + partition);
    }

    @Test
    public void partitionsAreRegisteredUpdatedAndRemoved() {
        RecordingPluginMetrics m = new RecordingPluginMetrics();
        AtomicReference<String[]> rows = new AtomicReference<>(new String[] {
            "1|AAAAAAAAAAAAAAAAAAAAAQ|0|fast|1000|20|0",
            "2|AAAAAAAAAAAAAAAAAAAAAQ|1|leader|0|500|2",
            "garbage",
        });
        ReplicationMetrics rm = new ReplicationMetrics(m, rows::get);
        assertEquals(2, rm.refresh());
        assertEquals(2 * ReplicationMetrics.NAMES.length, m.metrics.size());
        assertEquals(1L, value(m, "replication-partition-fast", "0"));
        assertEquals(0L, value(m, "replication-partition-fast", "1"));
        assertEquals(1000L, value(m, "replication-partition-fast-bytes-total", "0"));
        assertEquals(2L, value(m, "replication-partition-fallbacks-total", "1"));
        for (MetricName n : m.metrics.keySet()) {
            assertTrue(n.toString(), n.tags().containsKey("leader") && n.tags().containsKey("topic-id"));
        }

        rows.set(new String[] {"1|AAAAAAAAAAAAAAAAAAAAAQ|0|leader|1500|900|1"});
        assertEquals(1, rm.refresh());
        assertEquals(ReplicationMetrics.NAMES.length, m.metrics.size());
        assertEquals(0L, value(m, "replication-partition-fast", "0"));
        assertEquals(900L, value(m, "replication-partition-leader-bytes-total", "0"));

        rows.set(null); // engine closed: keep the last state
        assertEquals(1, rm.refresh());
        rm.close();
        assertEquals(0, m.metrics.size());
    }
}
