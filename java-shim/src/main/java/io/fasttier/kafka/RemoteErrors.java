package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeConfigException;
import io.fasttier.kafka.jni.NativeCorruptException;
import io.fasttier.kafka.jni.NativeException;
import io.fasttier.kafka.jni.NativeNotFoundException;
import io.fasttier.kafka.jni.NativeRetriableException;

import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.errors.CorruptRecordException;
import org.apache.kafka.server.log.remote.storage.RemoteResourceNotFoundException;
import org.apache.kafka.server.log.remote.storage.RemoteStorageException;

import java.lang.reflect.Constructor;
import java.lang.reflect.InvocationTargetException;

/**
 * Maps native errors to the exceptions Kafka expects.
 *
 * <p>The native message is kept unchanged (it names the object key and the cause). The native exception is not
 * attached as the cause: it carries the same message and the same Java stack, so chaining it would only make
 * the broker log print every message twice.
 */
final class RemoteErrors {
    /** Kafka 4.2+ only; looked up once, through the class loader that defines RemoteStorageException. */
    static final String RETRIABLE_CLASS_NAME =
            "org.apache.kafka.server.log.remote.storage.RetriableRemoteStorageException";

    private static final Constructor<? extends RemoteStorageException> RETRIABLE_CTOR = findRetriable();

    private RemoteErrors() {}

    private static Constructor<? extends RemoteStorageException> findRetriable() {
        try {
            ClassLoader loader = RemoteStorageException.class.getClassLoader();
            Class<?> cls = Class.forName(RETRIABLE_CLASS_NAME, false, loader);
            return cls.asSubclass(RemoteStorageException.class).getConstructor(String.class);
        } catch (ReflectiveOperationException | LinkageError | ClassCastException e) {
            return null;
        }
    }

    /** True when the broker has {@code RetriableRemoteStorageException} (Kafka 4.2+). */
    static boolean hasRetriable() {
        return RETRIABLE_CTOR != null;
    }

    /** The Kafka exception for a native error raised by an RSM operation. */
    static RemoteStorageException toRemote(NativeException e) {
        String message = messageOf(e);
        if (e instanceof NativeNotFoundException) {
            return new RemoteResourceNotFoundException(message);
        }
        if (e instanceof NativeRetriableException) {
            return retriable(message);
        }
        return new RemoteStorageException(message);
    }

    /**
     * Whether a native error raised while serving a consumer's read of remote data ({@code fetchLogSegment},
     * its stream, and the OFFSET/TIMESTAMP/TRANSACTION indexes Kafka's {@code RemoteIndexCache} fetches for it)
     * is stored bytes that failed verification: those become Kafka's {@link CorruptRecordException}
     * ({@link #corrupt}), everything else {@link #toRemote}.
     *
     * <p>Why: a stock broker hands any exception of a remote read (RemoteLogReader catches it, unwrapped) to
     * {@code Errors.forException} for the fetch response. {@code RemoteStorageException}, {@code IOException}
     * and {@code KafkaException} have no error code of their own and become {@code UNKNOWN_SERVER_ERROR}, which
     * the Java consumer only logs at WARN and retries forever (FetchCollector), so an application waits
     * silently; {@code CorruptRecordException} becomes {@code CORRUPT_MESSAGE} (error code 2, retriable), which
     * the Java consumer raises from {@code poll()} ("Encountered corrupt message when fetching offset …") and
     * librdkafka reports as a consumer error. The broker log keeps the native message with the object key.
     * Not used for the indexes followers fetch (LEADER_EPOCH, PRODUCER_SNAPSHOT): a follower's fetcher treats
     * an unexpected exception type as fatal for the partition.
     */
    static boolean isCorrupt(NativeException e) {
        return e instanceof NativeCorruptException;
    }

    /** See above: the exception for stored bytes that failed verification, on a consumer's read. */
    static CorruptRecordException corrupt(NativeException e) {
        return new CorruptRecordException("fasttier: corrupt remote data: " + messageOf(e));
    }

    /** A {@code RetriableRemoteStorageException} where the broker has it, else a {@code RemoteStorageException}. */
    static RemoteStorageException retriable(String message) {
        if (RETRIABLE_CTOR != null) {
            try {
                return RETRIABLE_CTOR.newInstance(message);
            } catch (InstantiationException | IllegalAccessException | InvocationTargetException e) {
                // fall through to the plain type
            }
        }
        return new RemoteStorageException(message);
    }

    /**
     * The exception for a native error raised while opening the engine in {@code configure}: the broker logs it
     * once and does not start, so the message alone must tell the operator what to fix.
     */
    static KafkaException toConfigure(NativeException e) {
        String message = messageOf(e);
        if (e instanceof NativeConfigException) {
            return new ConfigException("fasttier: " + message);
        }
        return new KafkaException("fasttier: cannot open the remote store: " + message);
    }

    static String messageOf(Throwable e) {
        String m = e.getMessage();
        return m == null || m.isEmpty() ? e.getClass().getSimpleName() : m;
    }
}
