package io.fasttier.kafka;

import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.metrics.Gauge;
import org.apache.kafka.common.metrics.PluginMetrics;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Supplier;

/**
 * Per-partition metrics of replication through the fast tier, tagged {@code leader}, {@code topic-id} and
 * {@code partition}: {@code replication-partition-fast} (1 while the partition's record bytes come from the
 * fast tier, 0 while they come from the leader), {@code replication-partition-fast-bytes-total} (bytes served
 * from the fast tier: cross-zone bytes saved), {@code replication-partition-leader-bytes-total} and
 * {@code replication-partition-fallbacks-total}. {@link #refresh()} reads the native rows (one JNI call),
 * registers the metrics of partitions it has not seen and removes those of partitions no longer followed; the
 * owner calls it periodically.
 */
final class ReplicationMetrics {
    private static final Logger LOG = LoggerFactory.getLogger(ReplicationMetrics.class);

    static final String[] NAMES = {
        "replication-partition-fast", "replication-partition-fast-bytes-total",
        "replication-partition-leader-bytes-total", "replication-partition-fallbacks-total",
    };
    private static final String[] DESCRIPTIONS = {
        "1 while the partition's record bytes come from the fast tier, 0 while they come from the leader",
        "Record bytes of the partition served from the fast tier (cross-zone bytes saved)",
        "Record bytes of the partition fetched from its leader",
        "Times the partition fell back to the leader (lag, store, mismatch)",
    };

    private final PluginMetrics metrics;
    private final Supplier<String[]> reader;
    /** Current values by "leader|topicId|partition", in {@link #NAMES} order. */
    private final Map<String, long[]> values = new ConcurrentHashMap<>();
    private final Map<String, List<MetricName>> registered = new HashMap<>();

    ReplicationMetrics(PluginMetrics metrics, Supplier<String[]> reader) {
        this.metrics = metrics;
        this.reader = reader;
    }

    /** Reads the native rows and updates the registered metrics. Returns the number of partitions. */
    synchronized int refresh() {
        String[] rows = reader.get();
        if (rows == null) {
            return registered.size();
        }
        Set<String> seen = new HashSet<>();
        for (String row : rows) {
            String[] f = row.split("\\|");
            if (f.length != 7) {
                LOG.debug("fasttier: replication metrics row skipped: {}", row);
                continue;
            }
            String key = f[0] + "|" + f[1] + "|" + f[2];
            long[] v;
            try {
                v = new long[] {"fast".equals(f[3]) ? 1 : 0, Long.parseLong(f[4]), Long.parseLong(f[5]),
                    Long.parseLong(f[6])};
            } catch (NumberFormatException e) {
                LOG.debug("fasttier: replication metrics row skipped: {}", row);
                continue;
            }
            seen.add(key);
            values.put(key, v);
            if (!registered.containsKey(key)) {
                register(key, f[0], f[1], f[2]);
            }
        }
        for (String gone : new ArrayList<>(registered.keySet())) {
            if (!seen.contains(gone)) {
                for (MetricName n : registered.remove(gone)) {
                    metrics.removeMetric(n);
                }
                values.remove(gone);
            }
        }
        return registered.size();
    }

    private void register(String key, String leader, String topicId, String partition) {
        LinkedHashMap<String, String> tags = new LinkedHashMap<>();
        tags.put("leader", leader);
        tags.put("topic-id", topicId);
        tags.put("partition", partition);
        List<MetricName> names = new ArrayList<>(NAMES.length);
        for (int i = 0; i < NAMES.length; i++) {
            final int index = i;
            try {
                MetricName name = metrics.metricName(NAMES[i], DESCRIPTIONS[i], new LinkedHashMap<>(tags));
                metrics.addMetric(name, (Gauge<Long>) (config, now) -> {
                    long[] v = values.get(key);
                    return v == null ? 0L : v[index];
                });
                names.add(name);
            } catch (RuntimeException e) {
                LOG.warn("fasttier: cannot register {} for {}: {}", NAMES[i], key, e.toString());
            }
        }
        registered.put(key, names);
    }

    /** Removes every metric this instance registered. */
    synchronized void close() {
        for (List<MetricName> names : registered.values()) {
            for (MetricName n : names) {
                metrics.removeMetric(n);
            }
        }
        registered.clear();
        values.clear();
    }
}
