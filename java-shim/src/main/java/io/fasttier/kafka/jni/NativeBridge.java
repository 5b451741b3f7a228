package io.fasttier.kafka.jni;

/**
 * The whole JNI surface of the native library {@code libfasttier_jni.so}. Every method is implemented in
 * {@code native/jni} (Rust). Handles are opaque {@code long}s owned by the native side.
 *
 * <p>Errors: native code throws one of {@link NativeNotFoundException}, {@link NativeRetriableException},
 * {@link NativeFatalException} (all {@link NativeException}) or, from {@link #open}, {@link NativeConfigException}.
 * Messages carry {@code key=value} context such as the object key. A Rust panic never crosses this
 * boundary: it arrives as {@link NativeFatalException}.
 *
 * <p>Segment coordinates passed to the native side: topic name, topic id and segment id as Kafka's
 * {@code Uuid.toString()} (base64url), partition number and the segment's start offset.
 */
public final class NativeBridge {
    private NativeBridge() {}

    /** Index types, numbered as in {@code RemoteStorageManager.IndexType} declaration order. */
    public static final int INDEX_OFFSET = 0;
    public static final int INDEX_TIMESTAMP = 1;
    public static final int INDEX_PRODUCER_SNAPSHOT = 2;
    public static final int INDEX_TRANSACTION = 3;
    public static final int INDEX_LEADER_EPOCH = 4;

    /** Library version string, e.g. "fasttier 0.1.0 (format v1)". */
    public static native String version();

    /**
     * Validates the configuration (keys without the {@code rsm.config.} prefix) and opens an engine: S3 client,
     * shared runtime, caches. Checks the bucket: a store that answers that the configuration is wrong (no such
     * bucket, wrong credentials) throws {@link NativeFatalException}; a store that does not answer is logged and
     * does not fail (the broker starts like a stock one). Throws {@link NativeConfigException} naming the
     * offending key.
     */
    public static native long open(String[] keys, String[] values);

    /**
     * Releases everything the engine holds; cancels in-flight operations; idempotent per handle. Returns within
     * a few seconds whatever the store does (see docs/operations.md).
     */
    public static native void close(long engine);

    /** Makes every running and later call on the engine fail at once (cancelled); never blocks. */
    public static native void interrupt(long engine);

    /**
     * Starts copying one rolled segment and its indexes; returns an operation handle that must be finished
     * with {@link #opAwait} (until it returns true or throws) or {@link #opCancel}.
     * {@code txnIndexPath} may be null. {@code epochs}/{@code epochStartOffsets} are the segment's leader
     * epochs (parallel arrays).
     */
    public static native long copyStart(long engine, String topic, String topicId, int partition, String segmentId,
                                        long startOffset, long endOffset, long maxTimestampMs, int brokerId,
                                        int segmentSizeInBytes, int[] epochs, long[] epochStartOffsets,
                                        String logPath, String offsetIndexPath, String timeIndexPath,
                                        String txnIndexPath, String producerSnapshotPath,
                                        byte[] leaderEpochCheckpoint);

    /**
     * Waits up to {@code timeoutMs} for the operation. Returns false if it is still running, true if it
     * finished successfully (the handle is then freed); throws the operation's error (handle freed).
     */
    public static native boolean opAwait(long op, int timeoutMs);

    /**
     * Cancels the operation, waits for its clean-up and frees the handle. Everything the copy wrote is removed
     * (partial uploads aborted, objects deleted), also when the copy had completed just before the cancel.
     */
    public static native void opCancel(long op);

    /**
     * Opens a lazy, verified stream over the segment bytes from {@code startPosition} (inclusive) to
     * {@code endPositionInclusive}, or to the end of the segment when that is -1.
     */
    public static native long streamOpen(long engine, String topic, String topicId, int partition, String segmentId,
                                         long startOffset, int startPosition, int endPositionInclusive);

    /** Reads up to {@code len} bytes into {@code buf[off..]}; returns the count, or -1 at end of stream. */
    public static native int streamRead(long stream, byte[] buf, int off, int len);

    /** Bytes available without blocking (already fetched and verified). */
    public static native int streamAvailable(long stream);

    /** Releases the stream; idempotent per handle. */
    public static native void streamClose(long stream);

    /** Returns one index of the segment (verified); not-found if the segment has no such index. */
    public static native byte[] fetchIndex(long engine, String topic, String topicId, int partition, String segmentId,
                                           long startOffset, int indexType);

    /** Deletes every object of the segment; succeeds if they are already gone. */
    public static native void deleteSegment(long engine, String topic, String topicId, int partition, String segmentId,
                                            long startOffset);

    /** Metric descriptors, one per metric, as "name|gauge-or-counter|description", in {@link #metrics} order. */
    public static native String[] metricDescriptors();

    /** Current metric values, in {@link #metricDescriptors} order. */
    public static native long[] metrics(long engine);

    /**
     * Replication through the fast tier: one row per followed partition,
     * "leader|topicId|partition|source|fastBytes|leaderBytes|fallbacks" (source "fast" or "leader"); empty when
     * {@code replication.fast.enable} is off.
     */
    public static native String[] replicationPartitions(long engine);

    // ---- fast tier (relayed from fasttier's RemoteLogMetadataManager by FastTierRegistry) ----
    // Partitions are parallel arrays: topic names, topic ids (Uuid.toString()) and partition numbers. Each call
    // only records the change and wakes the uploader, so it returns at once. With wal.enable=false they do nothing.

    /** The broker's log directories (the RLMM's {@code log.dir}); starts the fast tier's uploader. */
    public static native void fastLogDirs(long engine, String[] dirs);

    /** A leadership change: the first three arrays are partitions now led here, the last three no longer. */
    public static native void fastLeadership(long engine, String[] leaderTopics, String[] leaderTopicIds,
                                             int[] leaderPartitions, String[] followerTopics,
                                             String[] followerTopicIds, int[] followerPartitions);

    /** Partitions Kafka stopped on this broker (deleted or moved away). */
    public static native void fastStop(long engine, String[] topics, String[] topicIds, int[] partitions);

    /**
     * The fast tier's state as a JSON object: {@code "enabled"} (false when {@code wal.enable=false}),
     * {@code "leaders"} (led partitions in the fast tier), {@code "log_dirs"} and the uploader's progress.
     */
    public static native String fastStatus(long engine);

    /**
     * Takes up to {@code max} buffered native log records, each "LEVEL|target|message" with LEVEL one of
     * ERROR, WARN, INFO, DEBUG, TRACE. The native buffer is bounded; records dropped when it is full are
     * counted and reported as one WARN record.
     */
    public static native String[] drainLogs(int max);
}
