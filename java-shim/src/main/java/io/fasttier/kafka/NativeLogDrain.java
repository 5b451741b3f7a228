package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeBridge;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.TimeUnit;

/**
 * Moves the native library's buffered log records into SLF4J (the broker's logging).
 *
 * <p>One daemon thread per JVM (per class loader), named {@value #THREAD_NAME}, shared by all RSM instances
 * through a reference count: {@link #acquire()} in {@code configure}, {@link #release()} in {@code close}. The
 * last release stops the thread and drains what is left on the caller's thread, so records written while the
 * engine closed are not lost.
 *
 * <p>Each record {@code LEVEL|target|message} is logged at its level by the logger
 * {@code io.fasttier.native.<target>}, with Rust's {@code ::} path separators turned into dots
 * (e.g. target {@code fasttier_core::upload} logs as {@code io.fasttier.native.fasttier_core.upload}), so
 * broker log configuration can tune native logging like any Java package.
 */
final class NativeLogDrain {
    static final String THREAD_NAME = "fasttier-native-log";
    static final String LOGGER_PREFIX = "io.fasttier.native";
    static final int BATCH = 256;
    static final long INTERVAL_MS = 200;

    private static final Logger LOG = LoggerFactory.getLogger(NativeLogDrain.class);
    private static final Object LOCK = new Object();
    private static final ConcurrentMap<String, Logger> LOGGERS = new ConcurrentHashMap<>();
    /** Serialises draining, so the thread and a final drain never interleave records out of order. */
    private static final Object DRAIN_LOCK = new Object();

    private static int refs;
    private static Drainer drainer;

    private NativeLogDrain() {}

    /** Registers one user; starts the thread for the first. The native library must be loaded. */
    static void acquire() {
        synchronized (LOCK) {
            if (refs++ == 0) {
                drainer = new Drainer();
                Thread t = new Thread(drainer, THREAD_NAME);
                t.setDaemon(true);
                drainer.thread = t;
                t.start();
            }
        }
    }

    /** Unregisters one user; the last one stops the thread and drains the remaining records. */
    static void release() {
        Drainer stopping = null;
        synchronized (LOCK) {
            if (refs == 0) {
                return;
            }
            if (--refs == 0) {
                stopping = drainer;
                drainer = null;
            }
        }
        if (stopping != null) {
            stopping.stop();
            try {
                drainOnce(64);
            } catch (Throwable t) {
                LOG.debug("fasttier: final native log drain failed: {}", t.toString());
            }
        }
    }

    /** Number of registered users (for tests). */
    static int users() {
        synchronized (LOCK) {
            return refs;
        }
    }

    /** True while the drain thread runs (for tests). */
    static boolean running() {
        synchronized (LOCK) {
            return drainer != null && drainer.thread.isAlive();
        }
    }

    /**
     * Drains up to {@code maxBatches} batches. Returns true if the last batch was full (more may be waiting).
     */
    static boolean drainOnce(int maxBatches) {
        synchronized (DRAIN_LOCK) {
            for (int i = 0; i < maxBatches; i++) {
                String[] records = NativeBridge.drainLogs(BATCH);
                if (records == null || records.length == 0) {
                    return false;
                }
                for (String record : records) {
                    emit(record);
                }
                if (records.length < BATCH) {
                    return false;
                }
            }
            return true;
        }
    }

    static void emit(String record) {
        if (record == null) {
            return;
        }
        int first = record.indexOf('|');
        int second = first < 0 ? -1 : record.indexOf('|', first + 1);
        if (first < 0 || second < 0) {
            loggerFor("").info("{}", record);
            return;
        }
        String level = record.substring(0, first).trim();
        String target = record.substring(first + 1, second).trim();
        String message = record.substring(second + 1);
        Logger logger = loggerFor(target);
        switch (level) {
            case "ERROR":
                logger.error("{}", message);
                break;
            case "WARN":
                logger.warn("{}", message);
                break;
            case "INFO":
                logger.info("{}", message);
                break;
            case "DEBUG":
                logger.debug("{}", message);
                break;
            case "TRACE":
                logger.trace("{}", message);
                break;
            default:
                logger.info("{}|{}", level, message);
        }
    }

    static Logger loggerFor(String target) {
        return LOGGERS.computeIfAbsent(target, t -> {
            String suffix = t.replace("::", ".").replaceAll("[^A-Za-z0-9_.$-]", "_");
            while (suffix.startsWith(".")) {
                suffix = suffix.substring(1);
            }
            return LoggerFactory.getLogger(suffix.isEmpty() ? LOGGER_PREFIX : LOGGER_PREFIX + "." + suffix);
        });
    }

    private static final class Drainer implements Runnable {
        private volatile boolean stopped;
        private volatile Thread thread;

        @Override
        public void run() {
            while (!stopped) {
                boolean more;
                try {
                    more = drainOnce(16);
                } catch (UnsatisfiedLinkError e) {
                    LOG.error("fasttier: the native library has no log bridge ({}); native logs are lost", e.getMessage());
                    return;
                } catch (Throwable t) {
                    LOG.warn("fasttier: draining native logs failed: {}", t.toString());
                    more = false;
                }
                if (!more) {
                    try {
                        TimeUnit.MILLISECONDS.sleep(INTERVAL_MS);
                    } catch (InterruptedException e) {
                        if (stopped) {
                            return;
                        }
                    }
                }
            }
        }

        void stop() {
            stopped = true;
            Thread t = thread;
            t.interrupt();
            if (t != Thread.currentThread()) {
                try {
                    t.join(TimeUnit.SECONDS.toMillis(5));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
        }
    }
}
