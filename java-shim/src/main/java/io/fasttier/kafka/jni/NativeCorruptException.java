package io.fasttier.kafka.jni;

/**
 * Thrown by native code when stored bytes fail verification (CRC-32C mismatch, truncated object, bad
 * manifest); the message names the object key. A kind of {@link NativeFatalException}: retrying the same
 * object does not help.
 */
public class NativeCorruptException extends NativeFatalException {
    private static final long serialVersionUID = 1L;

    public NativeCorruptException(String message) {
        super(message);
    }
}
