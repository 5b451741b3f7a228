package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeBridge;
import io.fasttier.kafka.jni.NativeConfigException;
import io.fasttier.kafka.jni.NativeFatalException;
import io.fasttier.kafka.jni.NativeNotFoundException;
import io.fasttier.kafka.jni.NativeRetriableException;

import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.server.log.remote.storage.RemoteResourceNotFoundException;
import org.apache.kafka.server.log.remote.storage.RemoteStorageException;
import org.apache.kafka.server.log.remote.storage.RemoteStorageManager.IndexType;
import org.junit.Test;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;

/** Tests of the shim's Java-only logic: no native library needed. */
public class PureJavaTest {

    @Test
    public void indexTypesMapExplicitlyAndMatchKafkaDeclarationOrder() throws Exception {
        assertEquals(NativeBridge.INDEX_OFFSET, FastTierRemoteStorageManager.nativeIndexType(IndexType.OFFSET));
        assertEquals(NativeBridge.INDEX_TIMESTAMP, FastTierRemoteStorageManager.nativeIndexType(IndexType.TIMESTAMP));
        assertEquals(NativeBridge.INDEX_PRODUCER_SNAPSHOT,
                FastTierRemoteStorageManager.nativeIndexType(IndexType.PRODUCER_SNAPSHOT));
        assertEquals(NativeBridge.INDEX_TRANSACTION, FastTierRemoteStorageManager.nativeIndexType(IndexType.TRANSACTION));
        assertEquals(NativeBridge.INDEX_LEADER_EPOCH, FastTierRemoteStorageManager.nativeIndexType(IndexType.LEADER_EPOCH));
        // NativeBridge documents "numbered as in IndexType declaration order": hold Kafka 4.1.2 to that.
        for (IndexType t : IndexType.values()) {
            assertEquals(t.name(), t.ordinal(), FastTierRemoteStorageManager.nativeIndexType(t));
        }
        assertEquals(5, IndexType.values().length);
    }

    @Test
    public void nativeErrorsMapToKafkaTypesWithTheNativeMessage() {
        String msg = "object not found: key=t/abc/0/seg.log";
        RemoteStorageException nf = RemoteErrors.toRemote(new NativeNotFoundException(msg));
        assertSame(RemoteResourceNotFoundException.class, nf.getClass());
        assertEquals(msg, nf.getMessage());

        RemoteStorageException fatal = RemoteErrors.toRemote(new NativeFatalException(msg));
        assertSame(RemoteStorageException.class, fatal.getClass());
        assertEquals(msg, fatal.getMessage());

        // RetriableRemoteStorageException exists from Kafka 4.2 (the `test` task runs on 4.1.2 jars,
        // `testKafkaLatest` on the newest supported line).
        Class<?> retriableClass;
        try {
            retriableClass = Class.forName(RemoteErrors.RETRIABLE_CLASS_NAME);
        } catch (ClassNotFoundException e) {
            retriableClass = null;
        }
        assertEquals(retriableClass != null, RemoteErrors.hasRetriable());
        RemoteStorageException retriable = RemoteErrors.toRemote(new NativeRetriableException(msg));
        assertSame(retriableClass != null ? retriableClass : RemoteStorageException.class, retriable.getClass());
        assertEquals(msg, retriable.getMessage());
    }

    @Test
    public void openErrorsGiveOneClearMessage() {
        String msg = "key=rsm.config.s3.bucket is required";
        KafkaException config = RemoteErrors.toConfigure(new NativeConfigException(msg));
        assertTrue(config instanceof ConfigException);
        assertEquals("fasttier: " + msg, config.getMessage());
        assertEquals(null, config.getCause());

        KafkaException other = RemoteErrors.toConfigure(new NativeRetriableException("bucket unreachable"));
        assertFalse(other instanceof ConfigException);
        assertTrue(other.getMessage().startsWith("fasttier: "));
        assertTrue(other.getMessage().endsWith("bucket unreachable"));
    }

    @Test
    public void leaderEpochBufferIsCopiedWithoutMovingIt() {
        ByteBuffer buf = ByteBuffer.wrap("xx0\n1\n0 0\n".getBytes(StandardCharsets.UTF_8));
        buf.position(2);
        byte[] copy = FastTierRemoteStorageManager.remainingBytes(buf);
        assertArrayEquals("0\n1\n0 0\n".getBytes(StandardCharsets.UTF_8), copy);
        assertEquals(2, buf.position());
        assertEquals(0, FastTierRemoteStorageManager.remainingBytes(null).length);
    }

    @Test
    public void nativeLogTargetsBecomeDottedLoggerNames() {
        assertEquals("io.fasttier.native.fasttier_core.upload",
                NativeLogDrain.loggerFor("fasttier_core::upload").getName());
        assertEquals("io.fasttier.native", NativeLogDrain.loggerFor("").getName());
        // malformed records are still logged, never thrown
        NativeLogDrain.emit("no separators at all");
        NativeLogDrain.emit("INFO|fasttier_jni|message with | a pipe");
        NativeLogDrain.emit(null);
    }

    @Test
    public void metricDescriptorsParse() {
        List<NativeMetrics.Descriptor> d = NativeMetrics.parse(new String[] {
                "upload-bytes-total|counter|Bytes uploaded", "cache-bytes|gauge|Bytes in | cache", "bare"});
        assertEquals(3, d.size());
        assertEquals("upload-bytes-total", d.get(0).name);
        assertEquals("counter", d.get(0).type);
        assertEquals("Bytes in | cache", d.get(1).description);
        assertEquals("bare", d.get(2).name);
        assertEquals("gauge", d.get(2).type);
    }

    @Test
    public void metricValuesAreCachedForASecond() {
        int[] calls = {0};
        NativeMetrics m = new NativeMetrics(() -> {
            calls[0]++;
            return new long[] {calls[0], 10L * calls[0]};
        });
        assertEquals(1L, m.value(0));
        assertEquals(10L, m.value(1));
        assertEquals(0L, m.value(7));
        assertEquals(1, calls[0]);
        NativeMetrics closed = new NativeMetrics(() -> null);
        assertEquals(0L, closed.value(0));
    }

    @Test
    public void platformDirectoryMatchesTheJarLayout() {
        String os = System.getProperty("os.name").toLowerCase();
        String arch = System.getProperty("os.arch");
        if (os.startsWith("linux") && (arch.equals("amd64") || arch.equals("x86_64"))) {
            assertEquals("linux-x86_64", NativeLibraryLoader.platformDirectory());
            assertEquals("native/linux-x86_64/libfasttier_jni.so", NativeLibraryLoader.resourceName());
        }
    }
}
