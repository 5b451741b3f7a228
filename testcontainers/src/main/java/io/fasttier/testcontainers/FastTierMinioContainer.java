package io.fasttier.testcontainers;

import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.testcontainers.containers.Container;
import org.testcontainers.containers.GenericContainer;
import org.testcontainers.containers.wait.strategy.Wait;
import org.testcontainers.utility.DockerImageName;

/**
 * A MinIO server holding fasttier's two buckets: the slow tier (segments) and the fast tier (recent data of
 * led partitions). Other containers on its network reach it as {@code http://minio:9000}
 * ({@link #internalEndpoint()}); the test process at {@link #externalEndpoint()}.
 */
public class FastTierMinioContainer extends GenericContainer<FastTierMinioContainer> {
    public static final int PORT = 9000;
    public static final String DEFAULT_ALIAS = "minio";
    private static final String DATA_DIR = "/data";

    private final String accessKey = "fasttier-test";
    private final String secretKey = "fasttier-test-secret";
    private final String slowBucket;
    private final String fastBucket;
    private final String alias;

    public FastTierMinioContainer() {
        this(FastTierImages.minio());
    }

    public FastTierMinioContainer(DockerImageName image) {
        this(image, "fasttier-slow", "fasttier-fast", DEFAULT_ALIAS);
    }

    /** MinIO with the given buckets, reachable on the network as {@code http://<alias>:9000}. */
    public FastTierMinioContainer(DockerImageName image, String slowBucket, String fastBucket, String alias) {
        super(image);
        this.slowBucket = slowBucket;
        this.fastBucket = fastBucket;
        this.alias = alias;
        withExposedPorts(PORT);
        withNetworkAliases(alias);
        withEnv("MINIO_ROOT_USER", accessKey);
        withEnv("MINIO_ROOT_PASSWORD", secretKey);
        withEnv("MINIO_BUCKETS", slowBucket.equals(fastBucket) ? slowBucket : slowBucket + "," + fastBucket);
        withEnv("MINIO_DATA_DIR", DATA_DIR);
        withEnv("MINIO_REGION", "us-east-1");
        withCommand("server", "--address", ":" + PORT, DATA_DIR);
        waitingFor(Wait.forHttp("/minio/health/live").forPort(PORT).forStatusCode(200)
                .withStartupTimeout(Duration.ofMinutes(2)));
    }

    public String accessKey() {
        return accessKey;
    }

    public String secretKey() {
        return secretKey;
    }

    public String region() {
        return "us-east-1";
    }

    /** Bucket of the slow tier (rsm.config.s3.bucket). */
    public String slowBucket() {
        return slowBucket;
    }

    /** Bucket of the fast tier (rsm.config.wal.bucket). */
    public String fastBucket() {
        return fastBucket;
    }

    /** The S3 endpoint for containers on the same network. */
    public String internalEndpoint() {
        return "http://" + alias + ":" + PORT;
    }

    /** The S3 endpoint for the test process. */
    public String externalEndpoint() {
        return "http://" + getHost() + ":" + getMappedPort(PORT);
    }

    /**
     * Keys of the objects stored in a bucket under a key prefix, read from MinIO's data directory inside the
     * container (a single-drive MinIO keeps each object as a directory holding {@code xl.meta}).
     */
    public List<String> objectKeys(String bucket, String prefix) throws IOException, InterruptedException {
        Container.ExecResult r = execInContainer("find", DATA_DIR + "/" + bucket, "-name", "xl.meta", "-type", "f");
        if (r.getExitCode() != 0) {
            throw new IOException("listing " + bucket + " in " + getContainerName() + " failed: " + r.getStderr());
        }
        String root = DATA_DIR + "/" + bucket + "/";
        List<String> keys = new ArrayList<>();
        for (String line : r.getStdout().split("\n")) {
            if (!line.startsWith(root) || !line.endsWith("/xl.meta")) {
                continue;
            }
            String key = line.substring(root.length(), line.length() - "/xl.meta".length());
            if (key.startsWith(prefix)) {
                keys.add(key);
            }
        }
        keys.sort(null);
        return keys;
    }
}
