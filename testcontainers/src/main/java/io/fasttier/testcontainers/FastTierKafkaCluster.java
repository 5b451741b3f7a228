package io.fasttier.testcontainers;

import com.github.dockerjava.api.model.Network.Ipam;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Collectors;
import org.testcontainers.containers.Network;
import org.testcontainers.images.builder.Transferable;
import org.testcontainers.lifecycle.Startable;
import org.testcontainers.lifecycle.Startables;
import org.testcontainers.utility.DockerImageName;

/**
 * Several {@link FastTierKafkaContainer}s (node ids 1..n, each a combined broker and controller) and one MinIO on
 * a Docker network of their own, optionally replicating through the fast tier (docs/replication.md).
 *
 * <pre>{@code
 * try (FastTierKafkaCluster cluster = new FastTierKafkaCluster(3, true)) {
 *     cluster.start();
 *     cluster.bootstrapServers();      // localhost:<port>,localhost:<port>,localhost:<port>
 *     cluster.restartBroker(2);        // controlled shutdown, a new container on the same data volume
 * }
 * }</pre>
 *
 * <p>Replication through the fast tier needs the follower's JVM to resolve every other broker's advertised name to
 * its own fetch proxy (127.0.100.&lt;leader id&gt; inside the container) while the plugin reaches the real brokers.
 * The cluster therefore gives its network a fixed subnet and every broker a fixed address and host name
 * ({@code kafka-<id>}); the KRaft voters and {@code rsm.config.replication.fast.brokers} use the addresses, and a
 * JVM hosts file ({@code -Djdk.net.hosts.file}) maps the names. Each broker keeps its disk in a Docker volume, so
 * {@link #restartBroker} restarts it with its data.
 */
public class FastTierKafkaCluster implements Startable, AutoCloseable {
    private final Network network;
    private final FastTierMinioContainer minio;
    private final List<FastTierKafkaContainer> brokers = new ArrayList<>();
    private final String subnetPrefix;
    private final boolean fastReplication;
    private final String prefix;

    public FastTierKafkaCluster(int size, boolean fastReplication) {
        this(size, fastReplication, FastTierImages.kafka(), FastTierImages.minio());
    }

    public FastTierKafkaCluster(int size, boolean fastReplication, DockerImageName kafkaImage, DockerImageName minioImage) {
        if (size < 1 || size > 200) {
            throw new IllegalArgumentException("cluster size " + size + " is not in 1..200");
        }
        this.fastReplication = fastReplication;
        String id = UUID.randomUUID().toString().substring(0, 8);
        this.prefix = "tc-" + id + "/";
        // a /24 of its own in 10.251.0.0/16 (Docker refuses overlapping subnets: pick another on a clash)
        this.subnetPrefix = "10.251." + ThreadLocalRandom.current().nextInt(1, 255) + ".";
        this.network = Network.builder()
                .createNetworkCmdModifier(cmd -> cmd.withIpam(new Ipam().withConfig(
                        new Ipam.Config().withSubnet(subnetPrefix + "0/24").withGateway(subnetPrefix + "1"))))
                .build();
        this.minio = new FastTierMinioContainer(minioImage).withNetwork(network);
        int rf = Math.min(3, size);
        String minIsr = Integer.toString(Math.min(2, rf));
        List<String> voters = new ArrayList<>();
        List<String> endpoints = new ArrayList<>();
        for (int node = 1; node <= size; node++) {
            voters.add(node + "@" + address(node) + ":" + FastTierKafkaContainer.CONTROLLER_PORT);
            endpoints.add(node + "@" + address(node) + ":" + FastTierKafkaContainer.BROKER_PORT);
        }
        for (int node = 1; node <= size; node++) {
            String name = hostName(node);
            String address = address(node);
            FastTierKafkaContainer b = new FastTierKafkaContainer(kafkaImage, minio)
                    .withNodeId(node)
                    .withPrefix(prefix)
                    .withDataVolume("fasttier-" + id + "-" + name)
                    .withBrokerConfig("controller.quorum.voters", String.join(",", voters))
                    .withBrokerConfig("default.replication.factor", Integer.toString(rf))
                    .withBrokerConfig("offsets.topic.replication.factor", Integer.toString(rf))
                    .withBrokerConfig("offsets.topic.num.partitions", "3")
                    .withBrokerConfig("transaction.state.log.replication.factor", Integer.toString(rf))
                    .withBrokerConfig("transaction.state.log.min.isr", minIsr)
                    .withBrokerConfig("share.coordinator.state.topic.replication.factor", Integer.toString(rf))
                    .withBrokerConfig("share.coordinator.state.topic.min.isr", minIsr)
                    .withBrokerConfig("rlmm.config.remote.log.metadata.topic.replication.factor", Integer.toString(rf))
                    .withBrokerConfig("rlmm.config.remote.log.metadata.topic.min.isr", minIsr)
                    .withBrokerConfig("auto.leader.rebalance.enable", "false")
                    .withBrokerConfig("replica.lag.time.max.ms", "10000");
            // BROKER and CONTROLLER on the broker's own address, not 0.0.0.0: with fast replication the plugin's
            // proxies listen on 127.0.100.<leader id>:9093 in the same container, and a wildcard bind of the same
            // port would fail ("Address already in use")
            b.withEnv("KAFKA_LISTENERS", "PLAINTEXT://0.0.0.0:9092,BROKER://" + address + ":"
                    + FastTierKafkaContainer.BROKER_PORT + ",CONTROLLER://" + address + ":"
                    + FastTierKafkaContainer.CONTROLLER_PORT);
            b.withNetworkAliases(name);
            b.withCreateContainerCmdModifier(cmd -> cmd.withHostName(name).withIpv4Address(address));
            if (fastReplication) {
                b.withRsmConfig("replication.fast.enable", "true");
                b.withRsmConfig("replication.fast.brokers", String.join(",", endpoints));
                b.withCopyToContainer(Transferable.of(hostsFile(node, size), 0644), FastTierKafkaContainer.HOSTS_FILE);
                b.withKafkaOpt("-Djdk.net.hosts.file=" + FastTierKafkaContainer.HOSTS_FILE);
            }
            brokers.add(b);
        }
    }

    /** Host name (and network alias) of broker {@code node}. */
    public static String hostName(int node) {
        return "kafka-" + node;
    }

    /** The broker's address on the cluster's network. */
    public String address(int node) {
        return subnetPrefix + (10 + node);
    }

    /**
     * The JVM's name table of broker {@code node}: its own name to its address; with fast replication every other
     * broker's name to this broker's fetch proxy for that leader (rsm.config.replication.fast.bind's default,
     * 127.0.100.&lt;leader id&gt;).
     */
    String hostsFile(int node, int size) {
        StringBuilder sb = new StringBuilder("127.0.0.1 localhost\n");
        for (int other = 1; other <= size; other++) {
            String target = other == node || !fastReplication ? address(other) : "127.0.100." + other;
            sb.append(target).append(' ').append(hostName(other)).append('\n');
        }
        return sb.toString();
    }

    @Override
    public void start() {
        // all at once: a KRaft quorum of n voters elects no leader until a majority runs
        Startables.deepStart(brokers).join();
    }

    public FastTierKafkaContainer broker(int node) {
        return brokers.get(node - 1);
    }

    public List<FastTierKafkaContainer> brokers() {
        return Collections.unmodifiableList(brokers);
    }

    public FastTierMinioContainer minio() {
        return minio;
    }

    public Network network() {
        return network;
    }

    /** Key prefix of the cluster's objects in both buckets. */
    public String prefix() {
        return prefix;
    }

    public boolean fastReplication() {
        return fastReplication;
    }

    /** Bootstrap servers for the test process: every running broker's mapped client port. */
    public String bootstrapServers() {
        return brokers.stream().filter(b -> b.getContainerId() != null).map(FastTierKafkaContainer::getBootstrapServers)
                .collect(Collectors.joining(","));
    }

    /** Controlled shutdown of broker {@code node}, then a new container on its data volume. */
    public void restartBroker(int node) throws IOException, InterruptedException {
        FastTierKafkaContainer b = broker(node);
        b.stopBroker(Duration.ofSeconds(60));
        b.start();
    }

    @Override
    public void stop() {
        for (FastTierKafkaContainer b : brokers) {
            try {
                b.stop();
            } finally {
                b.removeDataVolume();
            }
        }
        minio.stop();
        network.close();
    }

    @Override
    public void close() {
        stop();
    }
}
