package io.fasttier.testcontainers;

import com.github.dockerjava.api.model.Bind;
import com.github.dockerjava.api.model.HostConfig;
import com.github.dockerjava.api.model.Volume;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import java.util.stream.Stream;
import org.testcontainers.DockerClientFactory;
import org.testcontainers.containers.Container;
import org.testcontainers.containers.Network;
import org.testcontainers.images.builder.Transferable;
import org.testcontainers.kafka.KafkaContainer;
import org.testcontainers.utility.DockerImageName;
import org.testcontainers.utility.MountableFile;

/**
 * Testcontainers' {@link KafkaContainer} (KRaft, combined broker and controller) with fasttier as its
 * tiered-storage plugin, wired to a {@link FastTierMinioContainer} on a shared Docker network, the fast tier on.
 *
 * <pre>{@code
 * FastTierMinioContainer minio = new FastTierMinioContainer();
 * FastTierKafkaContainer kafka = new FastTierKafkaContainer(minio);
 * kafka.start();                       // starts MinIO first
 * kafka.getBootstrapServers();         // localhost:<port>
 * // topics with remote.storage.enable=true are tiered to minio's slow bucket; the fast tier uploads
 * // recent data of led partitions to its fast bucket
 * }</pre>
 *
 * <p>Every broker setting can be changed with {@link #withBrokerConfig} and every plugin setting
 * ({@code rsm.config.*}, docs/configuration.md) with {@link #withRsmConfig}; they become {@code KAFKA_*}
 * environment variables of the image's start script. The default image has the plugin baked in
 * ({@link FastTierImages#kafka()}); {@link #withPluginDir} copies a plugin build into any apache/kafka-compatible
 * image instead.
 */
public class FastTierKafkaContainer extends KafkaContainer {
    /** Inter-broker listener (KafkaContainer's BROKER listener). */
    public static final int BROKER_PORT = 9093;
    /** KRaft controller listener. */
    public static final int CONTROLLER_PORT = 9094;
    /** The broker's JMX port, bound to 127.0.0.1 inside the container (see {@link #pluginMetrics()}). */
    public static final int JMX_PORT = 9999;
    /** Where the broker keeps its log and metadata directories. */
    public static final String DATA_PATH = "/var/lib/kafka";
    public static final String RSM_CLASS = "io.fasttier.kafka.FastTierRemoteStorageManager";
    public static final String RLMM_CLASS = "io.fasttier.kafka.FastTierRemoteLogMetadataManager";
    static final String HOSTS_FILE = "/etc/kafka/fasttier-hosts";
    private static final String JMX_DUMP_DIR = "/tmp/fasttier-jmx";

    private final FastTierMinioContainer minio;
    private String prefix;
    private String dataVolume;
    private final List<String> kafkaOpts = new ArrayList<>();

    public FastTierKafkaContainer(FastTierMinioContainer minio) {
        this(FastTierImages.kafka(), minio);
    }

    public FastTierKafkaContainer(DockerImageName image, FastTierMinioContainer minio) {
        super(image);
        this.minio = minio;
        if (minio.getNetwork() == null) {
            minio.withNetwork(Network.newNetwork());
        }
        withNetwork(minio.getNetwork());
        dependsOn(minio);
        // a broker JVM and a format run before it: slow on a loaded machine (Testcontainers' default is 60 s)
        withStartupTimeout(Duration.ofMinutes(3));
        withEnv("KAFKA_HEAP_OPTS", "-Xmx512m -Xms128m");
        withEnv("KAFKA_JMX_OPTS", "-Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.port=" + JMX_PORT
                + " -Dcom.sun.management.jmxremote.rmi.port=" + JMX_PORT
                + " -Dcom.sun.management.jmxremote.host=127.0.0.1 -Djava.rmi.server.hostname=127.0.0.1"
                + " -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false");
        // KIP-405 with both of fasttier's plugins: the RLMM tells the fast tier which partitions this broker leads
        withBrokerConfig("remote.log.storage.system.enable", "true");
        withBrokerConfig("remote.log.storage.manager.class.name", RSM_CLASS);
        withBrokerConfig("remote.log.metadata.manager.class.name", RLMM_CLASS);
        withBrokerConfig("remote.log.metadata.manager.listener.name", "BROKER");
        withBrokerConfig("rlmm.config.remote.log.metadata.topic.replication.factor", "1");
        withBrokerConfig("rlmm.config.remote.log.metadata.topic.num.partitions", "3");
        withBrokerConfig("rlmm.config.remote.log.metadata.topic.min.isr", "1");
        // test-friendly cadence: tier and delete within seconds instead of minutes
        withBrokerConfig("remote.log.manager.task.interval.ms", "1000");
        withBrokerConfig("remote.fetch.max.wait.ms", "500");
        withBrokerConfig("log.retention.check.interval.ms", "1000");
        withBrokerConfig("log.segment.delete.delay.ms", "1000");
        withBrokerConfig("log.initial.task.delay.ms", "1000");
        withBrokerConfig("auto.create.topics.enable", "false");
        withBrokerConfig("log.dirs", DATA_PATH + "/data");
        withBrokerConfig("metadata.log.dir", DATA_PATH + "/meta");
        withRsmConfig("s3.bucket", minio.slowBucket());
        withRsmConfig("s3.endpoint", minio.internalEndpoint());
        withRsmConfig("s3.region", minio.region());
        withRsmConfig("s3.path.style", "true");
        withRsmConfig("s3.access.key.id", minio.accessKey());
        withRsmConfig("s3.secret.access.key", minio.secretKey());
        withRsmConfig("wal.enable", "true");
        withRsmConfig("wal.bucket", minio.fastBucket());
        withPrefix("tc-" + UUID.randomUUID().toString().substring(0, 8) + "/");
    }

    /** The {@code KAFKA_*} environment variable the image's start script turns into {@code key}. */
    public static String envName(String key) {
        StringBuilder sb = new StringBuilder("KAFKA_");
        for (char c : key.toCharArray()) {
            if (c == '.') {
                sb.append('_');
            } else if (c == '_') {
                sb.append("__");
            } else if (c == '-') {
                sb.append("___");
            } else {
                sb.append(Character.toUpperCase(c));
            }
        }
        return sb.toString();
    }

    /** A broker setting (server.properties key), e.g. {@code withBrokerConfig("num.partitions", "3")}. */
    public FastTierKafkaContainer withBrokerConfig(String key, String value) {
        withEnv(envName(key), value);
        return this;
    }

    /** A plugin setting, with or without the {@code rsm.config.} prefix (docs/configuration.md). */
    public FastTierKafkaContainer withRsmConfig(String key, String value) {
        return withBrokerConfig(key.startsWith("rsm.config.") ? key : "rsm.config." + key, value);
    }

    /** The key prefix of every object this broker writes (default: a fresh {@code tc-<random>/}). */
    public FastTierKafkaContainer withPrefix(String prefix) {
        this.prefix = prefix;
        return withRsmConfig("prefix", prefix);
    }

    /** The broker's node id (default 1). */
    public FastTierKafkaContainer withNodeId(int nodeId) {
        withEnv("KAFKA_NODE_ID", Integer.toString(nodeId));
        return this;
    }

    /** An extra JVM option of the broker (KAFKA_OPTS). */
    public FastTierKafkaContainer withKafkaOpt(String option) {
        kafkaOpts.add(option);
        withEnv("KAFKA_OPTS", String.join(" ", kafkaOpts));
        return this;
    }

    /**
     * Use the plugin build in {@code dir} (fasttier-rsm-*.jar and libfasttier_jni.so, e.g. build/plugin) instead of
     * the one baked into the image: for running fasttier on any apache/kafka-compatible image.
     */
    public FastTierKafkaContainer withPluginDir(Path dir) throws IOException {
        List<Path> files;
        try (Stream<Path> s = Files.list(dir)) {
            files = s.filter(p -> p.toString().endsWith(".jar") || p.toString().endsWith(".so")).sorted()
                    .collect(java.util.stream.Collectors.toList());
        }
        if (files.stream().noneMatch(p -> p.toString().endsWith(".jar"))) {
            throw new IOException("no plugin jar in " + dir);
        }
        for (Path f : files) {
            withCopyFileToContainer(MountableFile.forHostPath(f, 0644), "/opt/fasttier-plugin/" + f.getFileName());
            if (f.toString().endsWith(".so")) {
                withRsmConfig("native.library.path", "/opt/fasttier-plugin/" + f.getFileName());
            }
        }
        withEnv("CLASSPATH", "/opt/fasttier-plugin/*");
        return this;
    }

    /**
     * Keep the broker's log and metadata directories in the named Docker volume, so that {@link #stopBroker()}
     * followed by {@code start()} is a broker restart with its disk (a new container, the same data).
     * {@link #removeDataVolume()} deletes the volume.
     */
    public FastTierKafkaContainer withDataVolume(String volumeName) {
        this.dataVolume = volumeName;
        withCreateContainerCmdModifier(cmd -> {
            HostConfig hc = cmd.getHostConfig();
            List<Bind> binds = new ArrayList<>();
            if (hc.getBinds() != null) {
                binds.addAll(Arrays.asList(hc.getBinds()));
            }
            binds.add(new Bind(volumeName, new Volume(DATA_PATH)));
            hc.withBinds(binds.toArray(new Bind[0]));
        });
        return this;
    }

    public FastTierMinioContainer minio() {
        return minio;
    }

    /** Key prefix of this broker's objects (rsm.config.prefix). */
    public String prefix() {
        return prefix;
    }

    /** The node id the broker runs with. */
    public int nodeId() {
        return Integer.parseInt(getEnvMap().getOrDefault("KAFKA_NODE_ID", "1"));
    }

    /**
     * Stops the broker with a controlled shutdown (SIGTERM to its JVM; the container ends when the JVM does),
     * then removes the container. A volume of {@link #withDataVolume} is kept; {@code start()} runs a new
     * container on it.
     */
    public void stopBroker(Duration timeout) throws IOException, InterruptedException {
        if (getContainerId() == null) {
            return;
        }
        execInContainer("bash", "-c", "for p in /proc/[0-9]*; do "
                + "if tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q ' kafka.Kafka '; then kill -TERM ${p#/proc/}; fi; done");
        Instant deadline = Instant.now().plus(timeout);
        while (Instant.now().isBefore(deadline) && isRunning()) {
            Thread.sleep(250);
        }
        stop();
    }

    public void stopBroker() throws IOException, InterruptedException {
        stopBroker(Duration.ofSeconds(60));
    }

    /** Deletes the data volume of {@link #withDataVolume} (the container must be stopped). */
    public void removeDataVolume() {
        if (dataVolume != null) {
            try {
                DockerClientFactory.instance().client().removeVolumeCmd(dataVolume).exec();
            } catch (RuntimeException e) {
                // already gone
            }
        }
    }

    /**
     * The plugin's metrics (Kafka metrics group {@code plugins}, docs/operations.md) by name, read over JMX inside
     * the container. Per-partition metrics (tagged with a partition) are left out: the value is the broker's total.
     */
    public Map<String, Double> pluginMetrics() throws IOException, InterruptedException {
        copyJmxDump();
        Container.ExecResult r = execInContainer("java", "-Xmx64m", "-XX:TieredStopAtLevel=1", "-cp", JMX_DUMP_DIR,
                JmxDump.class.getName(), "127.0.0.1:" + JMX_PORT, "kafka.server:type=plugins,*");
        if (r.getExitCode() != 0) {
            throw new IOException("reading JMX in " + getContainerName() + " failed: " + r.getStderr());
        }
        Map<String, Double> out = new LinkedHashMap<>();
        for (String line : r.getStdout().split("\n")) {
            String[] f = line.split("\t");
            if (f.length != 3 || f[0].contains("partition=")) {
                continue;
            }
            String name = f[1];
            if ("Value".equals(name) && f[0].contains("name=")) {
                name = f[0].replaceAll(".*name=([^,]*).*", "$1");
            }
            out.merge(name, Double.parseDouble(f[2]), (a, b) -> b);
        }
        return out;
    }

    private void copyJmxDump() throws IOException {
        String resource = "/" + JmxDump.class.getName().replace('.', '/') + ".class";
        byte[] bytes;
        try (InputStream in = JmxDump.class.getResourceAsStream(resource)) {
            if (in == null) {
                throw new IOException("class file " + resource + " not found on the class path");
            }
            bytes = in.readAllBytes();
        }
        copyFileToContainer(Transferable.of(bytes, 0644), JMX_DUMP_DIR + resource);
    }

    /** What the broker has printed so far (its log: INFO and above). */
    public String brokerLog() {
        return getLogs();
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT, "FastTierKafkaContainer[node %d, %s]", nodeId(), getDockerImageName());
    }
}
