package io.fasttier.kafka;

import io.fasttier.kafka.jni.NativeBridge;

import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.config.ConfigException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
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
 *   <li>The copy inside the plugin jar, {@code native/<os>-<arch>/libfasttier_jni.so}, extracted under a
 *       content-addressed name, {@code libfasttier_jni-<sha256 of the bytes>.so}, by an atomic rename of a
 *       private temporary file (see {@link #extract}); a file already there with the same bytes is reused, and
 *       no file another process may have loaded is ever rewritten or deleted. The directory is
 *       {@code <java.io.tmpdir>/fasttier-native-<user>} (owner-only) unless the system property
 *       {@value #TMPDIR_PROPERTY} names another (use it when the temporary directory is mounted {@code noexec}).</li>
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
        Path lib;
        try (InputStream resourceStream = in) {
            byte[] bytes = readAll(resourceStream);
            lib = extract(bytes, dir);
        } catch (IOException | RuntimeException e) {
            throw new KafkaException("fasttier: cannot extract the native library " + resource + " into " + dir
                    + ": " + e + "; set -D" + TMPDIR_PROPERTY + "=<private writable dir> or rsm.config." + CONFIG_KEY);
        }
        try {
            System.load(lib.toString());
        } catch (UnsatisfiedLinkError e) {
            throw new KafkaException("fasttier: cannot load the native library extracted from the plugin jar ("
                    + resource + " -> " + lib + "): " + e.getMessage()
                    + (e.getMessage() != null && e.getMessage().contains("failed to map segment")
                    ? "; the directory may be mounted noexec: set -D" + TMPDIR_PROPERTY + " or rsm.config." + CONFIG_KEY
                    : ""));
        }
        return "plugin jar " + resource + " (extracted to " + lib + ")";
    }

    /** File name prefix of extracted libraries; the SHA-256 of the library bytes follows. */
    static final String EXTRACTED_PREFIX = "libfasttier_jni-";
    /** Temporary files older than this are left-overs of an extraction that died (one takes milliseconds). */
    static final long STALE_TEMP_MS = 3_600_000L;

    /**
     * Puts {@code bytes} into {@code dir} as {@code libfasttier_jni-<sha256 of bytes>.so} and returns its path.
     *
     * <p>The file is never written in place: a library that another process (another broker on this host, or
     * the old JVM of a restart) has mapped stays byte-for-byte what it loaded. A file already there with the
     * right content is reused as it is. Otherwise the bytes go to a new owner-only temporary file in the same
     * directory, are synced, made read-only and renamed onto the final name in one atomic step (a reader sees
     * the whole old file or the whole new one; a process that mapped a replaced file keeps its inode). Two
     * processes extracting at once each write their own temporary file and rename it; both copies are the
     * same bytes. Extracted libraries are never deleted here: with several JVMs per host there is no way to
     * know that none still uses an older one (see docs/operations.md). Temporary files older than an hour,
     * which no process loads, are removed.
     */
    static Path extract(byte[] bytes, Path dir) throws IOException {
        String hash = sha256Hex(bytes);
        String mapped = System.mapLibraryName("x");
        String suffix = mapped.substring(mapped.lastIndexOf('.'));
        Path target = dir.resolve(EXTRACTED_PREFIX + hash + suffix);
        prepareDirectory(dir);
        removeStaleTemporaries(dir);
        if (Files.isRegularFile(target, LinkOption.NOFOLLOW_LINKS) && hash.equals(sha256Hex(Files.readAllBytes(target)))) {
            LOG.debug("fasttier: reusing the extracted native library {}", target);
            return target;
        }
        Path tmp = createPrivateTempFile(dir, "." + EXTRACTED_PREFIX + hash + ".", ".tmp");
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
                ByteBuffer b = ByteBuffer.wrap(bytes);
                while (b.hasRemaining()) {
                    ch.write(b);
                }
                ch.force(true);
            }
            if (isPosix()) {
                Files.setPosixFilePermissions(tmp, PosixFilePermissions.fromString("r-x------"));
            }
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE);
            tmp = null;
        } finally {
            if (tmp != null) {
                Files.deleteIfExists(tmp);
            }
        }
        LOG.info("fasttier: extracted the native library to {}", target);
        return target;
    }

    private static void prepareDirectory(Path dir) throws IOException {
        if (isPosix() && !Files.exists(dir, LinkOption.NOFOLLOW_LINKS)) {
            try {
                Files.createDirectories(dir,
                        PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
            } catch (java.nio.file.FileAlreadyExistsException raced) {
                // created by another process meanwhile: checked below like any existing directory
            }
        } else {
            Files.createDirectories(dir);
        }
        if (!Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS)) {
            throw new IOException(dir + " is not a directory (or is a symbolic link)");
        }
        if (isPosix()) {
            // A directory that someone else owns or can write to would let them swap the library under us.
            String owner = Files.getOwner(dir, LinkOption.NOFOLLOW_LINKS).getName();
            String me = System.getProperty("user.name");
            if (me != null && !me.equals(owner)) {
                throw new IOException(dir + " is owned by " + owner + ", not by " + me);
            }
            java.util.Set<java.nio.file.attribute.PosixFilePermission> perms =
                    Files.getPosixFilePermissions(dir, LinkOption.NOFOLLOW_LINKS);
            if (perms.contains(java.nio.file.attribute.PosixFilePermission.GROUP_WRITE)
                    || perms.contains(java.nio.file.attribute.PosixFilePermission.OTHERS_WRITE)) {
                throw new IOException(dir + " is writable by group or others ("
                        + PosixFilePermissions.toString(perms) + ")");
            }
        }
    }

    private static void removeStaleTemporaries(Path dir) {
        long now = System.currentTimeMillis();
        try (java.util.stream.Stream<Path> files = Files.list(dir)) {
            files.filter(p -> {
                String n = p.getFileName().toString();
                return n.startsWith("." + EXTRACTED_PREFIX) && n.endsWith(".tmp");
            }).forEach(p -> {
                try {
                    if (now - Files.getLastModifiedTime(p, LinkOption.NOFOLLOW_LINKS).toMillis() > STALE_TEMP_MS) {
                        Files.deleteIfExists(p);
                    }
                } catch (IOException e) {
                    LOG.debug("fasttier: could not remove the stale temporary file {}: {}", p, e.toString());
                }
            });
        } catch (IOException e) {
            LOG.debug("fasttier: could not list {}: {}", dir, e.toString());
        }
    }

    static String sha256Hex(byte[] bytes) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(bytes);
            StringBuilder sb = new StringBuilder(d.length * 2);
            for (byte x : d) {
                sb.append(Character.forDigit((x >> 4) & 0xf, 16)).append(Character.forDigit(x & 0xf, 16));
            }
            return sb.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 unavailable", e); // every Java SE has it
        }
    }

    private static byte[] readAll(InputStream in) throws IOException {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream(1 << 20);
        byte[] buf = new byte[1 << 16];
        int n;
        while ((n = in.read(buf)) > 0) {
            out.write(buf, 0, n);
        }
        return out.toByteArray();
    }

    /**
     * The directory libraries are extracted to: {@value #TMPDIR_PROPERTY} as given, else a per-user
     * {@code fasttier-native-<user>} directory under {@code java.io.tmpdir} (private: owner-only).
     */
    static Path extractionDirectory() {
        String dir = System.getProperty(TMPDIR_PROPERTY);
        if (dir != null && !dir.trim().isEmpty()) {
            return Paths.get(dir.trim());
        }
        String user = System.getProperty("user.name", "unknown").replaceAll("[^A-Za-z0-9._-]", "_");
        return Paths.get(System.getProperty("java.io.tmpdir").trim(), "fasttier-native-" + user);
    }

    private static boolean isPosix() {
        return FileSystems.getDefault().supportedFileAttributeViews().contains("posix");
    }

    private static Path createPrivateTempFile(Path dir, String prefix, String suffix) throws IOException {
        if (isPosix()) {
            // Owner-only; createTempFile picks a random, unused name and creates it atomically.
            return Files.createTempFile(dir, prefix, suffix,
                    PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
        }
        Path tmp = Files.createTempFile(dir, prefix, suffix);
        File f = tmp.toFile();
        boolean ok = f.setReadable(false, false) & f.setReadable(true, true)
                & f.setWritable(false, false) & f.setWritable(true, true);
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
