package io.fasttier.kafka.jni;

/** Thrown by native code; see {@link NativeBridge} for the error classes. */
public class NativeNotFoundException extends NativeException {
    private static final long serialVersionUID = 1L;

    public NativeNotFoundException(String message) {
        super(message);
    }
}
