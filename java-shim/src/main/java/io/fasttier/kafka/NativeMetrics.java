package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeBridge;

import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.metrics.Gauge;
import org.apache.kafka.common.metrics.PluginMetrics;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.function.Supplier;

/**
 * Exposes the engine's native metrics through Kafka's {@link PluginMetrics} (KIP-877): one metric per
 * {@link NativeBridge#metricDescriptors()} entry ({@code name|gauge-or-counter|description}), all read from one
 * {@link NativeBridge#metrics(long)} array that is cached for {@link #CACHE_MS} ms, so a scrape of every metric
 * costs one JNI call. Counters are exposed as cumulative totals. Kafka adds the plugin tags
 * ({@code config}, {@code class}) and the group {@code plugins}.
 */
final class NativeMetrics {
    static final long CACHE_MS = 1000;

    private static final Logger LOG = LoggerFactory.getLogger(NativeMetrics.class);

    /** One parsed metric descriptor. */
    static final class Descriptor {
        final String name;
        final String type;
        final String description;

        Descriptor(String name, String type, String description) {
            this.name = name;
            this.type = type;
            this.description = description;
        }
    }

    private final Supplier<long[]> reader;
    private long[] cached = new long[0];
    private long fetchedAtNanos;
    private boolean everFetched;

    /**
     * @param reader returns the current values, or null when the engine is closed (the last values are then kept)
     */
    NativeMetrics(Supplier<long[]> reader) {
        this.reader = reader;
    }

    static List<Descriptor> parse(String[] raw) {
        if (raw == null) {
            return Collections.emptyList();
        }
        List<Descriptor> out = new ArrayList<>(raw.length);
        for (String d : raw) {
            String[] parts = d == null ? new String[0] : d.split("\\|", 3);
            String name = parts.length > 0 ? parts[0].trim() : "";
            String type = parts.length > 1 ? parts[1].trim() : "gauge";
            String description = parts.length > 2 ? parts[2].trim() : "";
            out.add(new Descriptor(name, type, description));
        }
        return out;
    }

    /** Registers every native metric; returns how many were registered. */
    int register(PluginMetrics pluginMetrics) {
        List<Descriptor> descriptors = parse(NativeBridge.metricDescriptors());
        int registered = 0;
        for (int i = 0; i < descriptors.size(); i++) {
            Descriptor d = descriptors.get(i);
            if (d.name.isEmpty()) {
                LOG.warn("fasttier: native metric #{} has no name; skipped", i);
                continue;
            }
            final int index = i;
            String description = d.description.isEmpty() ? d.type : d.description + " (" + d.type + ")";
            try {
                MetricName name = pluginMetrics.metricName(d.name, description, new LinkedHashMap<>());
                pluginMetrics.addMetric(name, (Gauge<Long>) (config, now) -> value(index));
                registered++;
            } catch (RuntimeException e) {
                LOG.warn("fasttier: cannot register native metric {}: {}", d.name, e.toString());
            }
        }
        LOG.debug("fasttier: registered {} native metrics", registered);
        return registered;
    }

    /** The value of metric {@code index}, from a snapshot at most {@link #CACHE_MS} old. */
    synchronized long value(int index) {
        long now = System.nanoTime();
        if (!everFetched || now - fetchedAtNanos >= CACHE_MS * 1_000_000L) {
            try {
                long[] fresh = reader.get();
                if (fresh != null) {
                    cached = fresh;
                }
            } catch (RuntimeException e) {
                LOG.debug("fasttier: reading native metrics failed: {}", e.toString());
            }
            fetchedAtNanos = now;
            everFetched = true;
        }
        return index >= 0 && index < cached.length ? cached[index] : 0L;
    }
}
