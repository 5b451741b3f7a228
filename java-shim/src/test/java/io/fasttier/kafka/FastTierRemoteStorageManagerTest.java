package io.fasttier.kafka;

import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.server.log.remote.storage.LogSegmentData;
import org.apache.kafka.server.log.remote.storage.RemoteLogSegmentId;
import org.apache.kafka.server.log.remote.storage.RemoteLogSegmentMetadata;
import org.apache.kafka.server.log.remote.storage.RemoteResourceNotFoundException;
import org.apache.kafka.server.log.remote.storage.RemoteStorageException;
import org.apache.kafka.server.log.remote.storage.RemoteStorageManager.IndexType;
import org.junit.After;
import org.junit.Assume;
import org.junit.Before;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;
import org.junit.rules.Timeout;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

/**
 * Runs the RSM against the real native library with the native in-memory backend ({@code storage.backend=memory}).
 * The library is loaded the way a broker loads it: extracted from the class path resource
 * {@code native/<os>-<arch>/libfasttier_jni.so} (the build puts it there).
 */
public class FastTierRemoteStorageManagerTest {
    private static final int BROKER_ID = 7;

    @Rule
    public final TemporaryFolder tmp = new TemporaryFolder();

    @Rule
    public final Timeout timeout = Timeout.seconds(120);

    private final List<FastTierRemoteStorageManager> opened = new ArrayList<>();
    private TopicIdPartition tip;

    @Before
    public void setUp() {
        tip = TestSegments.newPartition("fasttier-test", 3);
    }

    @After
    public void tearDown() {
        Thread.interrupted();
        for (FastTierRemoteStorageManager rsm : opened) {
            rsm.close();
        }
    }

    static Map<String, Object> memoryConfig() {
        Map<String, Object> c = new HashMap<>();
        c.put("storage.backend", "memory");
        c.put("broker.id", BROKER_ID); // an Integer, as the broker passes it
        c.put("chunk.bytes", "65536"); // the smallest chunk, so test segments span several chunks
        c.put("cache.bytes", String.valueOf(4 * 65536));
        return c;
    }

    private FastTierRemoteStorageManager open(Map<String, ?> config) {
        FastTierRemoteStorageManager rsm = new FastTierRemoteStorageManager();
        opened.add(rsm);
        rsm.configure(config);
        return rsm;
    }

    private FastTierRemoteStorageManager openMemory() {
        return open(memoryConfig());
    }

    private ConfigException expectConfigError(Map<String, Object> config) {
        FastTierRemoteStorageManager rsm = new FastTierRemoteStorageManager();
        opened.add(rsm);
        try {
            rsm.configure(config);
        } catch (ConfigException e) {
            assertTrue("message must start with 'fasttier: ': " + e.getMessage(), e.getMessage().startsWith("fasttier: "));
            return e;
        }
        fail("configure accepted " + config);
        return null;
    }

    private TestSegments smallSegment() throws IOException {
        // 40 batches of 10 records of 1 KiB: ~420 KiB, several 64 KiB chunks.
        return TestSegments.write(tmp.newFolder("fasttier-test-3").toPath(), 1000, 40, 10, 1024, false);
    }

    private static byte[] readAll(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buf = new byte[10_000]; // deliberately not a power of two
        int n;
        while ((n = in.read(buf, 0, buf.length)) != -1) {
            out.write(buf, 0, n);
        }
        return out.toByteArray();
    }

    private static byte[] slice(byte[] all, int from, int toExclusive) {
        return Arrays.copyOfRange(all, from, toExclusive);
    }

    // ---------------------------------------------------------------- configuration

    @Test
    public void missingBucketWithTheS3BackendNamesTheKey() {
        Map<String, Object> c = new HashMap<>();
        c.put("broker.id", BROKER_ID);
        ConfigException e = expectConfigError(c);
        assertTrue(e.getMessage(), e.getMessage().contains("rsm.config.s3.bucket"));
    }

    @Test
    public void malformedNumberNamesTheKeyAndValue() {
        Map<String, Object> c = memoryConfig();
        c.put("chunk.bytes", "abc");
        ConfigException e = expectConfigError(c);
        assertTrue(e.getMessage(), e.getMessage().contains("rsm.config.chunk.bytes"));
        assertTrue(e.getMessage(), e.getMessage().contains("abc"));
    }

    @Test
    public void unknownKeyIsRejectedByName() {
        Map<String, Object> c = memoryConfig();
        c.put("s3.bukket", "x");
        ConfigException e = expectConfigError(c);
        assertTrue(e.getMessage(), e.getMessage().contains("s3.bukket"));
    }

    @Test
    public void badExplicitLibraryPathIsAnErrorNamingThePath() {
        Map<String, Object> c = memoryConfig();
        c.put("native.library.path", "/nonexistent/fasttier/libfasttier_jni.so");
        ConfigException e = expectConfigError(c);
        assertTrue(e.getMessage(), e.getMessage().contains("/nonexistent/fasttier/libfasttier_jni.so"));
        assertTrue(e.getMessage(), e.getMessage().contains("rsm.config.native.library.path"));
    }

    @Test
    public void libraryIsExtractedUnderItsContentHashAndKeptForReuse() throws IOException {
        openMemory();
        String from = NativeLibraryLoader.loadedFrom();
        assertNotNull(from);
        String tmpDir = System.getProperty(NativeLibraryLoader.TMPDIR_PROPERTY);
        if (tmpDir != null && from.startsWith("plugin jar")) {
            byte[] resource;
            try (java.io.InputStream in = getClass().getClassLoader().getResourceAsStream(NativeLibraryLoader.resourceName())) {
                assertNotNull(in);
                java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
                byte[] buf = new byte[65536];
                int n;
                while ((n = in.read(buf)) > 0) {
                    out.write(buf, 0, n);
                }
                resource = out.toByteArray();
            }
            StringBuilder hex = new StringBuilder();
            try {
                for (byte x : java.security.MessageDigest.getInstance("SHA-256").digest(resource)) {
                    hex.append(String.format("%02x", x));
                }
            } catch (java.security.NoSuchAlgorithmException e) {
                throw new AssertionError(e);
            }
            String name = "libfasttier_jni-" + hex + ".so";
            Path lib = Paths.get(tmpDir, name);
            assertTrue(from, from.contains(lib.toString()));
            // kept (a restart or a second broker reuses it) and byte-identical to the jar's copy
            assertTrue("content-addressed library " + lib + " must stay after load", Files.isRegularFile(lib));
            assertArrayEquals(resource, Files.readAllBytes(lib));
            try (Stream<Path> files = Files.list(Paths.get(tmpDir))) {
                assertEquals("no temporary file may be left behind", 0,
                        files.filter(p -> p.getFileName().toString().endsWith(".tmp")).count());
            }
        }
    }

    @Test
    public void configureTwiceFails() {
        FastTierRemoteStorageManager rsm = openMemory();
        try {
            rsm.configure(memoryConfig());
            fail("second configure accepted");
        } catch (ConfigException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith("fasttier: "));
        }
    }

    // ---------------------------------------------------------------- copy and fetch

    @Test
    public void copyThenFetchSegmentFromStartMiddleAndRange() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = smallSegment();
        RemoteLogSegmentMetadata md = seg.metadata(tip, BROKER_ID);
        LogSegmentData data = seg.data();
        int epochPos = data.leaderEpochIndex().position();

        assertEquals(Optional.empty(), rsm.copyLogSegmentData(md, data));
        assertEquals("leader-epoch buffer position must not move", epochPos, data.leaderEpochIndex().position());

        byte[] file = Files.readAllBytes(seg.log);
        assertEquals(seg.sizeInBytes, file.length);

        try (InputStream in = rsm.fetchLogSegment(md, 0)) {
            assertArrayEquals(file, readAll(in));
        }
        int middle = file.length / 2 + 13;
        try (InputStream in = rsm.fetchLogSegment(md, middle)) {
            assertArrayEquals(slice(file, middle, file.length), readAll(in));
        }
        // A broker-style partial read: a little data, then close.
        try (InputStream in = rsm.fetchLogSegment(md, 65530)) {
            byte[] head = new byte[20];
            int n = 0;
            while (n < head.length) {
                int r = in.read(head, n, head.length - n);
                assertTrue(r > 0);
                n += r;
            }
            assertArrayEquals(slice(file, 65530, 65550), head);
        }
        // Both ends inclusive.
        int start = 100_000;
        int end = 200_000;
        try (InputStream in = rsm.fetchLogSegment(md, start, end)) {
            assertArrayEquals(slice(file, start, end + 1), readAll(in));
        }
        try (InputStream in = rsm.fetchLogSegment(md, file.length - 1, file.length - 1)) {
            assertArrayEquals(slice(file, file.length - 1, file.length), readAll(in));
        }
    }

    @Test
    public void streamSingleByteReadsSkipAvailableAndClose() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = smallSegment();
        RemoteLogSegmentMetadata md = seg.metadata(tip, BROKER_ID);
        rsm.copyLogSegmentData(md, seg.data());
        byte[] file = Files.readAllBytes(seg.log);

        InputStream in = rsm.fetchLogSegment(md, 5);
        assertEquals(file[5] & 0xff, in.read());
        assertEquals(file[6] & 0xff, in.read());
        assertTrue(in.available() >= 0);
        assertEquals(70_000, in.skip(70_000));
        assertEquals(file[7 + 70_000] & 0xff, in.read());
        assertEquals(0, in.read(new byte[4], 0, 0));
        in.close();
        in.close(); // idempotent
        try {
            in.read();
            fail("read after close");
        } catch (IOException expected) {
            assertTrue(expected.getMessage(), expected.getMessage().contains("closed"));
        }
        try {
            in.read(new byte[10], 0, 10);
            fail("read after close");
        } catch (IOException expected) {
            // ok
        }
        try {
            in.available();
            fail("available after close");
        } catch (IOException expected) {
            // ok
        }

        // Reading to the end returns -1, repeatedly.
        try (InputStream tail = rsm.fetchLogSegment(md, file.length - 3)) {
            assertEquals(file[file.length - 3] & 0xff, tail.read());
            assertEquals(2, tail.skip(100));
            assertEquals(-1, tail.read());
            assertEquals(-1, tail.read(new byte[8], 0, 8));
        }
    }

    @Test
    public void fetchIndexReturnsEachIndexAndTransactionIsNotFoundWhenAbsent() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = smallSegment();
        RemoteLogSegmentMetadata md = seg.metadata(tip, BROKER_ID);
        rsm.copyLogSegmentData(md, seg.data());

        assertArrayEquals(Files.readAllBytes(seg.offsetIndex), readAll(rsm.fetchIndex(md, IndexType.OFFSET)));
        assertArrayEquals(Files.readAllBytes(seg.timeIndex), readAll(rsm.fetchIndex(md, IndexType.TIMESTAMP)));
        assertArrayEquals(Files.readAllBytes(seg.producerSnapshot),
                readAll(rsm.fetchIndex(md, IndexType.PRODUCER_SNAPSHOT)));
        assertArrayEquals(seg.leaderEpochCheckpoint, readAll(rsm.fetchIndex(md, IndexType.LEADER_EPOCH)));
        try {
            rsm.fetchIndex(md, IndexType.TRANSACTION);
            fail("a segment without a transaction index must not return one");
        } catch (RemoteResourceNotFoundException expected) {
            // what RemoteIndexCache expects
        }
    }

    @Test
    public void transactionIndexAndEmptyIndexesRoundTrip() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = TestSegments.write(tmp.newFolder("txn").toPath(), 0, 3, 2, 100, true);
        // Empty offset/time indexes are legal (trimmed indexes of a tiny segment).
        Files.write(seg.offsetIndex, new byte[0]);
        Files.write(seg.timeIndex, new byte[0]);
        RemoteLogSegmentMetadata md = seg.metadata(tip, BROKER_ID);
        rsm.copyLogSegmentData(md, seg.data());
        assertArrayEquals(Files.readAllBytes(seg.txnIndex), readAll(rsm.fetchIndex(md, IndexType.TRANSACTION)));
        assertEquals(0, readAll(rsm.fetchIndex(md, IndexType.OFFSET)).length);
        assertEquals(0, readAll(rsm.fetchIndex(md, IndexType.TIMESTAMP)).length);
        try (InputStream in = rsm.fetchLogSegment(md, 0)) {
            assertArrayEquals(Files.readAllBytes(seg.log), readAll(in));
        }
    }

    @Test
    public void fetchOfUnknownSegmentIsNotFound() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = smallSegment();
        RemoteLogSegmentMetadata never = seg.metadata(tip, BROKER_ID);
        try {
            rsm.fetchIndex(never, IndexType.OFFSET);
            fail("fetchIndex of a segment never copied");
        } catch (RemoteResourceNotFoundException expected) {
            // ok
        }
        expectSegmentNotFound(rsm, never);
    }

    private static void expectSegmentNotFound(FastTierRemoteStorageManager rsm, RemoteLogSegmentMetadata md)
            throws Exception {
        InputStream in = null;
        try {
            in = rsm.fetchLogSegment(md, 0);
            fail("fetchLogSegment must throw RemoteResourceNotFoundException for a missing segment");
        } catch (RemoteResourceNotFoundException expected) {
            // ok
        } finally {
            if (in != null) {
                in.close();
            }
        }
    }

    @Test
    public void deleteThenFetchIsNotFoundAndDeleteIsIdempotent() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = smallSegment();
        RemoteLogSegmentMetadata md = seg.metadata(tip, BROKER_ID);
        rsm.copyLogSegmentData(md, seg.data());
        try (InputStream in = rsm.fetchLogSegment(md, 0)) {
            assertEquals(Files.readAllBytes(seg.log)[0] & 0xff, in.read());
        }

        rsm.deleteLogSegmentData(md);
        for (IndexType t : IndexType.values()) {
            try {
                rsm.fetchIndex(md, t);
                fail(t + " index still there after delete");
            } catch (RemoteResourceNotFoundException expected) {
                // ok
            }
        }
        expectSegmentNotFound(rsm, md);
        rsm.deleteLogSegmentData(md); // twice: fine
        rsm.deleteLogSegmentData(seg.metadata(tip, BROKER_ID)); // never copied: fine
    }

    @Test
    public void twoCopyAttemptsOfTheSameSegmentAreIndependent() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = smallSegment();
        RemoteLogSegmentMetadata first = seg.metadata(tip, BROKER_ID);
        RemoteLogSegmentMetadata second = seg.metadata(tip, BROKER_ID);
        rsm.copyLogSegmentData(first, seg.data());
        rsm.copyLogSegmentData(second, seg.data());
        rsm.deleteLogSegmentData(first);
        try (InputStream in = rsm.fetchLogSegment(second, 0)) {
            assertArrayEquals(Files.readAllBytes(seg.log), readAll(in));
        }
    }

    // ---------------------------------------------------------------- interrupts

    @Test
    public void interruptedCopyIsCancelledAndKeepsTheInterruptFlag() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = smallSegment();
        RemoteLogSegmentMetadata md = seg.metadata(tip, BROKER_ID);
        // Deterministic: the flag is already set when the copy starts, so the shim sees it before its first
        // wait, cancels the native operation and fails.
        Thread.currentThread().interrupt();
        try {
            rsm.copyLogSegmentData(md, seg.data());
            fail("copy succeeded although the thread was interrupted");
        } catch (RemoteStorageException e) {
            assertTrue(e.getMessage(), e.getMessage().startsWith("fasttier: copy interrupted"));
            assertTrue("interrupt flag must stay set", Thread.currentThread().isInterrupted());
        } finally {
            Thread.interrupted();
        }
        // The cancelled attempt left nothing readable behind, and can be deleted like Kafka does.
        try {
            rsm.fetchIndex(md, IndexType.OFFSET);
            fail("a cancelled copy must not leave a readable segment");
        } catch (RemoteResourceNotFoundException expected) {
            // ok
        }
        rsm.deleteLogSegmentData(md);
        // The engine is still healthy.
        RemoteLogSegmentMetadata retry = seg.metadata(tip, BROKER_ID);
        rsm.copyLogSegmentData(retry, seg.data());
        try (InputStream in = rsm.fetchLogSegment(retry, 0)) {
            assertArrayEquals(Files.readAllBytes(seg.log), readAll(in));
        }
    }

    @Test
    public void interruptDuringARunningCopy() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        // 384 MiB (sparse): large enough that the copy is still running when the interrupt lands.
        TestSegments big = TestSegments.sparse(tmp.newFolder("big").toPath(), 0, 384 << 20);
        RemoteLogSegmentMetadata md = big.metadata(tip, BROKER_ID);
        AtomicReference<Throwable> outcome = new AtomicReference<>();
        AtomicReference<Boolean> flagAfter = new AtomicReference<>();
        CountDownLatch started = new CountDownLatch(1);
        Thread copier = new Thread(() -> {
            started.countDown();
            try {
                rsm.copyLogSegmentData(md, big.data());
            } catch (Throwable t) {
                outcome.set(t);
            }
            flagAfter.set(Thread.currentThread().isInterrupted());
        }, "test-copier");
        copier.start();
        assertTrue(started.await(10, TimeUnit.SECONDS));
        // Keep interrupting (as a cancelled task's thread stays interrupted) until the copy returns.
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (copier.isAlive() && System.nanoTime() < deadline) {
            copier.interrupt();
            copier.join(1);
        }
        assertFalse("copy did not return after interrupt", copier.isAlive());
        Assume.assumeTrue("copy finished before the interrupt landed", outcome.get() != null);
        assertTrue(String.valueOf(outcome.get()), outcome.get() instanceof RemoteStorageException);
        assertTrue(outcome.get().getMessage(), outcome.get().getMessage().startsWith("fasttier: copy interrupted"));
        assertEquals(Boolean.TRUE, flagAfter.get());
    }

    @Test
    public void closeCancelsARunningCopy() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments big = TestSegments.sparse(tmp.newFolder("big-close").toPath(), 0, 384 << 20);
        RemoteLogSegmentMetadata md = big.metadata(tip, BROKER_ID);
        AtomicReference<Throwable> outcome = new AtomicReference<>();
        CountDownLatch started = new CountDownLatch(1);
        Thread copier = new Thread(() -> {
            started.countDown();
            try {
                rsm.copyLogSegmentData(md, big.data());
            } catch (Throwable t) {
                outcome.set(t);
            }
        }, "test-copier-close");
        copier.start();
        assertTrue(started.await(10, TimeUnit.SECONDS));
        rsm.close();
        copier.join(60_000);
        assertFalse("copy did not return after close", copier.isAlive());
        Assume.assumeTrue("copy finished before close", outcome.get() != null);
        assertTrue(String.valueOf(outcome.get()), outcome.get() instanceof RemoteStorageException);
        assertTrue(outcome.get().getMessage(), outcome.get().getMessage().startsWith("fasttier: closed"));
    }

    // ---------------------------------------------------------------- close

    @Test
    public void closeIsIdempotentAndLaterCallsFailClearly() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = smallSegment();
        RemoteLogSegmentMetadata md = seg.metadata(tip, BROKER_ID);
        rsm.copyLogSegmentData(md, seg.data());
        InputStream open = rsm.fetchLogSegment(md, 0);
        rsm.close();
        rsm.close();
        open.close(); // a stream outliving its engine can still be closed

        List<ThrowingCall> calls = Arrays.asList(
                () -> rsm.copyLogSegmentData(seg.metadata(tip, BROKER_ID), seg.data()),
                () -> rsm.fetchLogSegment(md, 0),
                () -> rsm.fetchLogSegment(md, 0, 10),
                () -> rsm.fetchIndex(md, IndexType.OFFSET),
                () -> rsm.deleteLogSegmentData(md));
        for (ThrowingCall call : calls) {
            try {
                call.run();
                fail("call after close succeeded");
            } catch (RemoteStorageException e) {
                assertEquals("fasttier: closed", e.getMessage());
            }
        }
    }

    @Test
    public void closeWithoutConfigureAndCallsBeforeConfigure() throws Exception {
        FastTierRemoteStorageManager rsm = new FastTierRemoteStorageManager();
        TestSegments seg = smallSegment();
        try {
            rsm.fetchIndex(seg.metadata(tip, BROKER_ID), IndexType.OFFSET);
            fail("call before configure succeeded");
        } catch (RemoteStorageException e) {
            assertEquals("fasttier: not configured", e.getMessage());
        }
        rsm.close();
        rsm.close();
    }

    interface ThrowingCall {
        void run() throws Exception;
    }

    // ---------------------------------------------------------------- logs and metrics

    @Test
    public void oneLogDrainThreadSharedByInstances() {
        int before = NativeLogDrain.users();
        FastTierRemoteStorageManager a = openMemory();
        FastTierRemoteStorageManager b = openMemory();
        assertEquals(before + 2, NativeLogDrain.users());
        assertTrue(NativeLogDrain.running());
        long threads = Thread.getAllStackTraces().keySet().stream()
                .filter(t -> t.getName().equals(NativeLogDrain.THREAD_NAME)).count();
        assertEquals(1, threads);
        a.close();
        assertTrue("b still holds the drain", NativeLogDrain.running());
        b.close();
        b.close();
        assertEquals(before, NativeLogDrain.users());
        if (before == 0) {
            assertFalse(NativeLogDrain.running());
        }
    }

    @Test
    public void metricsRegisteredBeforeAndAfterConfigure() throws Exception {
        RecordingPluginMetrics early = new RecordingPluginMetrics();
        FastTierRemoteStorageManager rsm = new FastTierRemoteStorageManager();
        opened.add(rsm);
        rsm.withPluginMetrics(early); // before configure: registered lazily
        assertEquals(0, early.metrics.size());
        rsm.configure(memoryConfig());
        String[] descriptors = io.fasttier.kafka.jni.NativeBridge.metricDescriptors();
        assertTrue("the native library should describe some metrics", descriptors.length > 0);
        assertEquals(descriptors.length, early.metrics.size());

        TestSegments seg = smallSegment();
        rsm.copyLogSegmentData(seg.metadata(tip, BROKER_ID), seg.data());
        long sum = 0;
        for (String d : descriptors) {
            String name = d.split("\\|", 2)[0];
            Object v = early.value(name);
            assertTrue(name + " = " + v, v instanceof Long && (Long) v >= 0);
            sum += (Long) v;
        }
        assertTrue("a copy must move some native counter", sum > 0);

        RecordingPluginMetrics late = new RecordingPluginMetrics();
        FastTierRemoteStorageManager other = openMemory();
        other.withPluginMetrics(late);
        assertEquals(descriptors.length, late.metrics.size());

        rsm.close();
        // After close, values come from the last snapshot without touching the native engine.
        for (String d : descriptors) {
            early.value(d.split("\\|", 2)[0]);
        }
    }

    @Test
    public void stringValuesOfAllTypesArePassed() {
        Map<String, Object> c = memoryConfig();
        c.put("read.ahead.chunks", 2); // an Integer: converted with String.valueOf
        c.put("prefix", new StringBuilder("cluster-a"));
        FastTierRemoteStorageManager rsm = open(c);
        assertNotNull(rsm);
    }

    @Test
    public void leaderEpochCheckpointIsStoredVerbatim() throws Exception {
        FastTierRemoteStorageManager rsm = openMemory();
        TestSegments seg = smallSegment();
        RemoteLogSegmentMetadata md = seg.metadata(
                new RemoteLogSegmentId(tip, Uuid.randomUuid()), BROKER_ID);
        byte[] checkpoint = "0\n2\n0 1000\n1 1200\n".getBytes(StandardCharsets.UTF_8);
        ByteBuffer withPrefix = ByteBuffer.allocate(checkpoint.length + 5);
        withPrefix.put(new byte[5]).put(checkpoint).flip();
        withPrefix.position(5);
        LogSegmentData data = new LogSegmentData(seg.log, seg.offsetIndex, seg.timeIndex, Optional.empty(),
                seg.producerSnapshot, withPrefix);
        rsm.copyLogSegmentData(md, data);
        assertEquals(5, withPrefix.position());
        assertArrayEquals(checkpoint, readAll(rsm.fetchIndex(md, IndexType.LEADER_EPOCH)));
    }
}
