package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeBridge;
import io.fasttier.kafka.jni.NativeException;

import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.config.types.Password;
import org.apache.kafka.common.metrics.Monitorable;
import org.apache.kafka.common.metrics.PluginMetrics;
import org.apache.kafka.server.log.remote.storage.LogSegmentData;
import org.apache.kafka.server.log.remote.storage.RemoteLogSegmentMetadata;
import org.apache.kafka.server.log.remote.storage.RemoteResourceNotFoundException;
import org.apache.kafka.server.log.remote.storage.RemoteStorageException;
import org.apache.kafka.server.log.remote.storage.RemoteStorageManager;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Map;
import java.util.NavigableMap;
import java.util.Objects;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * fasttier's KIP-405 {@link RemoteStorageManager}: a thin shim over the native library {@code libfasttier_jni}.
 *
 * <p>Broker configuration: {@code remote.log.storage.manager.class.name=io.fasttier.kafka.FastTierRemoteStorageManager}
 * and the plugin settings as {@code rsm.config.*} (see {@code config/broker-example.properties}).
 *
 * <p>Error mapping (native → Kafka): not found → {@link RemoteResourceNotFoundException}; transient →
 * {@code RetriableRemoteStorageException} on Kafka 4.2+, else {@link RemoteStorageException}; anything else →
 * {@link RemoteStorageException}. Messages are the native ones (they name the object key). In
 * {@link #configure}, a configuration error becomes a {@link ConfigException} and any other failure a
 * {@link KafkaException}, both starting with {@code "fasttier: "}.
 *
 * <p>Thread safety: every method may be called concurrently (copier, reader and expiration pools). Short native
 * calls hold a read lock on the engine handle; {@link #close()} takes the write lock, so the handle is never
 * freed under a running call. A copy waits for its native operation outside that lock, so closing cancels
 * running copies instead of waiting for them.
 */
public class FastTierRemoteStorageManager implements RemoteStorageManager, Monitorable {
    private static final Logger LOG = LoggerFactory.getLogger(FastTierRemoteStorageManager.class);

    /** How long one {@link NativeBridge#opAwait} waits before the interrupt flag is checked again. */
    static final int AWAIT_SLICE_MS = 200;

    /** How long {@link #close()} waits for running calls (already interrupted) before it gives up on them. */
    static final long CLOSE_LOCK_WAIT_MS = 2_000;

    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    /** Set first thing in {@link #close()}: new calls fail at once instead of queueing behind it. */
    private volatile boolean closing;
    // guarded by lock
    private long engine;
    private boolean configured;
    private boolean closed;
    private boolean drainAcquired;

    private final Object metricsLock = new Object();
    // guarded by metricsLock
    private PluginMetrics pluginMetrics;
    private boolean metricsRegistered;
    /** Per-partition metrics of replication through the fast tier, refreshed by {@link #replicationTimer}. */
    private ReplicationMetrics replicationMetrics;
    private java.util.concurrent.ScheduledExecutorService replicationTimer;
    /** Whether {@code replication.fast.enable} is set. */
    private volatile boolean fastReplication;
    private final NativeMetrics nativeMetrics = new NativeMetrics(this::readMetrics);

    /** Segment coordinates as the native side wants them. */
    private static final class Coordinates {
        final String topic;
        final String topicId;
        final int partition;
        final String segmentId;
        final long startOffset;

        Coordinates(RemoteLogSegmentMetadata metadata) {
            Objects.requireNonNull(metadata, "remoteLogSegmentMetadata");
            TopicIdPartition tip = metadata.remoteLogSegmentId().topicIdPartition();
            this.topic = tip.topic();
            this.topicId = tip.topicId().toString();
            this.partition = tip.partition();
            this.segmentId = metadata.remoteLogSegmentId().id().toString();
            this.startOffset = metadata.startOffset();
        }

        @Override
        public String toString() {
            return topic + "-" + partition + " segment " + segmentId + " (start offset " + startOffset + ")";
        }
    }

    @FunctionalInterface
    private interface EngineCall<T> {
        T call(long engine);
    }

    public FastTierRemoteStorageManager() {}

    /**
     * Loads the native library and opens the engine. {@code configs} are the broker's {@code rsm.config.*}
     * properties with the prefix stripped, plus {@code broker.id}. Every value is passed to the native side as
     * a string, except {@value NativeLibraryLoader#CONFIG_KEY}, which only the Java side uses.
     *
     * @throws ConfigException if a setting is invalid (the message names the key) or the library path is unusable
     * @throws KafkaException  if the library cannot be loaded or the remote store cannot be opened
     */
    @Override
    public void configure(Map<String, ?> configs) {
        Objects.requireNonNull(configs, "configs");
        TreeMap<String, String> settings = new TreeMap<>();
        for (Map.Entry<String, ?> e : configs.entrySet()) {
            if (e.getKey() == null || e.getValue() == null) {
                continue;
            }
            Object v = e.getValue();
            settings.put(e.getKey(), v instanceof Password ? ((Password) v).value() : String.valueOf(v));
        }
        String libraryPath = settings.remove(NativeLibraryLoader.CONFIG_KEY);
        String allowNewer = settings.remove(KafkaVersionCheck.ALLOW_NEWER_KEY);
        String kafkaVersion = KafkaVersionCheck.brokerVersion();
        String versionWarning = KafkaVersionCheck.check(kafkaVersion,
                allowNewer != null && "true".equalsIgnoreCase(allowNewer.trim()));
        if (versionWarning != null) {
            LOG.warn(versionWarning);
        }
        fastReplication = "true".equalsIgnoreCase(settings.getOrDefault("replication.fast.enable", "false").trim());
        String[] keys = settings.keySet().toArray(new String[0]);
        String[] values = settings.values().toArray(new String[0]);

        String version;
        lock.writeLock().lock();
        try {
            if (closed) {
                throw new ConfigException("fasttier: configure called on a closed remote storage manager");
            }
            if (configured) {
                throw new ConfigException("fasttier: configure called twice");
            }
            version = NativeLibraryLoader.load(libraryPath);
            NativeLogDrain.acquire();
            long handle;
            try {
                LOG.debug("fasttier: opening engine with keys {}", settings.keySet());
                handle = NativeBridge.open(keys, values);
            } catch (NativeException e) {
                NativeLogDrain.release();
                throw RemoteErrors.toConfigure(e);
            } catch (RuntimeException | Error e) {
                NativeLogDrain.release();
                throw e;
            }
            if (handle == 0) {
                NativeLogDrain.release();
                throw new KafkaException("fasttier: the native library returned no engine");
            }
            engine = handle;
            drainAcquired = true;
            configured = true;
            // the fast tier learns leadership from fasttier's RLMM (FastTierRegistry), in either order
            FastTierRegistry.register(handle);
        } finally {
            lock.writeLock().unlock();
        }
        LOG.info("fasttier: remote storage manager ready (native {}, Kafka {}, broker.id={}, retriable errors as {})",
                version, kafkaVersion, settings.getOrDefault("broker.id", "?"),
                RemoteErrors.hasRetriable() ? "RetriableRemoteStorageException" : "RemoteStorageException");
        maybeRegisterMetrics();
    }

    /** KIP-877: registers the native metrics (now, or right after {@link #configure} if called before it). */
    @Override
    public void withPluginMetrics(PluginMetrics metrics) {
        synchronized (metricsLock) {
            this.pluginMetrics = metrics;
        }
        maybeRegisterMetrics();
    }

    private void maybeRegisterMetrics() {
        synchronized (metricsLock) {
            if (pluginMetrics == null || metricsRegistered) {
                return;
            }
            lock.readLock().lock();
            try {
                if (!configured || closed) {
                    return;
                }
            } finally {
                lock.readLock().unlock();
            }
            metricsRegistered = true;
            try {
                nativeMetrics.register(pluginMetrics);
            } catch (NativeException | UnsatisfiedLinkError e) {
                LOG.warn("fasttier: native metrics unavailable: {}", e.getMessage());
            }
            if (fastReplication) {
                replicationMetrics = new ReplicationMetrics(pluginMetrics, this::readReplicationRows);
                replicationTimer = java.util.concurrent.Executors.newSingleThreadScheduledExecutor(r -> {
                    Thread t = new Thread(r, "fasttier-replication-metrics");
                    t.setDaemon(true);
                    return t;
                });
                ReplicationMetrics rm = replicationMetrics;
                replicationTimer.scheduleWithFixedDelay(() -> {
                    try {
                        rm.refresh();
                    } catch (RuntimeException | LinkageError e) {
                        LOG.warn("fasttier: refreshing replication metrics failed: {}", e.toString());
                    }
                }, 0, REPLICATION_METRICS_REFRESH_MS, java.util.concurrent.TimeUnit.MILLISECONDS);
                LOG.info("fasttier: per-partition replication metrics every {} ms", REPLICATION_METRICS_REFRESH_MS);
            }
        }
    }

    /** How often the per-partition replication metrics are refreshed. */
    static final long REPLICATION_METRICS_REFRESH_MS = 15_000;

    /** Native per-partition replication rows, or null if the engine is closed or busy closing. Never blocks. */
    private String[] readReplicationRows() {
        return whileOpen(() -> NativeBridge.replicationPartitions(engine));
    }

    /** {@code read}'s result while the engine is open; null if it is closed or busy closing. Never blocks. */
    private <T> T whileOpen(java.util.function.Supplier<T> read) {
        if (!lock.readLock().tryLock()) {
            return null;
        }
        try {
            if (closed || !configured) {
                return null;
            }
            return read.get();
        } finally {
            lock.readLock().unlock();
        }
    }

    /** Current native metric values, or null if the engine is closed or busy closing. Never blocks. */
    private long[] readMetrics() {
        return whileOpen(() -> NativeBridge.metrics(engine));
    }

    @Override
    public Optional<RemoteLogSegmentMetadata.CustomMetadata> copyLogSegmentData(RemoteLogSegmentMetadata metadata,
                                                                              LogSegmentData data)
            throws RemoteStorageException {
        Objects.requireNonNull(data, "logSegmentData");
        Coordinates c = new Coordinates(metadata);

        NavigableMap<Integer, Long> leaderEpochs = new TreeMap<>(metadata.segmentLeaderEpochs());
        int[] epochs = new int[leaderEpochs.size()];
        long[] epochStartOffsets = new long[leaderEpochs.size()];
        int i = 0;
        for (Map.Entry<Integer, Long> e : leaderEpochs.entrySet()) {
            epochs[i] = e.getKey();
            epochStartOffsets[i] = e.getValue();
            i++;
        }
        String logPath = pathOf(data.logSegment());
        String offsetIndexPath = pathOf(data.offsetIndex());
        String timeIndexPath = pathOf(data.timeIndex());
        String txnIndexPath = data.transactionIndex().map(FastTierRemoteStorageManager::pathOf).orElse(null);
        String producerSnapshotPath = pathOf(data.producerSnapshotIndex());
        byte[] checkpoint = remainingBytes(data.leaderEpochIndex());

        long op = withEngine(engine -> NativeBridge.copyStart(engine, c.topic, c.topicId, c.partition, c.segmentId,
                c.startOffset, metadata.endOffset(), metadata.maxTimestampMs(), metadata.brokerId(),
                metadata.segmentSizeInBytes(), epochs, epochStartOffsets, logPath, offsetIndexPath, timeIndexPath,
                txnIndexPath, producerSnapshotPath, checkpoint));
        awaitCopy(op, c);
        LOG.debug("fasttier: copied {}", c);
        return Optional.empty();
    }

    /**
     * Waits for a copy in slices of {@link #AWAIT_SLICE_MS}. Kafka interrupts the copier thread when leadership
     * moves: the operation is then cancelled (the native side removes partial uploads), the interrupt flag stays
     * set and the copy fails with a {@link RemoteStorageException}.
     */
    private void awaitCopy(long op, Coordinates c) throws RemoteStorageException {
        boolean live = true; // the native op handle still needs opAwait(true)/opAwait(throws)/opCancel
        try {
            while (true) {
                if (Thread.currentThread().isInterrupted()) {
                    live = false;
                    // opCancel also removes what the copy wrote, even if it completed just before: Kafka skips
                    // its own clean-up of a copy cancelled by a leadership change (its delete predicate is
                    // !isCancelled()).
                    cancelQuietly(op, c);
                    throw new RemoteStorageException("fasttier: copy interrupted; cancelled the upload of " + c);
                }
                if (isClosed()) {
                    live = false;
                    cancelQuietly(op, c);
                    throw new RemoteStorageException("fasttier: closed; cancelled the upload of " + c);
                }
                boolean done;
                try {
                    done = NativeBridge.opAwait(op, AWAIT_SLICE_MS);
                } catch (NativeException e) {
                    live = false;
                    if (isClosed()) {
                        // close() cancelled the operation under us; say so rather than "unknown handle"
                        throw new RemoteStorageException("fasttier: closed; cancelled the upload of " + c);
                    }
                    // Kafka logs a failed copy without its cause (4.4: at INFO), so name it here.
                    LOG.warn("fasttier: copy of {} failed: {}", c, RemoteErrors.messageOf(e));
                    throw RemoteErrors.toRemote(e);
                }
                if (done) {
                    live = false;
                    return;
                }
            }
        } finally {
            if (live) {
                cancelQuietly(op, c);
            }
        }
    }

    private static void cancelQuietly(long op, Coordinates c) {
        try {
            NativeBridge.opCancel(op);
        } catch (NativeException e) {
            LOG.warn("fasttier: cancelling the upload of {} failed: {}", c, RemoteErrors.messageOf(e));
        }
    }

    @Override
    public InputStream fetchLogSegment(RemoteLogSegmentMetadata metadata, int startPosition)
            throws RemoteStorageException {
        return openStream(metadata, startPosition, -1);
    }

    @Override
    public InputStream fetchLogSegment(RemoteLogSegmentMetadata metadata, int startPosition, int endPosition)
            throws RemoteStorageException {
        if (endPosition < startPosition) {
            throw new RemoteStorageException("fasttier: invalid range: end position " + endPosition
                    + " is before start position " + startPosition);
        }
        return openStream(metadata, startPosition, endPosition);
    }

    private InputStream openStream(RemoteLogSegmentMetadata metadata, int startPosition, int endInclusive)
            throws RemoteStorageException {
        Coordinates c = new Coordinates(metadata);
        if (startPosition < 0) {
            throw new RemoteStorageException("fasttier: invalid start position " + startPosition + " for " + c);
        }
        long stream = withEngineForConsumer(engine -> NativeBridge.streamOpen(engine, c.topic, c.topicId, c.partition,
                c.segmentId, c.startOffset, startPosition, endInclusive));
        return new NativeSegmentInputStream(stream, c + " from position " + startPosition);
    }

    @Override
    public InputStream fetchIndex(RemoteLogSegmentMetadata metadata, IndexType indexType) throws RemoteStorageException {
        Objects.requireNonNull(indexType, "indexType");
        Coordinates c = new Coordinates(metadata);
        int nativeType = nativeIndexType(indexType);
        // OFFSET, TIMESTAMP and TRANSACTION are fetched for consumers (RemoteIndexCache); the others for followers.
        boolean forConsumer = indexType == IndexType.OFFSET || indexType == IndexType.TIMESTAMP
                || indexType == IndexType.TRANSACTION;
        byte[] bytes = withEngine(engine -> NativeBridge.fetchIndex(engine, c.topic, c.topicId, c.partition,
                c.segmentId, c.startOffset, nativeType), forConsumer);
        if (bytes == null) {
            throw new RemoteResourceNotFoundException("fasttier: no " + indexType + " index for " + c);
        }
        return new ByteArrayInputStream(bytes);
    }

    /** Explicit mapping (never {@code ordinal()}): checked against Kafka 4.1.2's IndexType. */
    static int nativeIndexType(IndexType indexType) throws RemoteStorageException {
        switch (indexType) {
            case OFFSET:
                return NativeBridge.INDEX_OFFSET;
            case TIMESTAMP:
                return NativeBridge.INDEX_TIMESTAMP;
            case PRODUCER_SNAPSHOT:
                return NativeBridge.INDEX_PRODUCER_SNAPSHOT;
            case TRANSACTION:
                return NativeBridge.INDEX_TRANSACTION;
            case LEADER_EPOCH:
                return NativeBridge.INDEX_LEADER_EPOCH;
            default:
                throw new RemoteStorageException("fasttier: unsupported index type " + indexType);
        }
    }

    /** Deletes the segment's objects; succeeds when they are already gone (idempotent). */
    @Override
    public void deleteLogSegmentData(RemoteLogSegmentMetadata metadata) throws RemoteStorageException {
        Coordinates c = new Coordinates(metadata);
        try {
            withEngine(engine -> {
                NativeBridge.deleteSegment(engine, c.topic, c.topicId, c.partition, c.segmentId, c.startOffset);
                return null;
            });
        } catch (RemoteResourceNotFoundException e) {
            LOG.debug("fasttier: {} already deleted: {}", c, e.getMessage());
        }
    }

    /**
     * Idempotent: cancels running operations, releases the engine, stops the log drain if this was the last
     * user. Bounded whatever the store does (slow, hanging, down): running native calls are interrupted first
     * (they return {@code Cancelled}), the wait for them is at most {@value #CLOSE_LOCK_WAIT_MS} ms (if one is
     * still inside native code then, the engine is left allocated rather than freed under it), and the native
     * close itself is bounded (see docs/operations.md).
     */
    @Override
    public void close() {
        closing = true;
        // Interrupt running calls under the read lock (shared with them, so this never waits for them).
        lock.readLock().lock();
        try {
            if (configured && !closed && engine != 0) {
                try {
                    NativeBridge.interrupt(engine);
                } catch (NativeException | UnsatisfiedLinkError e) {
                    LOG.warn("fasttier: interrupting running calls failed: {}", e.toString());
                }
            }
        } finally {
            lock.readLock().unlock();
        }
        long handle;
        boolean releaseDrain;
        boolean wasConfigured;
        boolean locked;
        try {
            locked = lock.writeLock().tryLock(CLOSE_LOCK_WAIT_MS, java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            locked = false;
        }
        if (!locked) {
            LOG.warn("fasttier: close: calls still running in native code after {} ms; the engine is left allocated",
                    CLOSE_LOCK_WAIT_MS);
            return;
        }
        try {
            if (closed) {
                return;
            }
            closed = true;
            handle = engine;
            engine = 0;
            releaseDrain = drainAcquired;
            drainAcquired = false;
            wasConfigured = configured;
        } finally {
            lock.writeLock().unlock();
        }
        synchronized (metricsLock) {
            if (replicationTimer != null) {
                replicationTimer.shutdownNow();
                replicationTimer = null;
            }
            if (replicationMetrics != null) {
                replicationMetrics.close();
                replicationMetrics = null;
            }
        }
        try {
            if (handle != 0) {
                FastTierRegistry.unregister(handle); // no fast-tier call uses the handle after this
                NativeBridge.close(handle);
            }
        } catch (NativeException e) {
            LOG.warn("fasttier: closing the engine failed: {}", RemoteErrors.messageOf(e));
        } finally {
            if (releaseDrain) {
                NativeLogDrain.release();
            }
        }
        if (wasConfigured) {
            LOG.info("fasttier: remote storage manager closed");
        }
    }

    private boolean isClosed() {
        if (closing) {
            return true;
        }
        lock.readLock().lock();
        try {
            return closed;
        } finally {
            lock.readLock().unlock();
        }
    }

    /**
     * {@link #withEngine} for a consumer's read of remote data: stored bytes that fail verification are
     * Kafka's {@code CorruptRecordException} (error code CORRUPT_MESSAGE to the client; see RemoteErrors).
     */
    private <T> T withEngineForConsumer(EngineCall<T> call) throws RemoteStorageException {
        return withEngine(call, true);
    }

    private <T> T withEngine(EngineCall<T> call) throws RemoteStorageException {
        return withEngine(call, false);
    }

    private <T> T withEngine(EngineCall<T> call, boolean consumerRead) throws RemoteStorageException {
        if (closing) {
            throw new RemoteStorageException("fasttier: closed");
        }
        lock.readLock().lock();
        try {
            if (closed) {
                throw new RemoteStorageException("fasttier: closed");
            }
            if (!configured) {
                throw new RemoteStorageException("fasttier: not configured");
            }
            return call.call(engine);
        } catch (NativeException e) {
            if (consumerRead && RemoteErrors.isCorrupt(e)) {
                throw RemoteErrors.corrupt(e);
            }
            throw RemoteErrors.toRemote(e);
        } finally {
            lock.readLock().unlock();
        }
    }

    private static String pathOf(Path p) {
        return p == null ? null : p.toAbsolutePath().toString();
    }

    /** The buffer's remaining bytes, read through a duplicate so the caller's position is untouched. */
    static byte[] remainingBytes(ByteBuffer buffer) {
        if (buffer == null) {
            return new byte[0];
        }
        ByteBuffer dup = buffer.duplicate();
        byte[] out = new byte[dup.remaining()];
        dup.get(out);
        return out;
    }
}
