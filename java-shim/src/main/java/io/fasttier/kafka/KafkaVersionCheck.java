package io.fasttier.kafka;

import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.config.ConfigException;

import java.io.IOException;
import java.io.InputStream;
import java.util.Properties;

/**
 * The Kafka versions fasttier supports, checked in {@code configure} against the broker's own version: the
 * {@code version} in {@code kafka/kafka-version.properties} of the broker's kafka-clients jar, which is what
 * Kafka's {@code AppInfoParser.getVersion()} reports (that class moved to {@code ...common.utils.internals} in
 * 4.4, so it is not linked against).
 *
 * <p>Supported: 4.1, 4.2, 4.3 and 4.4 (any patch release). An older version is refused. A newer one is refused
 * unless the broker sets {@code rsm.config.}{@value #ALLOW_NEWER_KEY}{@code =true}, which turns the refusal
 * into a warning (for trying a new Kafka release before fasttier lists it). A version that cannot be read
 * ({@code unknown}, e.g. a broker built from source without its version file) is a warning.
 *
 * <p>Kafka 4.0 never reaches this check: the shim's {@link FastTierRemoteStorageManager} implements
 * {@code org.apache.kafka.common.metrics.Monitorable} (KIP-877, new in 4.1), so a 4.0 broker fails to load the
 * class ({@code NoClassDefFoundError: org/apache/kafka/common/metrics/Monitorable}) before any plugin code
 * runs; docs/operations.md names that error.
 */
final class KafkaVersionCheck {
    /** RSM config key (without {@code rsm.config.}): allow Kafka versions newer than the newest supported. */
    static final String ALLOW_NEWER_KEY = "kafka.version.allow.newer";
    static final int MAJOR = 4;
    static final int MIN_MINOR = 1;
    static final int MAX_MINOR = 4;
    static final String SUPPORTED = "4.1, 4.2, 4.3 and 4.4";

    private KafkaVersionCheck() {}

    /** The broker's Kafka version as its kafka-clients jar reports it; {@code unknown} if it cannot be read. */
    static String brokerVersion() {
        // Through the loader of a kafka-clients class: the broker's jar, also under a child-first plugin loader
        // (the plugin folder never holds kafka-clients).
        try (InputStream in = KafkaException.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            if (in == null) {
                return "unknown";
            }
            Properties p = new Properties();
            p.load(in);
            return p.getProperty("version", "unknown").trim();
        } catch (IOException | RuntimeException e) {
            return "unknown";
        }
    }

    /**
     * Checks {@code version}. Returns null when it is supported, a warning to log when it is allowed but not
     * supported; throws {@link ConfigException} (one message naming the supported versions) otherwise.
     */
    static String check(String version, boolean allowNewer) {
        int[] mm = parse(version);
        if (mm == null) {
            return "fasttier: cannot tell the Kafka version (\"" + version + "\"); fasttier supports Kafka "
                    + SUPPORTED + " only";
        }
        int major = mm[0];
        int minor = mm[1];
        boolean older = major < MAJOR || (major == MAJOR && minor < MIN_MINOR);
        boolean newer = major > MAJOR || (major == MAJOR && minor > MAX_MINOR);
        if (!older && !newer) {
            return null;
        }
        if (newer && allowNewer) {
            return "fasttier: Kafka " + version + " is newer than the versions fasttier supports (" + SUPPORTED
                    + "); running anyway because rsm.config." + ALLOW_NEWER_KEY + "=true";
        }
        throw new ConfigException("fasttier: Kafka " + version + " is not supported: fasttier supports Kafka "
                + SUPPORTED + (newer ? " (set rsm.config." + ALLOW_NEWER_KEY + "=true to try a newer Kafka)" : ""));
    }

    /** {major, minor} of a version such as {@code 4.4.0} or {@code 4.5.0-SNAPSHOT}; null if unreadable. */
    static int[] parse(String version) {
        if (version == null) {
            return null;
        }
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("^(\\d+)\\.(\\d+)(?:[.\\-].*)?$").matcher(version.trim());
        if (!m.matches()) {
            return null;
        }
        try {
            return new int[] {Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2))};
        } catch (NumberFormatException e) {
            return null;
        }
    }
}
