package io.fasttier.kafka;

import org.apache.kafka.common.config.ConfigException;
import org.junit.Test;

import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

public class KafkaVersionCheckTest {
    private static void refused(String v, boolean allowNewer, String... mustContain) {
        try {
            KafkaVersionCheck.check(v, allowNewer);
            fail("Kafka " + v + " accepted");
        } catch (ConfigException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith("fasttier: Kafka " + v + " is not supported"));
            assertTrue(e.getMessage(), e.getMessage().contains("4.1, 4.2, 4.3 and 4.4"));
            for (String s : mustContain) {
                assertTrue(e.getMessage(), e.getMessage().contains(s));
            }
        }
    }

    @Test
    public void supportedLinesPass() {
        for (String v : new String[] {"4.1.0", "4.1.2", "4.2.0", "4.3.1", "4.4.0", "4.4.1-SNAPSHOT"}) {
            assertNull(v, KafkaVersionCheck.check(v, false));
        }
    }

    @Test
    public void olderVersionsAreRefusedEvenWithTheOverride() {
        refused("4.0.1", false);
        refused("4.0.1", true);
        refused("3.9.1", true);
    }

    @Test
    public void newerVersionsAreRefusedUnlessAllowed() {
        refused("4.5.0", false, "rsm.config.kafka.version.allow.newer=true");
        refused("5.0.0", false, "rsm.config.kafka.version.allow.newer=true");
        String w = KafkaVersionCheck.check("4.5.0", true);
        assertNotNull(w);
        assertTrue(w, w.contains("newer") && w.contains("4.5.0"));
    }

    @Test
    public void unknownVersionIsAWarning() {
        assertNotNull(KafkaVersionCheck.check("unknown", false));
        assertNotNull(KafkaVersionCheck.check(null, false));
    }

    /**
     * The test class path's kafka-clients (4.1.2 for `test`, 4.4.0 for `testKafkaLatest`) is read and passes.
     * AppInfoParser itself is looked up by reflection: it moved to ...common.utils.internals in 4.4.
     */
    @Test
    public void thisKafkaPasses() throws Exception {
        String v = KafkaVersionCheck.brokerVersion();
        Class<?> parser;
        try {
            parser = Class.forName("org.apache.kafka.common.utils.AppInfoParser");
        } catch (ClassNotFoundException e) {
            parser = Class.forName("org.apache.kafka.common.utils.internals.AppInfoParser");
        }
        assertTrue(v, v.equals(parser.getMethod("getVersion").invoke(null)));
        assertTrue(v, v.startsWith("4.1.") || v.startsWith("4.4."));
        assertNull(v, KafkaVersionCheck.check(v, false));
    }
}
