package io.fasttier.kafka.jni;

/** Thrown by native code; see {@link NativeBridge} for the error classes. */
public class NativeException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public NativeException(String message) {
        super(message);
    }
}
