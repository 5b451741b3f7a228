package io.fasttier.testcontainers;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/** Kafka clients of the integration tests: deterministic records that can be checked byte for byte. */
final class Clients {
    private Clients() {
    }

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 30000);
        return Admin.create(p);
    }

    static void createTopic(Admin admin, String topic, int partitions, int rf, Map<String, String> config) throws Exception {
        admin.createTopics(Collections.singletonList(new NewTopic(topic, partitions, (short) rf).configs(config)))
                .all().get();
        waitUntil(Duration.ofSeconds(60), "leaders of " + topic, () -> {
            try {
                TopicDescription d = admin.describeTopics(Collections.singletonList(topic)).allTopicNames().get().get(topic);
                return d.partitions().size() == partitions && d.partitions().stream().allMatch(p -> p.leader() != null);
            } catch (Exception e) {
                return false;
            }
        });
    }

    /** The value of record {@code i} of partition {@code p}: its identity, padded to {@code size} bytes. */
    static byte[] value(int p, long i, int size) {
        byte[] head = ("p" + p + "-r" + i + "-").getBytes(StandardCharsets.US_ASCII);
        byte[] v = new byte[size];
        for (int k = 0; k < size; k++) {
            v[k] = k < head.length ? head[k] : (byte) ('a' + (int) ((i * 31 + k) % 26));
        }
        return v;
    }

    /**
     * Produces records {@code from..to-1} of each partition (acks=all, idempotent), values from {@link #value};
     * waits for every acknowledgement.
     */
    static void produce(String bootstrap, String topic, int partitions, long from, long to, int size) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 20);
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, 256 * 1024);
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 120000);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (long i = from; i < to; i++) {
                for (int part = 0; part < partitions; part++) {
                    acks.add(producer.send(new ProducerRecord<>(topic, part, null, value(part, i, size))));
                }
            }
            for (Future<RecordMetadata> f : acks) {
                f.get();
            }
        }
    }

    /**
     * Reads every partition from offset 0 up to {@code count} records and checks that record {@code i} is at offset
     * {@code i} with the value {@link #value} made for it.
     */
    static void consumeAndVerify(String bootstrap, String topic, int partitions, long count, int size) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 1024 * 1024);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int part = 0; part < partitions; part++) {
                tps.add(new TopicPartition(topic, part));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<Integer, Long> next = new HashMap<>();
            long deadline = System.nanoTime() + Duration.ofSeconds(180).toNanos();
            while (next.values().stream().mapToLong(Long::longValue).sum() < count * partitions) {
                assertTrue("timed out reading " + topic + ": got " + next, System.nanoTime() < deadline);
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    long want = next.getOrDefault(r.partition(), 0L);
                    if (want >= count) {
                        continue;
                    }
                    assertEquals("offset of record " + want + " of " + topic + "-" + r.partition(), want, r.offset());
                    assertTrue("value at offset " + r.offset() + " of " + topic + "-" + r.partition(),
                            java.util.Arrays.equals(value(r.partition(), want, size), r.value()));
                    next.put(r.partition(), want + 1);
                }
            }
        }
    }

    /** Offsets of every partition for an {@link OffsetSpec} (e.g. earliest local: where the local log starts). */
    static Map<Integer, Long> offsets(Admin admin, String topic, int partitions, OffsetSpec spec) throws Exception {
        Map<TopicPartition, OffsetSpec> req = new HashMap<>();
        for (int part = 0; part < partitions; part++) {
            req.put(new TopicPartition(topic, part), spec);
        }
        Map<Integer, Long> out = new HashMap<>();
        admin.listOffsets(req).all().get().forEach((tp, info) -> out.put(tp.partition(), info.offset()));
        return out;
    }

    /** ISR size of every partition. */
    static Map<Integer, Integer> isrSizes(Admin admin, String topic) throws Exception {
        Map<Integer, Integer> out = new HashMap<>();
        for (TopicPartitionInfo p : admin.describeTopics(Collections.singletonList(topic)).allTopicNames().get()
                .get(topic).partitions()) {
            out.put(p.partition(), p.isr().size());
        }
        return out;
    }

    static void waitUntil(Duration timeout, String what, BooleanSupplier condition) throws InterruptedException {
        waitUntil(timeout, () -> what, condition);
    }

    static void waitUntil(Duration timeout, Supplier<String> what, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out after " + timeout.getSeconds() + " s waiting for " + what.get());
            }
            Thread.sleep(500);
        }
    }
}
