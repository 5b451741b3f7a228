package io.fasttier.kafka;

import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.server.log.remote.storage.RemoteLogMetadataManager;
import org.apache.kafka.server.log.remote.storage.RemoteLogSegmentMetadata;
import org.apache.kafka.server.log.remote.storage.RemoteLogSegmentMetadataUpdate;
import org.apache.kafka.server.log.remote.storage.RemotePartitionDeleteMetadata;
import org.apache.kafka.server.log.remote.storage.RemoteStorageException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import javax.management.InstanceNotFoundException;
import javax.management.MBeanServer;
import javax.management.MalformedObjectNameException;
import javax.management.ObjectName;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;

/**
 * fasttier's {@link RemoteLogMetadataManager}: all segment metadata goes to a delegate RLMM (by default Kafka's
 * {@code TopicBasedRemoteLogMetadataManager}); the leadership callbacks also go to the fast tier, which uploads
 * the active segments of the partitions this broker leads.
 *
 * <p>Broker configuration: {@code remote.log.metadata.manager.class.name=io.fasttier.kafka.FastTierRemoteLogMetadataManager}.
 * Kafka hands {@code configure} the {@code rlmm.config.*} properties (prefix stripped) plus {@code broker.id},
 * {@code log.dir}, {@code cluster.id} and the {@code remote.log.metadata.common.client.*} settings. Keys under
 * {@value #PREFIX} are fasttier's own ({@value #DELEGATE_CLASS_KEY}: the delegate class); every other key goes to
 * the delegate unchanged. An unknown {@value #PREFIX} key or an unusable delegate class fails {@code configure}
 * with a {@link ConfigException} naming the broker property.
 *
 * <p>The fast tier hears about the log directory and leadership through {@link FastTierRegistry}, which hands
 * them to the engine of {@link FastTierRemoteStorageManager} (both must be loaded from the broker's class path).
 * Leadership and stop callbacks reach the delegate first; the fast-tier path never throws into Kafka (a failure
 * is logged). Without fasttier's RSM, or with {@code rsm.config.wal.enable=false}, this class is a plain
 * pass-through.
 *
 * <p>Kafka 4.2+ (KIP-1197) starts the default RLMM's initialisation only when the broker is ready, through
 * {@code BrokerReadyCallback.onBrokerReady()}, an interface that does not exist on 4.1 (so this class cannot
 * implement it). When the delegate implements it, this class calls it once the broker reports the
 * {@code RUNNING} state ({@value #BROKER_STATE_MBEAN}, value {@value #BROKER_STATE_RUNNING}); where that metric
 * is not registered (not inside a broker, JMX metric excluded) it calls it right after configuring the
 * delegate, which is how Kafka 4.1 starts it.
 */
public class FastTierRemoteLogMetadataManager implements RemoteLogMetadataManager {
    private static final Logger LOG = LoggerFactory.getLogger(FastTierRemoteLogMetadataManager.class);

    /** Prefix of fasttier's own keys in the configure map ({@code rlmm.config.} stripped). */
    public static final String PREFIX = "fasttier.";
    /** Delegate RLMM class. */
    public static final String DELEGATE_CLASS_KEY = PREFIX + "delegate.class";
    /** Kafka's default RLMM, the default delegate. */
    public static final String DEFAULT_DELEGATE_CLASS =
            "org.apache.kafka.server.log.remote.metadata.storage.TopicBasedRemoteLogMetadataManager";
    /** How Kafka names the broker property behind a key of the configure map. */
    static final String BROKER_PREFIX = "rlmm.config.";

    /** Kafka 4.2+'s broker-ready callback interface (KIP-1197), looked up by name. */
    static final String BROKER_READY_CALLBACK =
            "org.apache.kafka.server.log.remote.metadata.storage.BrokerReadyCallback";
    /** The broker's state gauge (KafkaBroker), a standard broker metric. */
    static final String BROKER_STATE_MBEAN = "kafka.server:type=KafkaServer,name=BrokerState";
    /** {@code BrokerState.RUNNING}. */
    static final int BROKER_STATE_RUNNING = 3;
    /** How often the broker state is polled while waiting for RUNNING. */
    static final long BROKER_READY_POLL_MS = 200;

    private final Object lock = new Object();
    // guarded by lock (written once in configure; volatile for the unlocked reads of the forwarding methods)
    private volatile RemoteLogMetadataManager delegate;
    private boolean closed;
    private Thread readyWaiter;

    public FastTierRemoteLogMetadataManager() {}

    /**
     * Creates and configures the delegate, then tells the fast tier the broker's log directory.
     *
     * @throws ConfigException for an unknown {@value #PREFIX} key or an unusable {@value #DELEGATE_CLASS_KEY}
     *                         (the message names the broker property), or if called twice
     */
    @Override
    public void configure(Map<String, ?> configs) {
        Objects.requireNonNull(configs, "configs");
        Map<String, Object> forDelegate = new HashMap<>();
        Object delegateClass = DEFAULT_DELEGATE_CLASS;
        Set<String> unknown = new TreeSet<>();
        for (Map.Entry<String, ?> e : configs.entrySet()) {
            String key = e.getKey();
            if (key != null && key.startsWith(PREFIX)) {
                if (key.equals(DELEGATE_CLASS_KEY)) {
                    if (e.getValue() != null && !String.valueOf(e.getValue()).trim().isEmpty()) {
                        delegateClass = e.getValue();
                    }
                } else {
                    unknown.add(BROKER_PREFIX + key);
                }
            } else {
                forDelegate.put(key, e.getValue());
            }
        }
        if (!unknown.isEmpty()) {
            throw new ConfigException("fasttier: unknown setting " + String.join(", ", unknown)
                    + " (fasttier's RLMM knows only " + BROKER_PREFIX + DELEGATE_CLASS_KEY + ")");
        }
        RemoteLogMetadataManager d;
        synchronized (lock) {
            if (closed) {
                throw new ConfigException("fasttier: configure called on a closed remote log metadata manager");
            }
            if (delegate != null) {
                throw new ConfigException("fasttier: remote log metadata manager configured twice");
            }
            d = newDelegate(delegateClass);
            d.configure(forDelegate);
            delegate = d;
            Method onReady = brokerReadyMethod(d.getClass());
            if (onReady != null) {
                readyWaiter = startBrokerReady(d, onReady);
            }
        }
        Object logDir = configs.get("log.dir");
        LOG.info("fasttier: remote log metadata manager ready (delegate {}, log.dir={})",
                d.getClass().getName(), logDir);
        FastTierRegistry.rlmmConfigured(logDir == null ? null : String.valueOf(logDir));
    }

    private static ConfigException badDelegate(String className, String reason) {
        return new ConfigException("fasttier: invalid " + BROKER_PREFIX + DELEGATE_CLASS_KEY + "=" + className + ": "
                + reason);
    }

    private static RemoteLogMetadataManager newDelegate(Object spec) {
        Class<?> cls;
        if (spec instanceof Class) {
            cls = (Class<?>) spec;
        } else {
            String name = String.valueOf(spec).trim();
            try {
                cls = Class.forName(name, true, FastTierRemoteLogMetadataManager.class.getClassLoader());
            } catch (ClassNotFoundException e) {
                throw badDelegate(name, "no such class on the broker's class path");
            } catch (LinkageError e) {
                throw badDelegate(name, "cannot load the class: " + RemoteErrors.messageOf(e));
            }
        }
        if (!RemoteLogMetadataManager.class.isAssignableFrom(cls)) {
            throw badDelegate(cls.getName(), "it does not implement " + RemoteLogMetadataManager.class.getName());
        }
        if (FastTierRemoteLogMetadataManager.class.isAssignableFrom(cls)) {
            throw badDelegate(cls.getName(), "the delegate must be another remote log metadata manager, "
                    + "not fasttier's own");
        }
        try {
            return cls.asSubclass(RemoteLogMetadataManager.class).getDeclaredConstructor().newInstance();
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause() == null ? e : e.getCause();
            throw badDelegate(cls.getName(), "its constructor failed: " + RemoteErrors.messageOf(cause));
        } catch (ReflectiveOperationException | LinkageError | RuntimeException e) {
            throw badDelegate(cls.getName(), "cannot instantiate it (it needs a public no-argument constructor): "
                    + RemoteErrors.messageOf(e));
        }
    }

    /** The delegate's {@code BrokerReadyCallback.onBrokerReady()} (Kafka 4.2+), or null if it has none. */
    static Method brokerReadyMethod(Class<?> cls) {
        Deque<Class<?>> todo = new ArrayDeque<>();
        Set<Class<?>> seen = new HashSet<>();
        for (Class<?> c = cls; c != null; c = c.getSuperclass()) {
            todo.add(c);
        }
        while (!todo.isEmpty()) {
            Class<?> c = todo.poll();
            if (!seen.add(c)) {
                continue;
            }
            if (c.isInterface() && c.getName().equals(BROKER_READY_CALLBACK)) {
                try {
                    return c.getMethod("onBrokerReady");
                } catch (NoSuchMethodException e) {
                    return null;
                }
            }
            for (Class<?> i : c.getInterfaces()) {
                todo.add(i);
            }
        }
        return null;
    }

    /**
     * Calls the delegate's {@code onBrokerReady} once the broker is RUNNING (or now, if the broker's state is not
     * visible). Returns the waiting thread, or null if it was called at once.
     */
    private Thread startBrokerReady(RemoteLogMetadataManager d, Method onReady) {
        MBeanServer server = ManagementFactory.getPlatformMBeanServer();
        ObjectName name;
        try {
            name = new ObjectName(BROKER_STATE_MBEAN);
        } catch (MalformedObjectNameException e) {
            throw new IllegalStateException(e);
        }
        if (brokerState(server, name) == null) {
            LOG.info("fasttier: broker state not visible ({}); telling the delegate the broker is ready now",
                    BROKER_STATE_MBEAN);
            fireBrokerReady(d, onReady);
            return null;
        }
        Thread t = new Thread(() -> {
            try {
                while (!Thread.currentThread().isInterrupted()) {
                    Integer state = brokerState(server, name);
                    if (state == null || state == BROKER_STATE_RUNNING) {
                        LOG.info("fasttier: broker {}; telling the delegate the broker is ready",
                                state == null ? "state no longer visible" : "is running");
                        fireBrokerReady(d, onReady);
                        return;
                    }
                    Thread.sleep(BROKER_READY_POLL_MS);
                }
            } catch (InterruptedException e) {
                // closed before the broker became ready
            }
        }, "fasttier-rlmm-broker-ready");
        t.setDaemon(true);
        t.start();
        return t;
    }

    /** The broker state gauge's value, or null if it is not registered (or unreadable). */
    private static Integer brokerState(MBeanServer server, ObjectName name) {
        try {
            Object v = server.getAttribute(name, "Value");
            return v instanceof Number ? ((Number) v).intValue() : null;
        } catch (InstanceNotFoundException e) {
            return null;
        } catch (Exception e) {
            LOG.debug("fasttier: cannot read {}: {}", BROKER_STATE_MBEAN, RemoteErrors.messageOf(e));
            return null;
        }
    }

    /** Calls {@code onReady} on the delegate unless this RLMM is closed (close waits for a running call). */
    private void fireBrokerReady(RemoteLogMetadataManager d, Method onReady) {
        synchronized (lock) {
            if (closed) {
                return;
            }
            callBrokerReady(d, onReady);
        }
    }

    private static void callBrokerReady(RemoteLogMetadataManager d, Method onReady) {
        try {
            onReady.invoke(d);
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause() == null ? e : e.getCause();
            LOG.error("fasttier: the delegate's onBrokerReady failed: {}", RemoteErrors.messageOf(cause), cause);
        } catch (IllegalAccessException | RuntimeException e) {
            LOG.error("fasttier: cannot call the delegate's onBrokerReady: {}", RemoteErrors.messageOf(e), e);
        }
    }

    /** The configured delegate (for tests and diagnostics). */
    RemoteLogMetadataManager delegate() {
        return delegate;
    }

    private RemoteLogMetadataManager d() {
        RemoteLogMetadataManager d = delegate;
        if (d == null) {
            throw new IllegalStateException("fasttier: remote log metadata manager is not configured");
        }
        return d;
    }

    // ---------------------------------------------------------------- segment metadata: the delegate's

    @Override
    public CompletableFuture<Void> addRemoteLogSegmentMetadata(RemoteLogSegmentMetadata metadata)
            throws RemoteStorageException {
        return d().addRemoteLogSegmentMetadata(metadata);
    }

    @Override
    public CompletableFuture<Void> updateRemoteLogSegmentMetadata(RemoteLogSegmentMetadataUpdate update)
            throws RemoteStorageException {
        return d().updateRemoteLogSegmentMetadata(update);
    }

    @Override
    public Optional<RemoteLogSegmentMetadata> remoteLogSegmentMetadata(TopicIdPartition topicIdPartition,
                                                                       int epochForOffset, long offset)
            throws RemoteStorageException {
        return d().remoteLogSegmentMetadata(topicIdPartition, epochForOffset, offset);
    }

    @Override
    public Optional<Long> highestOffsetForEpoch(TopicIdPartition topicIdPartition, int leaderEpoch)
            throws RemoteStorageException {
        return d().highestOffsetForEpoch(topicIdPartition, leaderEpoch);
    }

    @Override
    public CompletableFuture<Void> putRemotePartitionDeleteMetadata(RemotePartitionDeleteMetadata metadata)
            throws RemoteStorageException {
        return d().putRemotePartitionDeleteMetadata(metadata);
    }

    @Override
    public Iterator<RemoteLogSegmentMetadata> listRemoteLogSegments(TopicIdPartition topicIdPartition)
            throws RemoteStorageException {
        return d().listRemoteLogSegments(topicIdPartition);
    }

    @Override
    public Iterator<RemoteLogSegmentMetadata> listRemoteLogSegments(TopicIdPartition topicIdPartition,
                                                                    int leaderEpoch)
            throws RemoteStorageException {
        return d().listRemoteLogSegments(topicIdPartition, leaderEpoch);
    }

    @Override
    public long remoteLogSize(TopicIdPartition topicIdPartition, int leaderEpoch) throws RemoteStorageException {
        return d().remoteLogSize(topicIdPartition, leaderEpoch);
    }

    @Override
    public Optional<RemoteLogSegmentMetadata> nextSegmentWithTxnIndex(TopicIdPartition topicIdPartition, int epoch,
                                                                      long offset)
            throws RemoteStorageException {
        return d().nextSegmentWithTxnIndex(topicIdPartition, epoch, offset);
    }

    @Override
    public boolean isReady(TopicIdPartition topicIdPartition) {
        RemoteLogMetadataManager d = delegate;
        return d != null && d.isReady(topicIdPartition);
    }

    // ---------------------------------------------------------------- leadership: the delegate's, then the fast tier's

    @Override
    public void onPartitionLeadershipChanges(Set<TopicIdPartition> leaderPartitions,
                                             Set<TopicIdPartition> followerPartitions) {
        try {
            d().onPartitionLeadershipChanges(leaderPartitions, followerPartitions);
        } finally {
            // the facts hold whatever the delegate made of them
            try {
                FastTierRegistry.leadershipChanged(leaderPartitions, followerPartitions);
            } catch (RuntimeException | LinkageError e) {
                LOG.warn("fasttier: fast tier missed a leadership change: {}", RemoteErrors.messageOf(e));
            }
        }
    }

    @Override
    public void onStopPartitions(Set<TopicIdPartition> partitions) {
        try {
            d().onStopPartitions(partitions);
        } finally {
            try {
                FastTierRegistry.partitionsStopped(partitions);
            } catch (RuntimeException | LinkageError e) {
                LOG.warn("fasttier: fast tier missed stopped partitions: {}", RemoteErrors.messageOf(e));
            }
        }
    }

    /** Closes the delegate; the fast tier forgets this RLMM's state. Idempotent. */
    @Override
    public void close() throws IOException {
        RemoteLogMetadataManager d;
        Thread waiter;
        synchronized (lock) {
            if (closed) {
                return;
            }
            closed = true;
            d = delegate;
            waiter = readyWaiter;
            readyWaiter = null;
        }
        if (waiter != null) {
            waiter.interrupt();
        }
        try {
            FastTierRegistry.rlmmClosed();
        } finally {
            if (d != null) {
                d.close();
            }
        }
    }
}
