package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeBridge;

import org.apache.kafka.common.TopicIdPartition;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.Collection;
import java.util.Collections;
import java.util.HashSet;
import java.util.Set;

/**
 * Process-wide meeting point of fasttier's two Kafka plugins: the {@link FastTierRemoteStorageManager} owns the
 * native engine, {@link FastTierRemoteLogMetadataManager} hears from Kafka which partitions this broker leads and
 * where its log directory is. Kafka configures them in no particular order, so whichever arrives second
 * triggers the native calls: when both are present the engine gets the log directory and the full set of
 * partitions led here; after that, each change as it happens. The registry keeps the current leader set, so an
 * engine that registers late (or again) still gets the whole state.
 *
 * <p>Both plugins must come from the same class loader (the broker's {@code libs/}); a plugin loaded by another
 * class loader has a registry of its own and the fast tier stays idle.
 *
 * <p>Thread safety: every method takes one lock, also around the native calls (they only record the change and
 * wake the native uploader, so they return at once). {@link #unregister} therefore returns only after the last
 * native call with that engine has finished, and none starts afterwards: the RSM closes the engine after it.
 * Nothing here throws: a native failure is logged (with its message) and the registry carries on.
 */
public final class FastTierRegistry {
    private static final Logger LOG = LoggerFactory.getLogger(FastTierRegistry.class);
    private static final Object LOCK = new Object();

    // All guarded by LOCK.
    /** The registered engine handle, 0 if none. */
    private static long engine;
    /** True once the registered engine got the log dirs and the full leader set. */
    private static boolean engineSynced;
    /** True between the RLMM's configure and close. */
    private static boolean rlmmPresent;
    /** The RLMM's {@code log.dir}, or null if it had none. */
    private static String logDir;
    /** Partitions this broker leads, as the RLMM was told. */
    private static final Set<TopicIdPartition> LEADERS = new HashSet<>();

    private FastTierRegistry() {}

    // ---------------------------------------------------------------- the RSM's side

    /** The RSM opened {@code handle}; it replaces any engine registered before. */
    static void register(long handle) {
        if (handle == 0) {
            return;
        }
        synchronized (LOCK) {
            if (engine != 0 && engine != handle) {
                LOG.warn("fasttier: a second remote storage manager registered with the fast tier; "
                        + "the newest one gets the leadership updates");
            }
            engine = handle;
            engineSynced = false;
            syncLocked();
        }
    }

    /** The RSM is about to close {@code handle}: no native call with it starts after this returns. */
    static void unregister(long handle) {
        synchronized (LOCK) {
            if (engine == handle) {
                engine = 0;
                engineSynced = false;
            }
        }
    }

    // ---------------------------------------------------------------- the RLMM's side

    /** The RLMM was configured; {@code dir} is its {@code log.dir} (null if none). Forgets earlier RLMM state. */
    static void rlmmConfigured(String dir) {
        synchronized (LOCK) {
            rlmmPresent = true;
            logDir = dir;
            LEADERS.clear();
            engineSynced = false;
            syncLocked();
        }
    }

    /** Kafka's {@code onPartitionLeadershipChanges}. */
    static void leadershipChanged(Set<TopicIdPartition> leaders, Set<TopicIdPartition> followers) {
        Collection<TopicIdPartition> lead = nonNull(leaders);
        Collection<TopicIdPartition> follow = nonNull(followers);
        synchronized (LOCK) {
            LEADERS.removeAll(follow);
            LEADERS.addAll(lead);
            if (!rlmmPresent) {
                return;
            }
            if (!syncLocked() && engineSynced) {
                Partitions l = new Partitions(lead);
                Partitions f = new Partitions(follow);
                call("leadership change (" + lead.size() + " led, " + follow.size() + " followed)",
                        () -> NativeBridge.fastLeadership(engine, l.topics, l.topicIds, l.partitions,
                                f.topics, f.topicIds, f.partitions));
            }
        }
    }

    /** Kafka's {@code onStopPartitions}. */
    static void partitionsStopped(Set<TopicIdPartition> partitions) {
        Collection<TopicIdPartition> stopped = nonNull(partitions);
        synchronized (LOCK) {
            LEADERS.removeAll(stopped);
            if (!rlmmPresent) {
                return;
            }
            if (!syncLocked() && engineSynced) {
                Partitions p = new Partitions(stopped);
                call("stop of " + stopped.size() + " partitions",
                        () -> NativeBridge.fastStop(engine, p.topics, p.topicIds, p.partitions));
            }
        }
    }

    /** The RLMM closed: its state is forgotten (a new RLMM starts from scratch). */
    static void rlmmClosed() {
        synchronized (LOCK) {
            rlmmPresent = false;
            logDir = null;
            LEADERS.clear();
            engineSynced = false;
        }
    }

    // ---------------------------------------------------------------- state

    /**
     * The native fast tier's status (JSON, see {@link NativeBridge#fastStatus}), or null when no engine is
     * registered or the call failed.
     */
    public static String status() {
        synchronized (LOCK) {
            if (engine == 0) {
                return null;
            }
            try {
                return NativeBridge.fastStatus(engine);
            } catch (RuntimeException | LinkageError e) {
                LOG.warn("fasttier: fast tier status unavailable: {}", RemoteErrors.messageOf(e));
                return null;
            }
        }
    }

    /** Number of partitions the registry believes this broker leads (tests, logs). */
    static int leaderCount() {
        synchronized (LOCK) {
            return LEADERS.size();
        }
    }

    /** Forgets everything (tests only; a broker has one RSM and one RLMM for its whole life). */
    static void resetForTests() {
        synchronized (LOCK) {
            engine = 0;
            engineSynced = false;
            rlmmPresent = false;
            logDir = null;
            LEADERS.clear();
        }
    }

    /**
     * When an engine and the RLMM are both present and the engine has not had the full state yet, hands it over
     * (log dirs, then every led partition). Returns true if it did so (the caller's change is then included).
     */
    private static boolean syncLocked() {
        if (engine == 0 || !rlmmPresent || engineSynced) {
            return false;
        }
        engineSynced = true;
        long handle = engine;
        String[] dirs = logDir == null ? new String[0] : new String[] {logDir};
        boolean dirsOk = call("log dir " + (logDir == null ? "(none)" : logDir),
                () -> NativeBridge.fastLogDirs(handle, dirs));
        Partitions l = new Partitions(LEADERS);
        Partitions none = new Partitions(Collections.emptySet());
        boolean leadersOk = call("full leader set (" + LEADERS.size() + " partitions)",
                () -> NativeBridge.fastLeadership(handle, l.topics, l.topicIds, l.partitions,
                        none.topics, none.topicIds, none.partitions));
        if (dirsOk && leadersOk) {
            LOG.info("fasttier: fast tier has the broker's state (log dir {}, {} led partitions)",
                    logDir == null ? "(none)" : logDir, LEADERS.size());
        }
        return true;
    }

    /** Runs one native call; a failure is logged and swallowed. Returns true on success. */
    private static boolean call(String what, Runnable nativeCall) {
        try {
            nativeCall.run();
            return true;
        } catch (RuntimeException | LinkageError e) {
            // LinkageError: a native library without the fast-tier exports (an older build)
            LOG.warn("fasttier: fast tier did not take the {}: {}", what, RemoteErrors.messageOf(e));
            return false;
        }
    }

    private static Collection<TopicIdPartition> nonNull(Set<TopicIdPartition> s) {
        if (s == null) {
            return Collections.emptySet();
        }
        // drop null entries rather than fail the whole change
        Set<TopicIdPartition> out = new HashSet<>(s);
        out.remove(null);
        return out;
    }

    /** Partitions as the native side takes them: parallel arrays. */
    private static final class Partitions {
        final String[] topics;
        final String[] topicIds;
        final int[] partitions;

        Partitions(Collection<TopicIdPartition> tips) {
            int n = tips.size();
            topics = new String[n];
            topicIds = new String[n];
            partitions = new int[n];
            int i = 0;
            for (TopicIdPartition tip : tips) {
                topics[i] = tip.topic();
                topicIds[i] = tip.topicId().toString();
                partitions[i] = tip.partition();
                i++;
            }
        }
    }
}
