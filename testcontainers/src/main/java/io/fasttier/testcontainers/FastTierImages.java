package io.fasttier.testcontainers;

import org.testcontainers.utility.DockerImageName;

/**
 * The container images of fasttier's Testcontainers support.
 *
 * <p>Each name comes from a system property, else an environment variable, else a default tag that
 * {@code tests/scripts/docker.sh build} also applies:
 * <table>
 *   <caption>image names</caption>
 *   <tr><th>image</th><th>system property</th><th>environment</th><th>default</th></tr>
 *   <tr><td>Kafka with fasttier</td><td>fasttier.kafka.image</td><td>FASTTIER_KAFKA_IMAGE</td>
 *       <td>fasttier/kafka-fasttier:4.4.0</td></tr>
 *   <tr><td>Kafka without the plugin</td><td>fasttier.kafka.stock.image</td><td>FASTTIER_KAFKA_STOCK_IMAGE</td>
 *       <td>fasttier/kafka:4.4.0</td></tr>
 *   <tr><td>MinIO</td><td>fasttier.minio.image</td><td>FASTTIER_MINIO_IMAGE</td><td>fasttier/minio:latest</td></tr>
 * </table>
 * The Kafka images are declared compatible substitutes for {@code apache/kafka}, so Testcontainers'
 * {@code org.testcontainers.kafka.KafkaContainer} accepts them.
 */
public final class FastTierImages {
    private FastTierImages() {
    }

    /** Kafka with the fasttier plugin baked in (docker/fasttier/Dockerfile). */
    public static DockerImageName kafka() {
        return DockerImageName.parse(lookup("fasttier.kafka.image", "FASTTIER_KAFKA_IMAGE", "fasttier/kafka-fasttier:4.4.0"))
                .asCompatibleSubstituteFor("apache/kafka");
    }

    /** Kafka only, apache/kafka-compatible (docker/kafka/Dockerfile). */
    public static DockerImageName stockKafka() {
        return DockerImageName.parse(lookup("fasttier.kafka.stock.image", "FASTTIER_KAFKA_STOCK_IMAGE", "fasttier/kafka:4.4.0"))
                .asCompatibleSubstituteFor("apache/kafka");
    }

    /** MinIO (docker/minio/Dockerfile). */
    public static DockerImageName minio() {
        return DockerImageName.parse(lookup("fasttier.minio.image", "FASTTIER_MINIO_IMAGE", "fasttier/minio:latest"));
    }

    static String lookup(String property, String env, String fallback) {
        String v = System.getProperty(property);
        if (v == null || v.isEmpty()) {
            v = System.getenv(env);
        }
        return v == null || v.isEmpty() ? fallback : v;
    }
}
