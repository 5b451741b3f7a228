package io.fasttier.kafka;

import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.metrics.MetricConfig;
import org.apache.kafka.common.metrics.MetricValueProvider;
import org.apache.kafka.common.metrics.Gauge;
import org.apache.kafka.common.metrics.PluginMetrics;
import org.apache.kafka.common.metrics.Sensor;

import java.util.LinkedHashMap;
import java.util.Map;

/** A PluginMetrics that records what the plugin registers. */
final class RecordingPluginMetrics implements PluginMetrics {
    final Map<MetricName, MetricValueProvider<?>> metrics = new LinkedHashMap<>();

    @Override
    public MetricName metricName(String name, String description, LinkedHashMap<String, String> tags) {
        return new MetricName(name, "plugins", description, tags);
    }

    @Override
    public synchronized void addMetric(MetricName metricName, MetricValueProvider<?> provider) {
        if (metrics.containsKey(metricName)) {
            throw new IllegalArgumentException("Metric " + metricName + " already exists");
        }
        metrics.put(metricName, provider);
    }

    @Override
    public synchronized void removeMetric(MetricName metricName) {
        metrics.remove(metricName);
    }

    @Override
    public Sensor addSensor(String name) {
        throw new UnsupportedOperationException("sensors are not used by fasttier");
    }

    @Override
    public void removeSensor(String name) {
        throw new UnsupportedOperationException("sensors are not used by fasttier");
    }

    synchronized Object value(String name) {
        for (Map.Entry<MetricName, MetricValueProvider<?>> e : metrics.entrySet()) {
            if (e.getKey().name().equals(name)) {
                return ((Gauge<?>) e.getValue()).value(new MetricConfig(), System.currentTimeMillis());
            }
        }
        throw new IllegalArgumentException("no metric " + name);
    }
}
