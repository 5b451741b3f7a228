package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeBridge;

import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.config.ConfigException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Locale;

/**
 * Loads {@code libfasttier_jni} once per class loader (the JVM binds a JNI library to the class loader that
 * loaded it; {@link NativeBridge} lives in the same loader as this class).
 *
 * <p>Where the library comes from, first match wins:
 * <ol>
 *   <li>An explicit path: the RSM config key {@value #CONFIG_KEY} (broker property
 *       {@code rsm.config.native.library.path}) or the system property {@value #SYSTEM_PROPERTY}. A path that
 *       does not exist or does not load is an error naming the path; there is no silent fallback.</li>
 *   <li>{@code java.library.path}: if a directory on it holds {@code libfasttier_jni.so}, it is loaded with
 *       {@link System#loadLibrary}; a library that is found but fails to load is an error.</li>
 *   <li>The copy inside the plugin jar, {@code native/<os>-<arch>/libfasttier_jni.so}, extracted to a private
 *       (owner-only), uniquely named temporary file that is deleted right after loading. The directory is
 *       {@code java.io.tmpdir} unless the system property {@value #TMPDIR_PROPERTY} names another (use it when the
 *       temporary directory is mounted {@code noexec}).</li>
 * </ol>
 * The source used and the library's {@link NativeBridge#version()} are logged at INFO.
 */
public final class NativeLibraryLoader {
    /** RSM config key (without the {@code rsm.config.} prefix) holding an explicit library path. */
    public static final String CONFIG_KEY = "native.library.path";
    /** System property holding an explicit library path. */
    public static final String SYSTEM_PROPERTY = "fasttier.native.library.path";
    /** System property naming the directory used to extract the library from the jar. */
    public static final String TMPDIR_PROPERTY = "fasttier.native.tmpdir";
    /** Library name as given to {@link System#loadLibrary}. */
    public static final String LIBRARY_NAME = "fasttier_jni";

    private static final Logger LOG = LoggerFactory.getLogger(NativeLibraryLoader.class);
    private static final Object LOCK = new Object();

    /** Human-readable description of where the library was loaded from; null until loaded. */
    private static volatile String loadedFrom;
    /** The explicit path that was loaded, if the library came from one. */
    private static volatile Path loadedExplicitPath;
    private static volatile String nativeVersion;

    private NativeLibraryLoader() {}

    /**
     * Loads the library if this class loader has not loaded it yet.
     *
     * @param configuredPath value of the RSM config key {@value #CONFIG_KEY}, or null
     * @return the native library's version string
     * @throws ConfigException if an explicit path is set but unusable
     * @throws KafkaException  if the library cannot be found or loaded
     */
    public static String load(String configuredPath) {
        String explicit = null;
        String explicitSource = null;
        if (configuredPath != null && !configuredPath.trim().isEmpty()) {
            explicit = configuredPath.trim();
            explicitSource = "rsm.config." + CONFIG_KEY;
        } else {
            String prop = System.getProperty(SYSTEM_PROPERTY);
            if (prop != null && !prop.trim().isEmpty()) {
                explicit = prop.trim();
                explicitSource = "system property " + SYSTEM_PROPERTY;
            }
        }

        synchronized (LOCK) {
            if (loadedFrom != null) {
                if (explicit != null) {
                    Path wanted = checkExplicitPath(explicit, explicitSource);
                    if (!wanted.equals(loadedExplicitPath)) {
                        LOG.warn("fasttier: native library already loaded from {}; ignoring {}={}",
                                loadedFrom, explicitSource, explicit);
                    }
                }
                return nativeVersion;
            }

            String source;
            if (explicit != null) {
                Path path = checkExplicitPath(explicit, explicitSource);
                try {
                    System.load(path.toString());
                } catch (UnsatisfiedLinkError e) {
                    throw new ConfigException("fasttier: cannot load the native library " + path + " given by "
                            + explicitSource + ": " + e.getMessage());
                }
                loadedExplicitPath = path;
                source = path + " (" + explicitSource + ")";
            } else {
                Path onLibraryPath = findOnJavaLibraryPath();
                if (onLibraryPath != null) {
                    try {
                        System.loadLibrary(LIBRARY_NAME);
                    } catch (UnsatisfiedLinkError e) {
                        throw new KafkaException("fasttier: found " + onLibraryPath
                                + " on java.library.path but cannot load it: " + e.getMessage());
                    }
                    source = onLibraryPath + " (java.library.path)";
                } else {
                    source = loadFromJar();
                }
            }

            String version;
            try {
                version = NativeBridge.version();
            } catch (UnsatisfiedLinkError e) {
                throw new KafkaException("fasttier: the native library loaded from " + source
                        + " does not implement the JNI bridge this plugin needs (" + e.getMessage()
                        + "); the jar and the native library must come from the same fasttier build");
            }
            loadedFrom = source;
            nativeVersion = version;
            LOG.info("fasttier: loaded native library {} from {}", version, source);
            return version;
        }
    }

    /** Where the library was loaded from, or null if it is not loaded (for diagnostics and tests). */
    public static String loadedFrom() {
        return loadedFrom;
    }

    /** The {@code <os>-<arch>} directory name used inside the jar for this JVM, e.g. {@code linux-x86_64}. */
    public static String platformDirectory() {
        return platformOs() + "-" + platformArch();
    }

    /** Jar resource name of the library for this JVM's platform. */
    static String resourceName() {
        return "native/" + platformDirectory() + "/" + System.mapLibraryName(LIBRARY_NAME);
    }

    private static Path checkExplicitPath(String explicit, String source) {
        Path path;
        try {
            path = Paths.get(explicit).toAbsolutePath().normalize();
        } catch (RuntimeException e) {
            throw new ConfigException("fasttier: " + source + "=" + explicit + " is not a valid path: " + e.getMessage());
        }
        if (!Files.isRegularFile(path)) {
            throw new ConfigException("fasttier: " + source + "=" + explicit + ": no such file " + path);
        }
        if (!Files.isReadable(path)) {
            throw new ConfigException("fasttier: " + source + "=" + explicit + ": file is not readable " + path);
        }
        return path;
    }

    private static Path findOnJavaLibraryPath() {
        String libPath = System.getProperty("java.library.path");
        if (libPath == null || libPath.isEmpty()) {
            return null;
        }
        String fileName = System.mapLibraryName(LIBRARY_NAME);
        for (String dir : libPath.split(File.pathSeparator)) {
            if (dir.isEmpty()) {
                continue;
            }
            try {
                Path candidate = Paths.get(dir, fileName);
                if (Files.isRegularFile(candidate)) {
                    return candidate.toAbsolutePath();
                }
            } catch (RuntimeException ignored) {
                // malformed entry on java.library.path: not ours to judge
            }
        }
        return null;
    }

    private static String loadFromJar() {
        String resource = resourceName();
        InputStream in = NativeLibraryLoader.class.getClassLoader() == null
                ? ClassLoader.getSystemResourceAsStream(resource)
                : NativeLibraryLoader.class.getClassLoader().getResourceAsStream(resource);
        if (in == null) {
            throw new KafkaException("fasttier: no native library for platform " + platformDirectory()
                    + " (os.name=" + System.getProperty("os.name") + ", os.arch=" + System.getProperty("os.arch")
                    + "): the plugin jar has no " + resource + " and " + System.mapLibraryName(LIBRARY_NAME)
                    + " is not on java.library.path; set rsm.config." + CONFIG_KEY + " to a library built for this platform");
        }
        Path dir = extractionDirectory();
        Path tmp = null;
        try (InputStream resourceStream = in) {
            tmp = createPrivateTempFile(dir);
            Files.copy(resourceStream, tmp, StandardCopyOption.REPLACE_EXISTING);
            try {
                System.load(tmp.toString());
            } catch (UnsatisfiedLinkError e) {
                throw new KafkaException("fasttier: cannot load the native library extracted from the plugin jar ("
                        + resource + " -> " + tmp + "): " + e.getMessage()
                        + (e.getMessage() != null && e.getMessage().contains("failed to map segment")
                        ? "; the directory may be mounted noexec: set -D" + TMPDIR_PROPERTY + " or rsm.config." + CONFIG_KEY
                        : ""));
            }
            return "plugin jar " + resource + " (extracted to " + tmp + ", deleted after load)";
        } catch (IOException e) {
            throw new KafkaException("fasttier: cannot extract the native library " + resource + " into " + dir
                    + ": " + e + "; set -D" + TMPDIR_PROPERTY + "=<writable dir> or rsm.config." + CONFIG_KEY);
        } finally {
            if (tmp != null) {
                try {
                    Files.deleteIfExists(tmp);
                } catch (IOException e) {
                    LOG.warn("fasttier: could not delete the extracted native library {}: {}", tmp, e.toString());
                    tmp.toFile().deleteOnExit();
                }
            }
        }
    }

    private static Path extractionDirectory() {
        String dir = System.getProperty(TMPDIR_PROPERTY);
        if (dir == null || dir.trim().isEmpty()) {
            dir = System.getProperty("java.io.tmpdir");
        }
        return Paths.get(dir.trim());
    }

    private static Path createPrivateTempFile(Path dir) throws IOException {
        Files.createDirectories(dir);
        String prefix = "libfasttier_jni-";
        String mapped = System.mapLibraryName("x");
        String suffix = mapped.substring(mapped.lastIndexOf('.'));
        if (FileSystems.getDefault().supportedFileAttributeViews().contains("posix")) {
            // Owner-only; createTempFile picks a random, unused name and creates it atomically.
            return Files.createTempFile(dir, prefix, suffix,
                    PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        }
        Path tmp = Files.createTempFile(dir, prefix, suffix);
        File f = tmp.toFile();
        boolean ok = f.setReadable(false, false) & f.setReadable(true, true)
                & f.setWritable(false, false) & f.setWritable(true, true)
                & f.setExecutable(false, false) & f.setExecutable(true, true);
        if (!ok) {
            LOG.debug("fasttier: could not restrict permissions of {}", tmp);
        }
        return tmp;
    }

    private static String platformOs() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        if (os.startsWith("linux")) {
            return "linux";
        }
        if (os.startsWith("mac") || os.startsWith("darwin")) {
            return "darwin";
        }
        if (os.startsWith("windows")) {
            return "windows";
        }
        return os.replaceAll("[^a-z0-9]", "");
    }

    private static String platformArch() {
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        switch (arch) {
            case "amd64":
            case "x86_64":
            case "x64":
                return "x86_64";
            case "aarch64":
            case "arm64":
                return "aarch64";
            default:
                return arch.replaceAll("[^a-z0-9_]", "");
        }
    }
}
