package io.fasttier.kafka;

import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;

/**
 * Extraction of the native library from the jar ({@link NativeLibraryLoader#extract}): content-addressed,
 * atomic, never rewriting a file another process may have mapped. No library is loaded here (a JVM binds a
 * JNI library once); the bytes are arbitrary.
 */
public class NativeLibraryExtractionTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    private static byte[] lib(String s) {
        return ("ELF-ish library " + s).getBytes(StandardCharsets.UTF_8);
    }

    private Path dir() throws Exception {
        Path d = folder.getRoot().toPath().resolve("native");
        return d;
    }

    @Test(timeout = 30_000)
    public void nameCarriesTheHashOfTheBytes() throws Exception {
        byte[] a = lib("a");
        Path p = NativeLibraryLoader.extract(a, dir());
        assertEquals("libfasttier_jni-" + NativeLibraryLoader.sha256Hex(a) + ".so", p.getFileName().toString());
        assertArrayEquals(a, Files.readAllBytes(p));
        assertFalse("extracted file must not be writable in place", Files.isWritable(p) && !isRoot());
        Path q = NativeLibraryLoader.extract(lib("b"), dir());
        assertNotEquals(p, q);
        assertArrayEquals("another build's library is left alone", a, Files.readAllBytes(p));
    }

    @Test(timeout = 30_000)
    public void anExistingCopyIsReusedNotRewritten() throws Exception {
        byte[] a = lib("a");
        Path p = NativeLibraryLoader.extract(a, dir());
        Object inode = Files.readAttributes(p, java.nio.file.attribute.BasicFileAttributes.class).fileKey();
        FileTime old = FileTime.fromMillis(System.currentTimeMillis() - 86_400_000L);
        Files.setLastModifiedTime(p, old);
        Path again = NativeLibraryLoader.extract(a, dir());
        assertEquals(p, again);
        assertEquals(inode, Files.readAttributes(p, java.nio.file.attribute.BasicFileAttributes.class).fileKey());
        assertEquals("the file was written again", old, Files.getLastModifiedTime(p));
    }

    @Test(timeout = 30_000)
    public void aDamagedCopyIsReplacedByRenameLeavingTheMappedInodeIntact() throws Exception {
        byte[] a = lib("a");
        Path p = NativeLibraryLoader.extract(a, dir());
        // Stand-in for another process that has the file mapped: a hard link keeps the inode reachable.
        Path mapped = folder.getRoot().toPath().resolve("held-by-another-process");
        Files.createLink(mapped, p);
        p.toFile().setWritable(true, true);
        Files.write(p, lib("x")); // damaged in place by someone else (same length not required)
        byte[] damaged = Files.readAllBytes(mapped);
        Path again = NativeLibraryLoader.extract(a, dir());
        assertEquals(p, again);
        assertArrayEquals(a, Files.readAllBytes(p));
        assertArrayEquals("the old inode must not be rewritten", damaged, Files.readAllBytes(mapped));
    }

    @Test(timeout = 60_000)
    public void concurrentExtractionsAllSeeTheWholeLibrary() throws Exception {
        byte[] big = new byte[4 << 20];
        new java.util.Random(7).nextBytes(big);
        int n = 8;
        ExecutorService pool = Executors.newFixedThreadPool(n);
        CountDownLatch go = new CountDownLatch(1);
        List<Future<byte[]>> results = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            results.add(pool.submit(() -> {
                go.await();
                Path p = NativeLibraryLoader.extract(big, dir());
                return Files.readAllBytes(p);
            }));
        }
        go.countDown();
        for (Future<byte[]> f : results) {
            assertArrayEquals(big, f.get(30, TimeUnit.SECONDS));
        }
        pool.shutdown();
        try (Stream<Path> files = Files.list(dir())) {
            List<String> names = new ArrayList<>();
            files.forEach(f -> names.add(f.getFileName().toString()));
            assertEquals(names.toString(), 1, names.size());
        }
    }

    @Test(timeout = 30_000)
    public void staleTemporariesAreRemovedFreshOnesKept() throws Exception {
        Path d = dir();
        NativeLibraryLoader.extract(lib("a"), d);
        Path stale = d.resolve(".libfasttier_jni-dead.123.tmp");
        Path fresh = d.resolve(".libfasttier_jni-live.456.tmp");
        Files.write(stale, lib("partial"));
        Files.write(fresh, lib("being written"));
        Files.setLastModifiedTime(stale, FileTime.fromMillis(System.currentTimeMillis() - 2 * NativeLibraryLoader.STALE_TEMP_MS));
        NativeLibraryLoader.extract(lib("a"), d);
        assertFalse(Files.exists(stale));
        assertTrue("a temporary file another process may be writing must stay", Files.exists(fresh));
    }

    @Test(timeout = 30_000)
    public void aDirectoryOthersCanWriteIsRefused() throws Exception {
        Path d = dir();
        Files.createDirectories(d);
        Files.setPosixFilePermissions(d, java.nio.file.attribute.PosixFilePermissions.fromString("rwxrwxrwx"));
        try {
            NativeLibraryLoader.extract(lib("a"), d);
            throw new AssertionError("extraction into a world-writable directory accepted");
        } catch (java.io.IOException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("writable by group or others"));
        }
    }

    private static boolean isRoot() {
        return "root".equals(System.getProperty("user.name"));
    }
}
