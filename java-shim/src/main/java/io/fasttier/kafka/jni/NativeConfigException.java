package io.fasttier.kafka.jni;

/** Thrown by native code; see {@link NativeBridge} for the error classes. */
public class NativeConfigException extends NativeException {
    private static final long serialVersionUID = 1L;

    public NativeConfigException(String message) {
        super(message);
    }
}
