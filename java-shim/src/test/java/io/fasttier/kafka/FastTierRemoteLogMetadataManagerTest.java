package io.fasttier.kafka;

import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigException;
import org.junit.After;
import org.junit.Before;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.Timeout;

import javax.management.MBeanServer;
import javax.management.ObjectName;
import javax.management.StandardMBean;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

/**
 * fasttier's RLMM and {@link FastTierRegistry}: forwarding to a fake delegate ({@link RecordingRlmm}),
 * configuration errors, and the hand-over of leadership to a real native engine (memory backend) in both orders.
 */
public class FastTierRemoteLogMetadataManagerTest {
    @Rule
    public final TemporaryFolder tmp = new TemporaryFolder();

    @Rule
    public final Timeout timeout = Timeout.seconds(120);

    private final List<FastTierRemoteLogMetadataManager> rlmms = new ArrayList<>();
    private final List<FastTierRemoteStorageManager> rsms = new ArrayList<>();
    private ObjectName brokerStateName;

    @Before
    public void setUp() {
        FastTierRegistry.resetForTests();
    }

    @After
    public void tearDown() throws Exception {
        for (FastTierRemoteLogMetadataManager r : rlmms) {
            r.close();
        }
        for (FastTierRemoteStorageManager r : rsms) {
            r.close();
        }
        if (brokerStateName != null && mbeans().isRegistered(brokerStateName)) {
            mbeans().unregisterMBean(brokerStateName);
        }
        FastTierRegistry.resetForTests();
    }

    // ---------------------------------------------------------------- helpers

    private Map<String, Object> rlmmConfig(Class<?> delegate) throws IOException {
        Map<String, Object> c = new HashMap<>();
        c.put(FastTierRemoteLogMetadataManager.DELEGATE_CLASS_KEY, delegate.getName());
        c.put("broker.id", 7);
        c.put("log.dir", tmp.newFolder().getAbsolutePath());
        c.put("cluster.id", "test-cluster");
        c.put("remote.log.metadata.topic.replication.factor", "1");
        c.put("remote.log.metadata.common.client.bootstrap.servers", "127.0.0.1:9092");
        return c;
    }

    private FastTierRemoteLogMetadataManager rlmm(Map<String, ?> config) {
        FastTierRemoteLogMetadataManager r = new FastTierRemoteLogMetadataManager();
        rlmms.add(r);
        r.configure(config);
        return r;
    }

    private FastTierRemoteLogMetadataManager rlmm() throws IOException {
        return rlmm(rlmmConfig(RecordingRlmm.class));
    }

    private static RecordingRlmm recorder(FastTierRemoteLogMetadataManager r) {
        return (RecordingRlmm) r.delegate();
    }

    private FastTierRemoteStorageManager rsm(Map<String, Object> extra) {
        Map<String, Object> c = FastTierRemoteStorageManagerTest.memoryConfig();
        c.putAll(extra);
        FastTierRemoteStorageManager r = new FastTierRemoteStorageManager();
        rsms.add(r);
        r.configure(c);
        return r;
    }

    private FastTierRemoteStorageManager rsm() {
        return rsm(Collections.emptyMap());
    }

    private static ConfigException configError(Map<String, ?> config) {
        FastTierRemoteLogMetadataManager r = new FastTierRemoteLogMetadataManager();
        try {
            r.configure(config);
        } catch (ConfigException e) {
            assertTrue("message must start with 'fasttier: ': " + e.getMessage(), e.getMessage().startsWith("fasttier: "));
            return e;
        }
        fail("configure accepted " + config);
        return null;
    }

    private static Set<TopicIdPartition> partitions(String topic, int... numbers) {
        Uuid id = Uuid.randomUuid();
        Set<TopicIdPartition> out = new HashSet<>();
        for (int p : numbers) {
            out.add(new TopicIdPartition(id, p, topic));
        }
        return out;
    }

    private static final Pattern LEADERS = Pattern.compile("\"leaders\":(\\d+)");

    /** The "leaders" field of the native fast-tier status. */
    private static int statusLeaders() {
        String status = FastTierRegistry.status();
        assertNotNull("no engine registered", status);
        Matcher m = LEADERS.matcher(status);
        assertTrue("no leaders count in " + status, m.find());
        return Integer.parseInt(m.group(1));
    }

    private static MBeanServer mbeans() {
        return ManagementFactory.getPlatformMBeanServer();
    }

    private static void awaitCall(RecordingRlmm d, String call, long timeoutMs) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        while (!d.calls.contains(call)) {
            if (System.nanoTime() > deadline) {
                fail("delegate never saw " + call + "; calls: " + d.calls);
            }
            Thread.sleep(20);
        }
    }

    // ---------------------------------------------------------------- forwarding and configuration

    @Test
    public void forwardsEveryMethodToTheDelegate() throws Exception {
        FastTierRemoteLogMetadataManager r = rlmm();
        RecordingRlmm d = recorder(r);
        TopicIdPartition tip = TestSegments.newPartition("fwd", 1);

        assertSame(RecordingRlmm.DONE, r.addRemoteLogSegmentMetadata(null));
        assertSame(RecordingRlmm.DONE, r.updateRemoteLogSegmentMetadata(null));
        assertSame(RecordingRlmm.DONE, r.putRemotePartitionDeleteMetadata(null));
        assertFalse(r.remoteLogSegmentMetadata(tip, 3, 100L).isPresent());
        assertEquals(Long.valueOf(42L), r.highestOffsetForEpoch(tip, 3).get());
        assertFalse(r.listRemoteLogSegments(tip).hasNext());
        assertFalse(r.listRemoteLogSegments(tip, 3).hasNext());
        assertEquals(4711L, r.remoteLogSize(tip, 3));
        assertFalse(r.nextSegmentWithTxnIndex(tip, 3, 100L).isPresent());
        assertTrue(r.isReady(tip));
        r.onPartitionLeadershipChanges(Collections.singleton(tip), Collections.emptySet());
        r.onStopPartitions(Collections.singleton(tip));
        r.close();
        r.close(); // idempotent

        assertEquals(Arrays.asList(
                "configure",
                "addRemoteLogSegmentMetadata(null)",
                "updateRemoteLogSegmentMetadata(null)",
                "putRemotePartitionDeleteMetadata(null)",
                "remoteLogSegmentMetadata(" + tip + ",3,100)",
                "highestOffsetForEpoch(" + tip + ",3)",
                "listRemoteLogSegments(" + tip + ")",
                "listRemoteLogSegments(" + tip + ",3)",
                "remoteLogSize(" + tip + ",3)",
                "nextSegmentWithTxnIndex(" + tip + ",3,100)",
                "isReady(" + tip + ")",
                "onPartitionLeadershipChanges(1,0)",
                "onStopPartitions(1)",
                "close"), d.calls);
    }

    @Test
    public void fasttierKeysAreStrippedAndEverythingElseReachesTheDelegate() throws Exception {
        Map<String, Object> c = rlmmConfig(RecordingRlmm.class);
        RecordingRlmm d = recorder(rlmm(c));
        Map<String, Object> expected = new HashMap<>(c);
        expected.remove(FastTierRemoteLogMetadataManager.DELEGATE_CLASS_KEY);
        assertEquals(expected, d.config);
        assertEquals(7, d.config.get("broker.id")); // values unchanged (an Integer stays an Integer)
    }

    @Test
    public void unknownFasttierKeyIsRejectedWithTheFullPropertyName() throws Exception {
        Map<String, Object> c = rlmmConfig(RecordingRlmm.class);
        c.put("fasttier.xyz", "1");
        ConfigException e = configError(c);
        assertTrue(e.getMessage(), e.getMessage().contains("rlmm.config.fasttier.xyz"));
    }

    @Test
    public void badDelegateClassesAreRejectedWithThePropertyName() throws Exception {
        String property = "rlmm.config.fasttier.delegate.class";
        Map<String, Object> c = rlmmConfig(RecordingRlmm.class);

        c.put(FastTierRemoteLogMetadataManager.DELEGATE_CLASS_KEY, "com.example.NoSuchRlmm");
        ConfigException e = configError(c);
        assertTrue(e.getMessage(), e.getMessage().contains(property + "=com.example.NoSuchRlmm"));

        c.put(FastTierRemoteLogMetadataManager.DELEGATE_CLASS_KEY, RecordingRlmm.NotAnRlmm.class.getName());
        e = configError(c);
        assertTrue(e.getMessage(), e.getMessage().contains(property));
        assertTrue(e.getMessage(), e.getMessage().contains("does not implement"));

        c.put(FastTierRemoteLogMetadataManager.DELEGATE_CLASS_KEY, FastTierRemoteLogMetadataManager.class.getName());
        e = configError(c);
        assertTrue(e.getMessage(), e.getMessage().contains(property));

        c.put(FastTierRemoteLogMetadataManager.DELEGATE_CLASS_KEY, RecordingRlmm.FailingConstructor.class.getName());
        e = configError(c);
        assertTrue(e.getMessage(), e.getMessage().contains(property));
        assertTrue(e.getMessage(), e.getMessage().contains("constructor says no"));
    }

    @Test
    public void theDefaultDelegateIsKafkasTopicBasedRlmm() throws Exception {
        // The unit tests run without the kafka-storage jar, so Kafka's default RLMM is missing: the error shows
        // that it is the one used when nothing is configured.
        Map<String, Object> c = rlmmConfig(RecordingRlmm.class);
        c.remove(FastTierRemoteLogMetadataManager.DELEGATE_CLASS_KEY);
        ConfigException e = configError(c);
        assertTrue(e.getMessage(), e.getMessage().contains("rlmm.config.fasttier.delegate.class="
                + FastTierRemoteLogMetadataManager.DEFAULT_DELEGATE_CLASS));
    }

    @Test
    public void leadershipCallbacksNeverThrowWhenTheNativeSideFails() throws Exception {
        NativeLibraryLoader.load(null);
        FastTierRemoteLogMetadataManager r = rlmm();
        FastTierRegistry.register(987_654_321L); // no such engine: every native call fails
        r.onPartitionLeadershipChanges(partitions("t", 0, 1), partitions("u", 0));
        r.onStopPartitions(partitions("t", 2));
        assertEquals(Arrays.asList("configure", "onPartitionLeadershipChanges(2,1)", "onStopPartitions(1)"),
                recorder(r).calls);
        assertEquals(2, FastTierRegistry.leaderCount());
        assertNull(FastTierRegistry.status());
        FastTierRegistry.unregister(987_654_321L);
    }

    @Test
    public void aFailingDelegateStillLetsTheFastTierKnow() throws Exception {
        Map<String, Object> c = rlmmConfig(RecordingRlmm.class);
        c.put(RecordingRlmm.FAIL_LEADERSHIP, "true");
        FastTierRemoteLogMetadataManager r = rlmm(c);
        Set<TopicIdPartition> led = partitions("t", 0, 1, 2);
        try {
            r.onPartitionLeadershipChanges(led, Collections.emptySet());
            fail("the delegate's exception must reach Kafka as it would without fasttier");
        } catch (IllegalStateException e) {
            assertEquals("delegate refuses leadership changes", e.getMessage());
        }
        assertEquals(3, FastTierRegistry.leaderCount());
    }

    // ---------------------------------------------------------------- the registry and the native fast tier

    @Test
    public void rsmFirstThenRlmm() throws Exception {
        FastTierRemoteStorageManager s = rsm();
        assertEquals(0, statusLeaders());
        Map<String, Object> c = rlmmConfig(RecordingRlmm.class);
        String logDir = (String) c.get("log.dir");
        FastTierRemoteLogMetadataManager r = rlmm(c);
        r.onPartitionLeadershipChanges(partitions("orders", 0, 1), Collections.emptySet());
        assertEquals(2, statusLeaders());
        String status = FastTierRegistry.status();
        assertTrue(status, status.contains("\"enabled\":true"));
        assertTrue(status, status.contains(logDir));

        r.onPartitionLeadershipChanges(partitions("payments", 0), Collections.emptySet());
        assertEquals(3, statusLeaders());
        s.close();
        assertNull("no native call after the engine closed", FastTierRegistry.status());
        r.onPartitionLeadershipChanges(partitions("late", 0), Collections.emptySet()); // no engine: fine
        assertEquals(4, FastTierRegistry.leaderCount());
    }

    @Test
    public void rlmmFirstThenRsm() throws Exception {
        FastTierRemoteLogMetadataManager r = rlmm();
        Set<TopicIdPartition> orders = partitions("orders", 0, 1, 2);
        r.onPartitionLeadershipChanges(orders, Collections.emptySet());
        TopicIdPartition moved = orders.iterator().next();
        r.onPartitionLeadershipChanges(Collections.emptySet(), Collections.singleton(moved));
        Set<TopicIdPartition> payments = partitions("payments", 0, 1);
        r.onPartitionLeadershipChanges(payments, Collections.emptySet());
        r.onStopPartitions(Collections.singleton(payments.iterator().next()));
        assertEquals(3, FastTierRegistry.leaderCount());

        rsm(); // registers late: gets the full state
        assertEquals(3, statusLeaders());

        r.onStopPartitions(orders);
        assertEquals(1, statusLeaders());
        r.onPartitionLeadershipChanges(orders, Collections.emptySet());
        assertEquals(4, statusLeaders());
    }

    @Test
    public void aReplacementEngineGetsTheWholeState() throws Exception {
        FastTierRemoteLogMetadataManager r = rlmm();
        FastTierRemoteStorageManager first = rsm();
        r.onPartitionLeadershipChanges(partitions("orders", 0, 1), Collections.emptySet());
        assertEquals(2, statusLeaders());
        first.close();
        rsm();
        assertEquals(2, statusLeaders());
    }

    @Test
    public void closingTheRlmmForgetsItsState() throws Exception {
        FastTierRemoteLogMetadataManager r = rlmm();
        rsm();
        r.onPartitionLeadershipChanges(partitions("orders", 0, 1), Collections.emptySet());
        r.close();
        assertEquals(0, FastTierRegistry.leaderCount());
        FastTierRemoteLogMetadataManager again = rlmm();
        again.onPartitionLeadershipChanges(partitions("orders", 5), Collections.emptySet());
        assertEquals(1, FastTierRegistry.leaderCount());
    }

    @Test
    public void withTheFastTierOffTheCallsDoNothing() throws Exception {
        Map<String, Object> off = new HashMap<>();
        off.put("wal.enable", "false");
        rsm(off);
        FastTierRemoteLogMetadataManager r = rlmm();
        r.onPartitionLeadershipChanges(partitions("orders", 0, 1), Collections.emptySet());
        r.onStopPartitions(partitions("orders", 7));
        String status = FastTierRegistry.status();
        assertTrue(status, status.contains("\"enabled\":false"));
        assertEquals(0, statusLeaders());
    }

    // ---------------------------------------------------------------- Kafka 4.2+'s broker-ready callback

    /** The shape of Kafka's BrokerState gauge MBean. */
    public interface GaugeMBean {
        Object getValue();
    }

    private static final class Gauge implements GaugeMBean {
        volatile int value;

        Gauge(int value) {
            this.value = value;
        }

        @Override
        public Object getValue() {
            return (byte) value; // BrokerState.value() is a byte
        }
    }

    private Gauge registerBrokerState(int value) throws Exception {
        brokerStateName = new ObjectName(FastTierRemoteLogMetadataManager.BROKER_STATE_MBEAN);
        Gauge g = new Gauge(value);
        mbeans().registerMBean(new StandardMBean(g, GaugeMBean.class), brokerStateName);
        return g;
    }

    @Test
    public void brokerReadyReachesTheDelegateOnceTheBrokerRuns() throws Exception {
        Gauge state = registerBrokerState(1); // STARTING
        FastTierRemoteLogMetadataManager r = rlmm(rlmmConfig(RecordingRlmm.WithBrokerReady.class));
        RecordingRlmm d = recorder(r);
        Thread.sleep(3 * FastTierRemoteLogMetadataManager.BROKER_READY_POLL_MS);
        assertFalse(d.calls.toString(), d.calls.contains("onBrokerReady"));
        state.value = FastTierRemoteLogMetadataManager.BROKER_STATE_RUNNING;
        awaitCall(d, "onBrokerReady", 10_000);
        assertEquals(1, Collections.frequency(d.calls, "onBrokerReady"));
    }

    @Test
    public void brokerReadyIsCalledAtOnceOutsideABroker() throws Exception {
        RecordingRlmm d = recorder(rlmm(rlmmConfig(RecordingRlmm.WithBrokerReady.class)));
        assertEquals(Arrays.asList("configure", "onBrokerReady"), d.calls);
    }

    @Test
    public void noBrokerReadyAfterClose() throws Exception {
        registerBrokerState(2); // RECOVERY
        FastTierRemoteLogMetadataManager r = rlmm(rlmmConfig(RecordingRlmm.WithBrokerReady.class));
        RecordingRlmm d = recorder(r);
        r.close();
        Thread.sleep(3 * FastTierRemoteLogMetadataManager.BROKER_READY_POLL_MS);
        assertEquals(Arrays.asList("configure", "close"), d.calls);
    }

    @Test
    public void delegatesWithoutTheCallbackNeverGetIt() {
        assertNull(FastTierRemoteLogMetadataManager.brokerReadyMethod(RecordingRlmm.class));
        assertNotNull(FastTierRemoteLogMetadataManager.brokerReadyMethod(RecordingRlmm.WithBrokerReady.class));
    }
}
