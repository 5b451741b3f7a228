package io.fasttier.kafka.jni;

/** Thrown by native code; see {@link NativeBridge} for the error classes. */
public class NativeFatalException extends NativeException {
    private static final long serialVersionUID = 1L;

    public NativeFatalException(String message) {
        super(message);
    }
}
