package io.fasttier.kafka;

import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.server.log.remote.storage.LogSegmentData;
import org.apache.kafka.server.log.remote.storage.RemoteLogSegmentId;
import org.apache.kafka.server.log.remote.storage.RemoteLogSegmentMetadata;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.Random;
import java.util.zip.CRC32C;

/**
 * Builds realistic partition-directory files for one rolled segment. Record batches are encoded here (v2 format,
 * CRC-32C) rather than with Kafka's record classes, which moved to an internal package in Kafka 4.3: the same
 * tests run against Kafka 4.1 and 4.4 jars.
 */
final class TestSegments {
    static final long BASE_TIMESTAMP = 1_700_000_000_000L;

    final Path dir;
    final Path log;
    final Path offsetIndex;
    final Path timeIndex;
    final Path txnIndex; // null when absent
    final Path producerSnapshot;
    final byte[] leaderEpochCheckpoint;
    final long startOffset;
    final long endOffset;
    final long maxTimestamp;
    final int sizeInBytes;
    final Map<Integer, Long> leaderEpochs;

    private TestSegments(Path dir, Path log, Path offsetIndex, Path timeIndex, Path txnIndex, Path producerSnapshot,
                         byte[] leaderEpochCheckpoint, long startOffset, long endOffset, long maxTimestamp,
                         int sizeInBytes, Map<Integer, Long> leaderEpochs) {
        this.dir = dir;
        this.log = log;
        this.offsetIndex = offsetIndex;
        this.timeIndex = timeIndex;
        this.txnIndex = txnIndex;
        this.producerSnapshot = producerSnapshot;
        this.leaderEpochCheckpoint = leaderEpochCheckpoint;
        this.startOffset = startOffset;
        this.endOffset = endOffset;
        this.maxTimestamp = maxTimestamp;
        this.sizeInBytes = sizeInBytes;
        this.leaderEpochs = leaderEpochs;
    }

    /**
     * Writes {@code batches} record batches (v2, uncompressed, leader epoch 0 for the first half and 1 after)
     * of {@code recordsPerBatch} records with {@code valueBytes}-byte pseudo-random values, plus an offset index
     * and a time index with one entry per batch, a producer snapshot, and optionally a transaction index.
     */
    static TestSegments write(Path dir, long startOffset, int batches, int recordsPerBatch, int valueBytes,
                              boolean withTxnIndex) throws IOException {
        Files.createDirectories(dir);
        String base = String.format("%020d", startOffset);
        Path log = dir.resolve(base + ".log");
        Path offsetIndex = dir.resolve(base + ".index");
        Path timeIndex = dir.resolve(base + ".timeindex");
        Path txnIndex = withTxnIndex ? dir.resolve(base + ".txnindex") : null;
        Path snapshot = dir.resolve(base + ".snapshot");

        Random random = new Random(42 + startOffset);
        ByteBuffer offsetEntries = ByteBuffer.allocate(8 * batches).order(ByteOrder.BIG_ENDIAN);
        ByteBuffer timeEntries = ByteBuffer.allocate(12 * batches).order(ByteOrder.BIG_ENDIAN);
        long offset = startOffset;
        int position = 0;
        long maxTimestamp = -1;
        int secondEpochAt = batches / 2;
        long secondEpochStart = -1;
        try (OutputStream out = Files.newOutputStream(log)) {
            for (int b = 0; b < batches; b++) {
                int epoch = b < secondEpochAt ? 0 : 1;
                if (epoch == 1 && secondEpochStart < 0) {
                    secondEpochStart = offset;
                }
                byte[][] keys = new byte[recordsPerBatch][];
                byte[][] values = new byte[recordsPerBatch][];
                long[] timestamps = new long[recordsPerBatch];
                long batchMaxTs = -1;
                for (int r = 0; r < recordsPerBatch; r++) {
                    values[r] = new byte[valueBytes];
                    random.nextBytes(values[r]);
                    keys[r] = ("k" + (offset + r)).getBytes(StandardCharsets.UTF_8);
                    timestamps[r] = BASE_TIMESTAMP + offset + r;
                    batchMaxTs = Math.max(batchMaxTs, timestamps[r]);
                }
                byte[] arr = encodeBatch(offset, epoch, timestamps, keys, values);
                out.write(arr);
                offsetEntries.putInt((int) (offset - startOffset)).putInt(position);
                timeEntries.putLong(batchMaxTs).putInt((int) (offset + recordsPerBatch - 1 - startOffset));
                maxTimestamp = Math.max(maxTimestamp, batchMaxTs);
                position += arr.length;
                offset += recordsPerBatch;
            }
        }
        Files.write(offsetIndex, offsetEntries.array());
        Files.write(timeIndex, timeEntries.array());
        if (txnIndex != null) {
            // One 34-byte aborted-transaction entry: version i16, producerId i64, firstOffset i64,
            // lastOffset i64, lastStableOffset i64.
            ByteBuffer t = ByteBuffer.allocate(34);
            t.putShort((short) 0).putLong(7L).putLong(startOffset).putLong(startOffset + 1).putLong(startOffset + 2);
            Files.write(txnIndex, t.array());
        }
        byte[] snapshotBytes = new byte[77];
        random.nextBytes(snapshotBytes);
        Files.write(snapshot, snapshotBytes);

        Map<Integer, Long> epochs = new LinkedHashMap<>();
        epochs.put(0, startOffset);
        StringBuilder checkpoint = new StringBuilder("0\n");
        if (secondEpochStart >= 0 && secondEpochStart > startOffset) {
            epochs.put(1, secondEpochStart);
            checkpoint.append("2\n0 ").append(startOffset).append('\n').append("1 ").append(secondEpochStart).append('\n');
        } else {
            checkpoint.append("1\n0 ").append(startOffset).append('\n');
        }
        return new TestSegments(dir, log, offsetIndex, timeIndex, txnIndex, snapshot,
                checkpoint.toString().getBytes(StandardCharsets.UTF_8), startOffset, offset - 1, maxTimestamp,
                position, epochs);
    }

    /**
     * A large segment whose log is a sparse file of {@code sizeBytes} zero bytes (created instantly, no disk
     * writes). The native copy does not parse batches, so this is enough to keep a copy busy for a while.
     */
    static TestSegments sparse(Path dir, long startOffset, int sizeBytes) throws IOException {
        Files.createDirectories(dir);
        String base = String.format("%020d", startOffset);
        Path log = dir.resolve(base + ".log");
        try (java.io.RandomAccessFile f = new java.io.RandomAccessFile(log.toFile(), "rw")) {
            f.setLength(sizeBytes);
        }
        Path offsetIndex = Files.write(dir.resolve(base + ".index"), new byte[0]);
        Path timeIndex = Files.write(dir.resolve(base + ".timeindex"), new byte[0]);
        Path snapshot = Files.write(dir.resolve(base + ".snapshot"), new byte[10]);
        Map<Integer, Long> epochs = new LinkedHashMap<>();
        epochs.put(0, startOffset);
        byte[] checkpoint = ("0\n1\n0 " + startOffset + "\n").getBytes(StandardCharsets.UTF_8);
        return new TestSegments(dir, log, offsetIndex, timeIndex, null, snapshot, checkpoint, startOffset,
                startOffset + 999, BASE_TIMESTAMP, sizeBytes, epochs);
    }

    /** One uncompressed, non-transactional v2 record batch. */
    static byte[] encodeBatch(long baseOffset, int leaderEpoch, long[] timestamps, byte[][] keys, byte[][] values) {
        int n = timestamps.length;
        long firstTs = timestamps[0];
        long maxTs = Long.MIN_VALUE;
        java.io.ByteArrayOutputStream records = new java.io.ByteArrayOutputStream();
        for (int i = 0; i < n; i++) {
            maxTs = Math.max(maxTs, timestamps[i]);
            java.io.ByteArrayOutputStream body = new java.io.ByteArrayOutputStream();
            body.write(0); // record attributes
            writeVarlong(body, timestamps[i] - firstTs);
            writeVarlong(body, i); // offset delta
            writeVarlong(body, keys[i] == null ? -1 : keys[i].length);
            if (keys[i] != null) {
                body.write(keys[i], 0, keys[i].length);
            }
            writeVarlong(body, values[i] == null ? -1 : values[i].length);
            if (values[i] != null) {
                body.write(values[i], 0, values[i].length);
            }
            writeVarlong(body, 0); // headers
            writeVarlong(records, body.size());
            byte[] b = body.toByteArray();
            records.write(b, 0, b.length);
        }
        byte[] recs = records.toByteArray();
        ByteBuffer buf = ByteBuffer.allocate(61 + recs.length).order(ByteOrder.BIG_ENDIAN);
        buf.putLong(baseOffset);
        buf.putInt(61 + recs.length - 12); // length: bytes after this field
        buf.putInt(leaderEpoch);
        buf.put((byte) 2); // magic
        buf.putInt(0); // crc, filled below
        buf.putShort((short) 0); // attributes: no compression, create time, not transactional
        buf.putInt(n - 1); // last offset delta
        buf.putLong(firstTs);
        buf.putLong(maxTs);
        buf.putLong(-1L); // producer id
        buf.putShort((short) -1); // producer epoch
        buf.putInt(-1); // base sequence
        buf.putInt(n);
        buf.put(recs);
        byte[] out = buf.array();
        CRC32C crc = new CRC32C();
        crc.update(out, 21, out.length - 21);
        ByteBuffer.wrap(out).putInt(17, (int) crc.getValue());
        return out;
    }

    private static void writeVarlong(java.io.ByteArrayOutputStream out, long value) {
        long v = (value << 1) ^ (value >> 63); // zig-zag
        while ((v & ~0x7FL) != 0) {
            out.write((int) ((v & 0x7F) | 0x80));
            v >>>= 7;
        }
        out.write((int) v);
    }

    static TopicIdPartition newPartition(String topic, int partition) {
        return new TopicIdPartition(Uuid.randomUuid(), new TopicPartition(topic, partition));
    }

    /** Metadata for a new copy attempt (a fresh segment id, as the broker does for every attempt). */
    RemoteLogSegmentMetadata metadata(TopicIdPartition tip, int brokerId) {
        return metadata(new RemoteLogSegmentId(tip, Uuid.randomUuid()), brokerId);
    }

    RemoteLogSegmentMetadata metadata(RemoteLogSegmentId id, int brokerId) {
        return new RemoteLogSegmentMetadata(id, startOffset, endOffset, maxTimestamp, brokerId,
                System.currentTimeMillis(), sizeInBytes, leaderEpochs);
    }

    LogSegmentData data() {
        return new LogSegmentData(log, offsetIndex, timeIndex, Optional.ofNullable(txnIndex), producerSnapshot,
                ByteBuffer.wrap(leaderEpochCheckpoint));
    }
}
