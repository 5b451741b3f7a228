package io.fasttier.kafka;

import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.server.log.remote.storage.RemoteLogMetadataManager;
import org.apache.kafka.server.log.remote.storage.RemoteLogSegmentMetadata;
import org.apache.kafka.server.log.remote.storage.RemoteLogSegmentMetadataUpdate;
import org.apache.kafka.server.log.remote.storage.RemotePartitionDeleteMetadata;
import org.apache.kafka.server.log.remote.storage.RemoteStorageException;

import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * A fake delegate for {@link FastTierRemoteLogMetadataManager}: records every call as "method(args)" and returns
 * recognisable values. The config key {@value #FAIL_LEADERSHIP} makes the leadership callbacks throw.
 */
public class RecordingRlmm implements RemoteLogMetadataManager {
    static final String FAIL_LEADERSHIP = "test.fail.leadership";
    static final CompletableFuture<Void> DONE = CompletableFuture.completedFuture(null);

    final List<String> calls = new CopyOnWriteArrayList<>();
    volatile Map<String, Object> config;
    private volatile boolean failLeadership;

    @Override
    public void configure(Map<String, ?> configs) {
        config = new HashMap<>(configs);
        failLeadership = "true".equals(String.valueOf(configs.get(FAIL_LEADERSHIP)));
        calls.add("configure");
    }

    @Override
    public CompletableFuture<Void> addRemoteLogSegmentMetadata(RemoteLogSegmentMetadata m) {
        calls.add("addRemoteLogSegmentMetadata(" + m + ")");
        return DONE;
    }

    @Override
    public CompletableFuture<Void> updateRemoteLogSegmentMetadata(RemoteLogSegmentMetadataUpdate u) {
        calls.add("updateRemoteLogSegmentMetadata(" + u + ")");
        return DONE;
    }

    @Override
    public Optional<RemoteLogSegmentMetadata> remoteLogSegmentMetadata(TopicIdPartition tip, int epoch, long offset) {
        calls.add("remoteLogSegmentMetadata(" + tip + "," + epoch + "," + offset + ")");
        return Optional.empty();
    }

    @Override
    public Optional<Long> highestOffsetForEpoch(TopicIdPartition tip, int epoch) {
        calls.add("highestOffsetForEpoch(" + tip + "," + epoch + ")");
        return Optional.of(42L);
    }

    @Override
    public CompletableFuture<Void> putRemotePartitionDeleteMetadata(RemotePartitionDeleteMetadata m) {
        calls.add("putRemotePartitionDeleteMetadata(" + m + ")");
        return DONE;
    }

    @Override
    public Iterator<RemoteLogSegmentMetadata> listRemoteLogSegments(TopicIdPartition tip) {
        calls.add("listRemoteLogSegments(" + tip + ")");
        return Collections.emptyIterator();
    }

    @Override
    public Iterator<RemoteLogSegmentMetadata> listRemoteLogSegments(TopicIdPartition tip, int epoch) {
        calls.add("listRemoteLogSegments(" + tip + "," + epoch + ")");
        return Collections.emptyIterator();
    }

    @Override
    public void onPartitionLeadershipChanges(Set<TopicIdPartition> leaders, Set<TopicIdPartition> followers) {
        calls.add("onPartitionLeadershipChanges(" + leaders.size() + "," + followers.size() + ")");
        if (failLeadership) {
            throw new IllegalStateException("delegate refuses leadership changes");
        }
    }

    @Override
    public void onStopPartitions(Set<TopicIdPartition> partitions) {
        calls.add("onStopPartitions(" + partitions.size() + ")");
        if (failLeadership) {
            throw new IllegalStateException("delegate refuses stopped partitions");
        }
    }

    @Override
    public long remoteLogSize(TopicIdPartition tip, int epoch) {
        calls.add("remoteLogSize(" + tip + "," + epoch + ")");
        return 4711L;
    }

    @Override
    public Optional<RemoteLogSegmentMetadata> nextSegmentWithTxnIndex(TopicIdPartition tip, int epoch, long offset)
            throws RemoteStorageException {
        calls.add("nextSegmentWithTxnIndex(" + tip + "," + epoch + "," + offset + ")");
        return Optional.empty();
    }

    @Override
    public boolean isReady(TopicIdPartition tip) {
        calls.add("isReady(" + tip + ")");
        return true;
    }

    @Override
    public void close() {
        calls.add("close");
    }

    /** A delegate with Kafka 4.2+'s broker-ready callback. */
    public static class WithBrokerReady extends RecordingRlmm
            implements org.apache.kafka.server.log.remote.metadata.storage.BrokerReadyCallback {
        @Override
        public void onBrokerReady() {
            calls.add("onBrokerReady");
        }
    }

    /** Not a remote log metadata manager at all. */
    public static class NotAnRlmm {
    }

    /** A delegate whose constructor fails. */
    public static class FailingConstructor extends RecordingRlmm {
        public FailingConstructor() {
            throw new IllegalStateException("constructor says no");
        }
    }
}
