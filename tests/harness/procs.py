"""Process plumbing shared by the test servers: free ports, child processes that never outlive the
test run, waiting.

Every child is started
  * in its own session (so a Ctrl-C in the terminal reaches pytest, which then stops the children in
    order, instead of reaching the JVMs directly),
  * with PR_SET_PDEATHSIG=SIGKILL (so a pytest that is itself SIGKILLed takes its children with it),
  * registered in a module-level table that an atexit hook empties (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, TypeVar

T = TypeVar("T")

LOOPBACK = "127.0.0.1"

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Where setup.sh puts what it installs (Kafka class paths, the MinIO binary)."""
    return Path(os.environ.get("FASTTIER_CACHE", str(Path.home() / ".cache" / "fasttier")))


class HarnessError(RuntimeError):
    pass


class TimeoutExpired(HarnessError):
    pass


class StopWaiting(HarnessError):
    """Raised inside a wait_until predicate: the condition can never become true; fail at once."""


# --------------------------------------------------------------------------------------------------
# ports

_port_lock = threading.Lock()
_handed_out: set[int] = set()


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (all held open at once, so they differ)."""
    with _port_lock:
        socks = []
        ports: list[int] = []
        try:
            while len(ports) < n:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((LOOPBACK, 0))
                socks.append(s)
                p = s.getsockname()[1]
                if p in _handed_out:  # don't reuse a port we gave to another server of this run
                    continue
                ports.append(p)
        finally:
            for s in socks:
                s.close()
        _handed_out.update(ports)
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOOPBACK, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# --------------------------------------------------------------------------------------------------
# waiting


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.5,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call predicate until it returns a truthy value (returned) or timeout seconds pass.

    Exceptions raised by predicate count as 'not yet'; the last one is chained to the timeout error.
    """
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            v = predicate()
            if v:
                return v
            last_exc = None
        except (KeyboardInterrupt, SystemExit, StopWaiting):
            raise
        except Exception as e:  # noqa: BLE001 - any failure is "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            msg = message() if callable(message) else message
            err = TimeoutExpired(f"timed out after {timeout:.0f}s waiting for {msg}")
            if last_exc is not None:
                raise err from last_exc
            raise err
        time.sleep(interval)


# --------------------------------------------------------------------------------------------------
# child processes

_PR_SET_PDEATHSIG = 1
_libc = None
try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not Linux/glibc: fall back to atexit only
    _libc = None


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_live: dict[int, "ManagedProcess"] = {}
_live_lock = threading.Lock()


class ManagedProcess:
    """A child process (its own process group) whose output goes to a file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: Optional[dict[str, str]] = None,
        cwd: Optional[Path] = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n==== {time.strftime('%H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd) if cwd else None,
            preexec_fn=_child_setup,
            close_fds=True,
        )
        with _live_lock:
            _live[self.proc.pid] = self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, timeout: float = 60.0) -> Optional[int]:
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code."""
        if self.running():
            self._signal_group(signal.SIGTERM)
            if self.wait(timeout) is None:
                self._log_note(f"did not exit {timeout:.0f}s after SIGTERM: SIGKILL")
                self._signal_group(signal.SIGKILL)
                self.wait(30)
        self._finish()
        return self.proc.returncode

    def kill(self) -> Optional[int]:
        if self.running():
            self._signal_group(signal.SIGKILL)
            self.wait(30)
        self._finish()
        return self.proc.returncode

    def _log_note(self, text: str) -> None:
        try:
            self._log.write(f"==== {time.strftime('%H:%M:%S')} harness: {text}\n".encode())
            self._log.flush()
        except ValueError:
            pass

    def _finish(self) -> None:
        # the group may still hold stragglers (e.g. a shell's children): make sure they are gone
        if self.proc.returncode is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        with _live_lock:
            _live.pop(self.proc.pid, None)
        if not self._log.closed:
            self._log_note(f"exited with {self.proc.returncode}")
            self._log.close()


def kill_all_children() -> None:
    """Kill every process this harness started that is still alive (atexit hook)."""
    with _live_lock:
        procs = list(_live.values())
    for p in procs:
        if p.running():
            p._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs:
        p.wait(max(0.1, deadline - time.monotonic()))
    for p in procs:
        p.kill()


def live_processes() -> list[ManagedProcess]:
    with _live_lock:
        return [p for p in _live.values() if p.running()]


atexit.register(kill_all_children)


def tail(path: Path, n_lines: int = 60) -> str:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return f"<{path} does not exist>"
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n_lines:])


def grep(path: Path, needles: Iterable[str]) -> list[str]:
    try:
        text = Path(path).read_text("utf-8", "replace")
    except FileNotFoundError:
        return []
    needles = list(needles)
    return [ln for ln in text.splitlines() if any(n in ln for n in needles)]
