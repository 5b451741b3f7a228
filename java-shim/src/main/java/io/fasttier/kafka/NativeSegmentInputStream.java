package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeBridge;
import io.fasttier.kafka.jni.NativeException;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.InputStream;
import java.lang.ref.Cleaner;
import java.util.Objects;

/**
 * A lazy stream over a remote segment's bytes, backed by a native stream handle: the native side fetches and
 * verifies chunks on demand, so a broker that reads one fetch's worth and closes downloads little more than that.
 *
 * <p>Errors: a native failure while reading becomes an {@link IOException} whose message is the native message.
 * Kafka's {@code RemoteLogReader} catches any exception from {@code RemoteLogManager.read}, logs it, marks the
 * failed-remote-fetch metrics and answers the fetch with an error; a remote read never touches the local log
 * directories, so an IOException here cannot take a log dir (or the broker) offline. IOException is also the
 * only checked type {@link InputStream#read} may throw. Stored bytes that fail verification are the exception:
 * they become Kafka's {@code CorruptRecordException}, which gives the consumer the error code CORRUPT_MESSAGE
 * instead of UNKNOWN_SERVER_ERROR (see {@link RemoteErrors#corrupt}).
 *
 * <p>{@link #close()} is idempotent; any read after it throws {@link IOException}. Reads and close are
 * serialised, so closing from another thread never frees the handle under a running read. A stream that is
 * never closed releases its native handle when it becomes unreachable.
 */
public final class NativeSegmentInputStream extends InputStream {
    private static final Logger LOG = LoggerFactory.getLogger(NativeSegmentInputStream.class);
    private static final Cleaner CLEANER = Cleaner.create();
    private static final int SKIP_BUFFER = 8192;

    /** Owns the native handle; also the lock for reads and close. Must not reference the stream. */
    private static final class Handle implements Runnable {
        private long stream;
        private final String what;

        Handle(long stream, String what) {
            this.stream = stream;
            this.what = what;
        }

        @Override
        public synchronized void run() {
            if (stream != 0) {
                long h = stream;
                stream = 0;
                try {
                    NativeBridge.streamClose(h);
                } catch (NativeException e) {
                    LOG.warn("fasttier: closing the stream over {} failed: {}", what, RemoteErrors.messageOf(e));
                }
            }
        }
    }

    private final Handle handle;
    private final Cleaner.Cleanable cleanable;
    private final String what;

    /**
     * @param streamHandle a handle returned by {@link NativeBridge#streamOpen}; this stream owns it
     * @param what         a short description of the segment for messages, e.g. {@code topic-0 segment <id>}
     */
    NativeSegmentInputStream(long streamHandle, String what) {
        this.what = what;
        this.handle = new Handle(streamHandle, what);
        this.cleanable = CLEANER.register(this, handle);
    }

    @Override
    public int read() throws IOException {
        byte[] one = new byte[1];
        for (int attempt = 0; attempt < 1000; attempt++) {
            int n = read(one, 0, 1);
            if (n != 0) {
                return n < 0 ? -1 : one[0] & 0xff;
            }
        }
        throw new IOException("fasttier: native stream returned no data and no end of stream (" + what + ")");
    }

    @Override
    public int read(byte[] b, int off, int len) throws IOException {
        Objects.checkFromIndexSize(off, len, b.length);
        synchronized (handle) {
            long h = openHandle();
            if (len == 0) {
                return 0;
            }
            try {
                return NativeBridge.streamRead(h, b, off, len);
            } catch (NativeException e) {
                if (RemoteErrors.isCorrupt(e)) {
                    throw RemoteErrors.corrupt(e);
                }
                throw new IOException(RemoteErrors.messageOf(e), e);
            }
        }
    }

    @Override
    public int available() throws IOException {
        synchronized (handle) {
            long h = openHandle();
            try {
                return Math.max(0, NativeBridge.streamAvailable(h));
            } catch (NativeException e) {
                if (RemoteErrors.isCorrupt(e)) {
                    throw RemoteErrors.corrupt(e);
                }
                throw new IOException(RemoteErrors.messageOf(e), e);
            }
        }
    }

    /** Skips by reading (the bytes are verified like any others); returns the number skipped. */
    @Override
    public long skip(long n) throws IOException {
        if (n <= 0) {
            synchronized (handle) {
                openHandle();
            }
            return 0;
        }
        byte[] buf = new byte[(int) Math.min(SKIP_BUFFER, n)];
        long remaining = n;
        while (remaining > 0) {
            int r = read(buf, 0, (int) Math.min(buf.length, remaining));
            if (r < 0) {
                break;
            }
            remaining -= r;
        }
        return n - remaining;
    }

    @Override
    public void close() {
        cleanable.clean(); // runs Handle.run() at most once; idempotent
    }

    @Override
    public String toString() {
        return "NativeSegmentInputStream(" + what + ")";
    }

    private long openHandle() throws IOException {
        long h = handle.stream;
        if (h == 0) {
            throw new IOException("fasttier: stream closed (" + what + ")");
        }
        return h;
    }
}
