package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeCorruptException;
import io.fasttier.kafka.jni.NativeFatalException;

import org.apache.kafka.common.errors.CorruptRecordException;
import org.apache.kafka.common.errors.RetriableException;
import org.apache.kafka.common.protocol.Errors;
import org.apache.kafka.server.log.remote.storage.RemoteStorageException;
import org.junit.Test;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

/**
 * What the client sees for an unreadable remote segment: the broker turns the exception of a remote read
 * into the fetch response's error code with {@code Errors.forException} (RemoteLogReader → DelayedRemoteFetch).
 */
public class CorruptReadErrorTest {
    private static final String MSG = "corrupt object: key=p/t-AAAA/0/00000000000000000000-x.log detail=crc32c mismatch";

    @Test
    public void corruptDataIsCorruptMessageForTheClient() {
        CorruptRecordException e = RemoteErrors.corrupt(new NativeCorruptException(MSG));
        assertTrue(e.getMessage(), e.getMessage().contains(MSG));
        assertEquals(Errors.CORRUPT_MESSAGE, Errors.forException(e));
        assertTrue("CORRUPT_MESSAGE is retriable", e instanceof RetriableException);
        assertTrue(RemoteErrors.isCorrupt(new NativeCorruptException(MSG)));
        assertFalse(RemoteErrors.isCorrupt(new NativeFatalException(MSG)));
    }

    /** Before: the same error reached the broker as a RemoteStorageException, i.e. UNKNOWN_SERVER_ERROR. */
    @Test
    public void otherRemoteErrorsAreUnknownServerError() {
        RemoteStorageException e = RemoteErrors.toRemote(new NativeCorruptException(MSG));
        assertEquals(Errors.UNKNOWN_SERVER_ERROR, Errors.forException(e));
        assertEquals(Errors.UNKNOWN_SERVER_ERROR, Errors.forException(new java.io.IOException(MSG)));
    }
}
