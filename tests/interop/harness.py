"""Interop harness for rocketmq-sidecar: real Apache RocketMQ + official Java client "pods".

This module is a library (no tests in here). It

* fetches the real Apache RocketMQ servers and the official Java client from Maven Central
  (``ensure_rocketmq``, ``ensure_client``; cached under ``<repo>/target/interop``),
* runs name servers and brokers on loopback (``Cluster``),
* runs mqadmin and parses what the tests need (``Cluster.mqadmin``, ``consumer_lag``,
  ``topic_max_offsets_total``, ``keys_stored``, ...),
* runs simulated application pods with the official Java client (``Pod``, ``run_smoke``),
* runs the sidecar binary (``Sidecar``) with a generated config,
* and contains the migration scenario shared by ``test_migration.py`` and ``demo.py``
  (``run_migration``).

Everything waits with a bound and every process is stopped by PID (finalizers, plus an
``atexit`` safety net). Only 127.0.0.0/8 is ever contacted.

Versions: Maven Central does not serve ``rocketmq-namesrv``/``rocketmq-broker`` 4.9.8 (the
4.9.8 release published only the client-side modules), so the "old" cluster runs **4.9.7**
servers; the old-generation client is 4.9.8. Override with ``RMQ_INTEROP_OLD_VERSION`` /
``RMQ_INTEROP_NEW_VERSION`` (a ``servers/pom-<version>.xml`` must exist).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

# --------------------------------------------------------------------------- paths & versions

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUT = REPO / "target" / "interop"
SERVERS_DIR = HERE / "servers"
CLIENT_DIR = HERE / "client"

OLD_SERVER_VERSION = os.environ.get("RMQ_INTEROP_OLD_VERSION", "4.9.7")
NEW_SERVER_VERSION = os.environ.get("RMQ_INTEROP_NEW_VERSION", "5.3.3")
OLD_CLIENT_VERSION = "4.9.8"
NEW_CLIENT_VERSION = "5.3.3"

MVN_TIMEOUT_S = float(os.environ.get("RMQ_INTEROP_MVN_TIMEOUT", "900"))

#: JDK 17 needs these for RocketMQ 4.9.x servers: the store unmaps files through
#: sun.nio.ch.DirectBuffer / jdk.internal.ref.Cleaner by reflection (protocol notes 9.5).
JDK17_OPENS_4X = [
    "--add-exports", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/java.nio=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
]
#: RocketMQ 5.x ships a shaded logback that dumps its whole status log on stdout whenever its
#: bundled config has a warning (it does); this listener silences that noise.
SHADED_LOGBACK_QUIET = (
    "-Dlogback.statusListenerClass="
    "org.apache.rocketmq.logging.ch.qos.logback.core.status.NopStatusListener"
)


class HarnessError(RuntimeError):
    """A harness step failed (download, start-up, bounded wait, ...)."""


def log(msg: str) -> None:
    """Print a time-stamped harness message (stdout, flushed)."""
    now = _dt.datetime.now()
    print(f"[harness {now:%H:%M:%S}.{now.microsecond // 1000:03d}] {msg}", flush=True)


def is_v4(version: str) -> bool:
    return version.split(".")[0] == "4"


# --------------------------------------------------------------------------- small utilities


def wait_until(pred: Callable[[], object], timeout: float, desc: str, interval: float = 0.5,
               fail_fast: Callable[[], str | None] | None = None):
    """Poll ``pred`` until it returns a truthy value (returned) or ``timeout`` seconds pass.

    ``fail_fast`` may return an error text to abort early (e.g. "process exited").
    Raises HarnessError naming ``desc`` on time-out.
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except HarnessError:
            raise
        except Exception as e:  # noqa: BLE001 - polling tolerates transient errors
            last_exc = e
        if fail_fast is not None:
            why = fail_fast()
            if why:
                raise HarnessError(f"while waiting for {desc}: {why}")
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {desc}{extra}")
        time.sleep(interval)


def tail(path: Path, lines: int = 40) -> str:
    """Last ``lines`` lines of a text file ('' if missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _size(path: Path) -> int:
    """Size of a file in bytes (0 if missing)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _text_after(path: Path, offset: int) -> str:
    """What was written to a file after ``offset`` ('' if missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _sha(paths: Iterable[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(str(p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@contextlib.contextmanager
def _file_lock(name: str):
    """Inter-process lock so parallel sessions do not build the same cache twice."""
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / f".lock-{name}", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise HarnessError(f"'{name}' is not on PATH; the interop tests need a JDK 17 and Maven 3")
    return path


def _run_checked(argv: Sequence[str], timeout: float, what: str, **kw) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, **kw)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"")[-4000:] if isinstance(e.stdout, bytes) else (e.stdout or "")[-4000:]
        raise HarnessError(f"{what}: timed out after {timeout:.0f}s\n{out}") from None
    if cp.returncode != 0:
        raise HarnessError(f"{what}: exit code {cp.returncode}\ncommand: {' '.join(argv)}\n"
                           f"--- stdout ---\n{cp.stdout[-4000:]}\n--- stderr ---\n{cp.stderr[-4000:]}")
    return cp


def _mvn(args: Sequence[str], what: str) -> None:
    mvn = _require_tool("mvn")
    _require_tool("java")
    t0 = time.monotonic()
    log(f"{what}: mvn {' '.join(args)} (bounded {MVN_TIMEOUT_S:.0f}s)")
    _run_checked([mvn, "-B", "-q", *args], MVN_TIMEOUT_S, what)
    log(f"{what}: done in {time.monotonic() - t0:.1f}s")


# --------------------------------------------------------------------------- downloads / builds


def ensure_rocketmq(version: str, component: str = "") -> Path:
    """Download the Apache RocketMQ ``version`` servers + mqadmin once; return the lib dir.

    Runs ``mvn dependency:copy-dependencies`` on ``servers/pom-<version>.xml`` into
    ``<repo>/target/interop/rocketmq-<version>/lib``; a marker file (hash of the pom) makes
    later calls free. ``component="proxy"`` does the same for the RocketMQ Proxy
    (``servers/pom-proxy-<version>.xml`` -> ``rocketmq-proxy-<version>/lib``).
    """
    stem = f"{component}-{version}" if component else version
    pom = SERVERS_DIR / f"pom-{stem}.xml"
    if not pom.exists():
        raise HarnessError(f"no server pom for RocketMQ {stem}: {pom} (available: "
                           f"{sorted(p.name for p in SERVERS_DIR.glob('pom-*.xml'))})")
    home = OUT / f"rocketmq-{stem}"
    lib = home / "lib"
    marker = home / ".complete"
    digest = _sha([pom])
    probe = f"rocketmq-{component or 'broker'}-*.jar"
    with _file_lock(f"rocketmq-{stem}"):
        if marker.exists() and marker.read_text().strip() == digest and any(lib.glob(probe)):
            return lib
        tmp = home / "lib.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _mvn(["-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"],
             f"download RocketMQ {stem} servers")
        if not any(tmp.glob(probe)):
            raise HarnessError(f"RocketMQ {stem}: no {probe} after download into {tmp}")
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        marker.write_text(digest)
    return lib


def ensure_proxy(version: str = "5.3.3") -> Path:
    """The RocketMQ Proxy ``version`` jars (``servers/pom-proxy-<version>.xml``); the lib dir."""
    return ensure_rocketmq(version, component="proxy")


def ensure_admin_runner() -> Path:
    """Compile ``servers/AdminRunner.java`` (no dependencies) once; return its class dir."""
    src = SERVERS_DIR / "AdminRunner.java"
    dest = OUT / "admin-runner"
    marker = dest / ".complete"
    digest = _sha([src])
    with _file_lock("admin-runner"):
        if marker.exists() and marker.read_text().strip() == digest:
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        javac = _require_tool("javac")
        _run_checked([javac, "-d", str(dest), str(src)], 120, "compile AdminRunner")
        marker.write_text(digest)
    return dest


@dataclasses.dataclass(frozen=True)
class ClientBuild:
    """The compiled Pod program for one Java client version."""

    version: str
    classes: Path
    lib: Path

    @property
    def classpath(self) -> str:
        return f"{self.classes}{os.pathsep}{self.lib}/*"


def ensure_client(version: str) -> ClientBuild:
    """Compile ``client/`` against rocketmq-client ``version`` once (cached by source hash).

    Output: ``<repo>/target/interop/client-<version>/{build/classes,lib}``.
    """
    out = OUT / f"client-{version}"
    marker = out / ".complete"
    sources = [CLIENT_DIR / "pom.xml", *sorted((CLIENT_DIR / "src").rglob("*.java"))]
    digest = _sha(sources, extra=version)
    build = ClientBuild(version, out / "build" / "classes", out / "lib")
    with _file_lock(f"client-{version}"):
        if marker.exists() and marker.read_text().strip() == digest:
            return build
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        # 4.x keeps AclClientRPCHook in the rocketmq-acl artifact; 5.3.3 has it in the client
        profiles = ["-Pwith-acl-module"] if is_v4(version) else []
        _mvn(["-f", str(CLIENT_DIR / "pom.xml"), f"-Drocketmq.client.version={version}", *profiles,
              f"-Dinterop.out={out}", "compile", "dependency:copy-dependencies",
              f"-DoutputDirectory={out / 'lib'}"], f"build Pod against rocketmq-client {version}")
        if not (build.classes / "sidecar" / "interop" / "Pod.class").exists():
            raise HarnessError(f"client {version}: Pod.class missing after build in {build.classes}")
        marker.write_text(digest)
    return build


#: Maven profiles of ``acl/pom.xml``: the two Apache homes of AclClientRPCHook
ACL_VECTOR_PROFILES = ("acl-4.9.8", "client-5.3.3")
ACL_DIR = HERE / "acl"
ACL_VECTORS_FIXTURE = REPO / "tests" / "fixtures" / "acl_vectors.json"


def ensure_acl_vectors(profile: str = ACL_VECTOR_PROFILES[0]) -> ClientBuild:
    """Compile ``acl/`` (the known-answer vector program) against the official classes of
    ``profile`` once (cached by source hash) into ``target/interop/acl-vectors/<profile>``."""
    if profile not in ACL_VECTOR_PROFILES:
        raise HarnessError(f"unknown ACL vector profile {profile!r} (known: {ACL_VECTOR_PROFILES})")
    out = OUT / "acl-vectors" / profile
    marker = out / ".complete"
    sources = [ACL_DIR / "pom.xml", *sorted((ACL_DIR / "src").rglob("*.java"))]
    digest = _sha(sources, extra=profile)
    build = ClientBuild(profile, out / "build" / "classes", out / "lib")
    with _file_lock(f"acl-vectors-{profile}"):
        if marker.exists() and marker.read_text().strip() == digest:
            return build
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        _mvn(["-f", str(ACL_DIR / "pom.xml"), f"-P{profile}", f"-Dinterop.out={out}", "compile",
              "dependency:copy-dependencies", f"-DoutputDirectory={out / 'lib'}"],
             f"build the ACL vector program against {profile}")
        if not (build.classes / "sidecar" / "interop" / "acl" / "AclVectors.class").exists():
            raise HarnessError(f"ACL vectors {profile}: AclVectors.class missing in {build.classes}")
        marker.write_text(digest)
    return build


def generate_acl_vectors(profile: str = ACL_VECTOR_PROFILES[0]) -> tuple[bytes, str]:
    """Run the vector program built against ``profile``; returns (JSON bytes, its stderr line
    naming the jar AclClientRPCHook was loaded from)."""
    build = ensure_acl_vectors(profile)
    argv = [_require_tool("java"), "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Dfile.encoding=UTF-8", "-cp", build.classpath, "sidecar.interop.acl.AclVectors", "-"]
    try:
        cp = subprocess.run(argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"AclVectors ({profile}) timed out") from None
    if cp.returncode != 0:
        raise HarnessError(f"AclVectors ({profile}) exit {cp.returncode}:\n{cp.stderr.decode('utf-8', 'replace')[-3000:]}")
    return cp.stdout, cp.stderr.decode("utf-8", "replace").strip()


def check_disk(path: Path = OUT, max_used: float = 0.85) -> None:
    """Brokers refuse writes above 90 % disk use: fail early with a clear message."""
    path.mkdir(parents=True, exist_ok=True)
    du = shutil.disk_usage(path)
    used = du.used / du.total
    if used > max_used:
        raise HarnessError(f"disk holding {path} is {used:.0%} full; RocketMQ brokers reject "
                           f"writes above 90% (need < {max_used:.0%})")


# --------------------------------------------------------------------------- processes

_LIVE: set["ManagedProcess"] = set()
_LIVE_LOCK = threading.Lock()
#: objects with a ``dump_logs(lines) -> str`` method, newest last (clusters, pods, sidecars)
LOG_SOURCES: list = []


class ManagedProcess:
    """A child process started in its own session, output to a file, stopped by PID."""

    def __init__(self, name: str, argv: Sequence[str], *, cwd: Path, log_path: Path,
                 env: dict | None = None):
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"### {_dt.datetime.now().isoformat()} start: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def exited_reason(self) -> str | None:
        """For ``wait_until(fail_fast=...)``: a message once the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            return f"{self.name} (pid {self.proc.pid}) exited with code {self.proc.returncode}; " \
                   f"log tail:\n{tail(self.log_path, 30)}"
        return None

    def send_signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int | None:
        """Send ``sig`` (default SIGTERM), wait ``timeout`` s, then SIGKILL; returns exit code."""
        if self.proc is None:
            return None
        if self.alive():
            self.send_signal(sig)
            if self.wait(timeout) is None:
                log(f"{self.name} (pid {self.proc.pid}) ignored signal {sig} for {timeout:.0f}s: SIGKILL")
                self.send_signal(signal.SIGKILL)
                self.wait(10)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return self.proc.poll()


def kill_all_live() -> None:
    """Safety net: stop every process this module started that is still running."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for p in procs:
        p.wait(max(0.1, deadline - time.monotonic()))
        if p.alive():
            p.send_signal(signal.SIGKILL)
            p.wait(5)
    with _LIVE_LOCK:
        _LIVE.clear()


atexit.register(kill_all_live)


def dump_all_logs(sources: Iterable | None = None, lines: int = 40) -> str:
    """Concatenated log tails of the given (default: all registered) clusters, sidecars, pods."""
    parts = []
    for src in (LOG_SOURCES if sources is None else sources):
        try:
            parts.append(src.dump_logs(lines, echo=False))
        except Exception as e:  # noqa: BLE001 - diagnostics must never raise
            parts.append(f"(could not read logs of {src!r}: {e})")
    return "\n".join(parts)


# --------------------------------------------------------------------------- ports & addresses

_RESERVED_PORTS: set[int] = set()
_PORT_LOCK = threading.Lock()


def port_free(port: int) -> bool:
    """True if nothing listens on ``port`` on any local address (brokers bind 0.0.0.0/[::])."""
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Netty servers do
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def reserve_port_block(preferred: int, offsets: Sequence[int] = (0,), step: int = 10,
                       attempts: int = 200) -> int:
    """First base ``b`` = preferred + k*step whose ports ``b+o`` (o in offsets) are all free
    and not yet handed out by this process; the ports are then reserved."""
    with _PORT_LOCK:
        for k in range(attempts):
            base = preferred + k * step
            ports = [base + o for o in offsets]
            if any(p <= 1024 or p > 65535 or p in _RESERVED_PORTS for p in ports):
                continue
            if all(port_free(p) for p in ports):
                _RESERVED_PORTS.update(ports)
                return base
    raise HarnessError(f"no free port block near {preferred} (offsets {list(offsets)})")


def release_ports(ports: Iterable[int]) -> None:
    with _PORT_LOCK:
        _RESERVED_PORTS.difference_update(ports)


#: a broker binds listenPort-2 (VIP / fast channel), listenPort, listenPort+1 (HA)
BROKER_PORT_OFFSETS = (-2, 0, 1)

_SIDECAR_SLOT = 0
_SIDECAR_LOCK = threading.Lock()
#: sidecar fallback port ranges: 200 ports each from here, all below the ephemeral range
SIDECAR_FALLBACK_BASE = 21000
SIDECAR_FALLBACK_WIDTH = 100  # a sidecar needs one per upstream broker port it cannot keep
SIDECAR_MAX_SLOTS = 80  # 21000 + 80*100 = 29000 < the cluster ports (29876+)


@dataclasses.dataclass(frozen=True)
class SidecarSlot:
    """Address space of one sidecar: its own loopback /16 and fallback port range."""

    index: int
    broker_bind: str
    fallback_lo: int
    fallback_hi: int
    namesrv_port: int
    admin_port: int
    health_port: int


def allocate_sidecar_slot() -> SidecarSlot:
    """Distinct /16 (127.11.0.0/16, 127.12.0.0/16, ...) + disjoint fallback range + 3 ports."""
    global _SIDECAR_SLOT
    with _SIDECAR_LOCK:
        i = _SIDECAR_SLOT
        _SIDECAR_SLOT += 1
    if i >= SIDECAR_MAX_SLOTS:
        raise HarnessError(f"more than {SIDECAR_MAX_SLOTS} sidecars in one session")
    lo = SIDECAR_FALLBACK_BASE + i * SIDECAR_FALLBACK_WIDTH
    base = reserve_port_block(18000 + 3 * i, offsets=(0, 1, 2), step=3 * SIDECAR_MAX_SLOTS)
    return SidecarSlot(i, f"127.{11 + i}.0.0/16", lo, lo + SIDECAR_FALLBACK_WIDTH - 1,
                       base, base + 1, base + 2)


# --------------------------------------------------------------------------- mqadmin output parsing

_PROGRESS_ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+(-?\d+)\s+(-?\d+)(?:\s|$)")
_STATUS_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(-?\d+)\s+(-?\d+)(?:\s|$)")
_CLUSTER_ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\d+)\s+(\d+\.\d+\.\d+\.\d+:\d+)\s+(\S+)")


@dataclasses.dataclass(frozen=True)
class ProgressRow:
    topic: str
    broker: str
    queue_id: int
    broker_offset: int
    consumer_offset: int

    @property
    def diff(self) -> int:
        return max(0, self.broker_offset - self.consumer_offset)


def parse_consumer_progress(text: str) -> list[ProgressRow]:
    """Rows of ``mqadmin consumerProgress -g G`` (4.9.x and 5.x layouts).

    Only the first five columns are used (topic, broker name, queue id, broker offset,
    consumer offset): their order is the same in every version, whereas later columns differ
    (5.x adds #Inflight, ``-s true`` adds the client IP). Topic and broker names never contain
    whitespace, so splitting on it is safe even when a name overflows its printf width.
    """
    rows = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = _PROGRESS_ROW.match(line)
        if m:
            rows.append(ProgressRow(m[1], m[2], int(m[3]), int(m[4]), int(m[5])))
    return rows


def parse_topic_status(text: str) -> list[tuple[str, int, int, int]]:
    """Rows ``(broker, queue_id, min_offset, max_offset)`` of ``mqadmin topicStatus``."""
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _STATUS_ROW.match(line)
        if m:
            rows.append((m[1], int(m[2]), int(m[3]), int(m[4])))
    return rows


def parse_cluster_list(text: str) -> list[dict]:
    """Rows of ``mqadmin clusterList`` as dicts (cluster, broker, bid, addr, version)."""
    rows = []
    for line in text.splitlines():
        m = _CLUSTER_ROW.match(line)
        if m and not line.startswith("#"):
            rows.append(dict(cluster=m[1], broker=m[2], bid=int(m[3]), addr=m[4], version=m[5]))
    return rows


@dataclasses.dataclass
class AdminResult:
    args: list
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + "\n" + self.err


# --------------------------------------------------------------------------- clusters

_LOGBACK = """<?xml version="1.0" encoding="UTF-8"?>
<!-- minimal logback config written by tests/interop/harness.py (RocketMQ 4.9.x requires it) -->
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${{user.home}}/logs/rocketmqlogs/{name}.log</file>
    <append>true</append>
    <encoder><pattern>%d{{yyyy-MM-dd HH:mm:ss,SSS}} %-5p %c{{0}} [%t] - %m%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""


@dataclasses.dataclass(frozen=True)
class ClusterAuth:
    """One account (AccessKey / SecretKey) of an authenticated cluster.

    On a 4.9.x broker it is an ACL 1.0 account in ``conf/plain_acl.yml`` (admin, PUB|SUB); on
    5.3.x it is the ACL 2.0 ``initAuthenticationUser`` (a SUPER user) and also the broker's
    ``innerClientAuthenticationCredentials``. Both keys must be longer than 6 characters.
    """

    access_key: str
    secret_key: str

    def __post_init__(self):
        if len(self.access_key) <= 6 or len(self.secret_key) <= 6:
            raise HarnessError("RocketMQ ACL keys must be longer than 6 characters")

    def __repr__(self) -> str:  # never print the secret
        return f"ClusterAuth(access_key={self.access_key!r}, secret_key=<{len(self.secret_key)} chars>)"

    def pod_args(self) -> list[str]:
        """Pod options that make the app sign its own requests with these credentials."""
        return ["--ak", self.access_key, "--sk", self.secret_key]


def acl_kind(version: str) -> str:
    """"ACL 1.0" (4.x: aclEnable) or "ACL 2.0" (5.x: authenticationEnabled)."""
    return "ACL 1.0" if is_v4(version) else "ACL 2.0"


class Cluster:
    """One real Apache RocketMQ cluster: a name server and one master broker on loopback.

    ``workdir`` receives everything: configs, ``namesrv/namesrv.out``, ``broker/broker.out``,
    the RocketMQ logs under ``*/user/logs/rocketmqlogs`` and the broker store.

    With ``auth`` the broker authenticates every request (protocol notes 9.6): ACL 1.0 on 4.x,
    ACL 2.0 on 5.x; mqadmin then signs with the same account (``conf/tools.yml``), and
    ``keys_stored`` lets the query pod sign for itself. Name servers never check credentials.
    ``authorization=True`` (5.x) also switches ACL 2.0 authorization on: the ``auth`` user is a
    SUPER user (never checked); users made with ``create_user`` have no permission at all.
    """

    def __init__(self, version: str, name: str, namesrv_port: int, broker_port: int,
                 broker_name: str, cluster_name: str, workdir: Path,
                 extra_broker_conf: dict | None = None, auth: ClusterAuth | None = None,
                 authorization: bool = False):
        self.auth = auth
        self.authorization = authorization
        self.version = version
        self.name = name
        self.namesrv_port = namesrv_port
        self.broker_port = broker_port
        self.broker_name = broker_name
        self.cluster_name = cluster_name
        self.workdir = Path(workdir)
        self.extra_broker_conf = dict(extra_broker_conf or {})
        self.lib: Path | None = None
        self.namesrv: ManagedProcess | None = None
        self.broker: ManagedProcess | None = None
        self.started_in: float | None = None

    def __repr__(self) -> str:
        acl = f", {acl_kind(self.version)} as {self.auth.access_key}" if self.auth else ""
        return (f"Cluster({self.name}: RocketMQ {self.version}, {self.cluster_name}/{self.broker_name}, "
                f"namesrv {self.namesrv_addr}, broker {self.broker_addr}{acl})")

    # ---- addresses
    @property
    def namesrv_addr(self) -> str:
        return f"127.0.0.1:{self.namesrv_port}"

    @property
    def broker_addr(self) -> str:
        """The address the broker advertises (``brokerIP1``: loopback unless configured)."""
        return f"{self.extra_broker_conf.get('brokerIP1', '127.0.0.1')}:{self.broker_port}"

    @property
    def ports(self) -> list[int]:
        return [self.namesrv_port] + [self.broker_port + o for o in BROKER_PORT_OFFSETS]

    def _dir(self, role: str) -> Path:
        return self.workdir / role

    # ---- lifecycle
    def _prepare_home(self, role: str, logback_names: Sequence[str]) -> tuple[Path, Path]:
        base = self._dir(role)
        home, user = base / "home", base / "user"
        (home / "conf").mkdir(parents=True, exist_ok=True)
        user.mkdir(parents=True, exist_ok=True)
        for n in logback_names:
            (home / "conf" / f"logback_{n}.xml").write_text(_LOGBACK.format(name=n))
        return home, user

    def _java(self, home: Path, user: Path, heap: Sequence[str], main: str, args: Sequence[str],
              classpath: str | None = None) -> tuple[list[str], dict]:
        argv = [_require_tool("java"), *heap, f"-Duser.home={user}", f"-Drocketmq.home.dir={home}",
                "-XX:-OmitStackTraceInFastThrow"]
        argv += JDK17_OPENS_4X if is_v4(self.version) else [SHADED_LOGBACK_QUIET]
        argv += ["-cp", classpath or f"{self.lib}/*", main, *args]
        env = dict(os.environ, ROCKETMQ_HOME=str(home))
        for k in ("NAMESRV_ADDR", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS"):
            env.pop(k, None)
        return argv, env

    def broker_conf(self) -> dict:
        """The broker properties (protocol notes 9.4), small files for a test machine."""
        store = self._dir("broker") / "store"
        conf = {
            "brokerClusterName": self.cluster_name,
            "brokerName": self.broker_name,
            "brokerId": 0,
            "brokerIP1": "127.0.0.1",
            "listenPort": self.broker_port,
            "namesrvAddr": self.namesrv_addr,
            "storePathRootDir": store,
            "storePathCommitLog": store / "commitlog",
            "mappedFileSizeCommitLog": 64 * 1024 * 1024,
            "mappedFileSizeConsumeQueue": 60000,
            "maxHashSlotNum": 10000,
            "maxIndexNum": 40000,
            "autoCreateTopicEnable": "true",
            "autoCreateSubscriptionGroup": "true",
            "flushDiskType": "ASYNC_FLUSH",
            "brokerRole": "ASYNC_MASTER",
            "deleteWhen": "04",
            "fileReservedTime": 1,
        }
        if not is_v4(self.version):
            conf["mappedFileSizeTimerLog"] = 16 * 1024 * 1024  # default 100 MiB
        if self.auth is not None:
            conf.update(self.acl_broker_conf())
        conf.update(self.extra_broker_conf)
        return conf

    def acl_broker_conf(self) -> dict:
        """Broker properties that switch authentication on (protocol notes 9.6)."""
        a = self.auth
        if is_v4(self.version):  # ACL 1.0: PlainAccessValidator, accounts in conf/plain_acl.yml
            return {"aclEnable": "true"}
        user = json.dumps({"username": a.access_key, "password": a.secret_key}, separators=(",", ":"))
        inner = json.dumps({"accessKey": a.access_key, "secretKey": a.secret_key}, separators=(",", ":"))
        conf = {  # ACL 2.0 (5.3.x)
            "authenticationEnabled": "true",
            "authenticationProvider":
                "org.apache.rocketmq.auth.authentication.provider.DefaultAuthenticationProvider",
            "authenticationMetadataProvider":
                "org.apache.rocketmq.auth.authentication.provider.LocalAuthenticationMetadataProvider",
            "initAuthenticationUser": user,
            "innerClientAuthenticationCredentials": inner,
        }
        if self.authorization:
            conf.update({
                "authorizationEnabled": "true",
                "authorizationProvider":
                    "org.apache.rocketmq.auth.authorization.provider.DefaultAuthorizationProvider",
                "authorizationMetadataProvider":
                    "org.apache.rocketmq.auth.authorization.provider.LocalAuthorizationMetadataProvider",
            })
        return conf

    def create_user(self, account: ClusterAuth, user_type: str = "Normal") -> None:
        """ACL 2.0 (5.x): create a user (mqadmin createUser, signed by the SUPER ``auth`` user)."""
        if is_v4(self.version) or self.auth is None:
            raise HarnessError(f"{self.name}: users exist only on an ACL 2.0 (5.x) cluster")
        r = self.mqadmin("createUser", "-c", self.cluster_name, "-u", account.access_key,
                         "-p", account.secret_key, "-t", user_type)
        if "success" not in r.out:
            raise HarnessError(f"{self.name}: createUser {account.access_key} failed:\n{r.text[-3000:]}")

    def plain_acl_yml(self) -> str:
        """ACL 1.0 accounts file of a 4.x broker: one admin account, no white-listed address."""
        a = self.auth
        return ("# written by tests/interop/harness.py (ACL 1.0 test account)\n"
                "globalWhiteRemoteAddresses: []\n"
                "accounts:\n"
                f"  - accessKey: {a.access_key}\n"
                f"    secretKey: {a.secret_key}\n"
                "    whiteRemoteAddress:\n"
                "    admin: true\n"
                "    defaultTopicPerm: PUB|SUB\n"
                "    defaultGroupPerm: PUB|SUB\n")

    def start(self, timeout: float = 120.0) -> "Cluster":
        """Start name server then broker; wait for both banners and the broker registration.

        On failure everything started here is stopped again and the error re-raised.
        """
        try:
            return self._start(timeout)
        except BaseException:
            self.stop(10)
            raise

    def _start(self, timeout: float) -> "Cluster":
        t0 = time.monotonic()
        check_disk(self.workdir)
        busy = [p for p in self.ports if not port_free(p)]
        if busy:
            raise HarnessError(f"{self.name}: ports already in use: {busy}")
        self.lib = ensure_rocketmq(self.version)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self not in LOG_SOURCES:
            LOG_SOURCES.append(self)

        self.start_namesrv(timeout)
        self.start_broker(max(10.0, timeout - (time.monotonic() - t0)))
        wait_until(self.broker_registered, 60, f"{self.broker_name} registered in {self.namesrv_addr}",
                   1.0, self.broker.exited_reason)
        self.started_in = time.monotonic() - t0
        log(f"{self.name}: up in {self.started_in:.1f}s ({self.cluster_name}/{self.broker_name})")
        return self

    def start_namesrv(self, timeout: float = 60.0) -> None:
        """Start the name server (again, after ``kill_namesrv``) and wait for its banner."""
        if self.namesrv is None:
            ns_home, ns_user = self._prepare_home("namesrv", ["namesrv"])
            ns_conf = self._dir("namesrv") / "namesrv.properties"
            ns_conf.write_text(f"listenPort={self.namesrv_port}\n")
            argv, env = self._java(ns_home, ns_user, ["-Xms128m", "-Xmx256m", "-XX:+UseG1GC"],
                                   "org.apache.rocketmq.namesrv.NamesrvStartup", ["-c", str(ns_conf)])
            self.namesrv = ManagedProcess(f"{self.name}-namesrv", argv, cwd=self._dir("namesrv"),
                                          log_path=self._dir("namesrv") / "namesrv.out", env=env)
        since = _size(self.namesrv.log_path)
        self.namesrv.start()
        log(f"{self.name}: name server {self.version} pid {self.namesrv.pid} on {self.namesrv_addr}")
        wait_until(lambda: "The Name Server boot success" in _text_after(self.namesrv.log_path, since),
                   timeout, f"{self.name} name server boot banner", 0.25, self.namesrv.exited_reason)

    def start_broker(self, timeout: float = 90.0) -> None:
        """Start the broker (again, after ``kill_broker``: same store) and wait for its banner."""
        if self.broker is None:
            br_home, br_user = self._prepare_home("broker", ["broker"])
            if self.auth is not None and is_v4(self.version):
                (br_home / "conf" / "plain_acl.yml").write_text(self.plain_acl_yml())
            br_conf = self._dir("broker") / "broker.conf"
            br_conf.write_text("".join(f"{k}={v}\n" for k, v in self.broker_conf().items()))
            argv, env = self._java(br_home, br_user,
                                   ["-Xms512m", "-Xmx1g", "-XX:MaxDirectMemorySize=512m", "-XX:+UseG1GC"],
                                   "org.apache.rocketmq.broker.BrokerStartup", ["-c", str(br_conf)])
            self.broker = ManagedProcess(f"{self.name}-broker", argv, cwd=self._dir("broker"),
                                         log_path=self._dir("broker") / "broker.out", env=env)
        banner = f"The broker[{self.broker_name}, {self.broker_addr}] boot success"
        since = _size(self.broker.log_path)
        self.broker.start()
        log(f"{self.name}: broker {self.broker_name} pid {self.broker.pid} on {self.broker_addr}")
        wait_until(lambda: banner in _text_after(self.broker.log_path, since), timeout,
                   f"{self.name} broker boot banner", 0.25, self.broker.exited_reason)

    def kill_broker(self) -> None:
        """SIGKILL the broker (a crash: no unregistration, no flush beyond the page cache)."""
        if self.broker is not None:
            self.broker.stop(10, sig=signal.SIGKILL)
            log(f"{self.name}: broker {self.broker_name} killed")

    def kill_namesrv(self) -> None:
        """SIGKILL the name server (it forgets every registration)."""
        if self.namesrv is not None:
            self.namesrv.stop(10, sig=signal.SIGKILL)
            log(f"{self.name}: name server {self.namesrv_addr} killed")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop broker and name server by PID (SIGTERM, bounded wait, SIGKILL)."""
        procs = [p for p in (self.broker, self.namesrv) if p is not None]
        for p in procs:  # the broker unregisters itself while shutting down; no ordering needed
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.stop(timeout)
        log(f"{self.name}: stopped")

    def alive(self) -> bool:
        return bool(self.namesrv and self.namesrv.alive() and self.broker and self.broker.alive())

    # ---- diagnostics
    def log_files(self) -> list[Path]:
        files = []
        for role in ("namesrv", "broker"):
            files.append(self._dir(role) / f"{role}.out")
            logs = self._dir(role) / "user" / "logs" / "rocketmqlogs"
            for n in ("namesrv.log", "broker.log", "broker_default.log", "store.log", "remoting.log"):
                if (logs / n).exists():
                    files.append(logs / n)
        return files

    def dump_logs(self, lines: int = 40, echo: bool = True) -> str:
        parts = [f"===== {self!r} ====="]
        for f in self.log_files():
            parts.append(f"----- {f} (last {lines} lines) -----\n{tail(f, lines)}")
        text = "\n".join(parts)
        if echo:
            print(text, flush=True)
        return text

    # ---- mqadmin
    def mqadmin(self, *args: str, timeout: float = 60.0, namesrv: bool = True) -> AdminResult:
        """Run mqadmin (MQAdminStartup of this cluster's version) against this cluster.

        ``-n <namesrv>`` is appended unless ``namesrv=False``. Never raises on a non-zero exit:
        callers parse the output (mqadmin prints errors and often still exits 0).
        """
        if self.lib is None:
            self.lib = ensure_rocketmq(self.version)
        runner = ensure_admin_runner()
        home, user = self._prepare_home("tools", ["tools"])
        tools_yml = home / "conf" / "tools.yml"  # MQAdminStartup signs with these (MixAll.ACL_CONF_TOOLS_FILE)
        if self.auth is not None:
            tools_yml.write_text(f"accessKey: {self.auth.access_key}\nsecretKey: {self.auth.secret_key}\n")
        else:
            tools_yml.unlink(missing_ok=True)
        full = list(args) + (["-n", self.namesrv_addr] if namesrv else [])
        argv, env = self._java(home, user,
                               ["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"],
                               "AdminRunner", full, classpath=f"{runner}{os.pathsep}{self.lib}/*")
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                                cwd=self._dir("tools"), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{self.name}: mqadmin {' '.join(args)} timed out after {timeout}s") from None
        return AdminResult(full, cp.returncode, cp.stdout, cp.stderr)

    def cluster_list(self) -> list[dict]:
        return parse_cluster_list(self.mqadmin("clusterList").out)

    def broker_registered(self) -> bool:
        return any(r["broker"] == self.broker_name and r["addr"] == self.broker_addr
                   for r in self.cluster_list())

    def update_topic(self, topic: str, queues: int = 4) -> None:
        """Create/update ``topic`` with ``queues`` read/write queues on this cluster."""
        r = self.mqadmin("updateTopic", "-c", self.cluster_name, "-t", topic,
                         "-r", str(queues), "-w", str(queues))
        if "success" not in r.out:
            raise HarnessError(f"{self.name}: updateTopic {topic} failed:\n{r.text[-3000:]}")

    def update_sub_group(self, group: str) -> None:
        """Create/update subscription group ``group`` on this cluster."""
        r = self.mqadmin("updateSubGroup", "-c", self.cluster_name, "-g", group)
        if "success" not in r.out:
            raise HarnessError(f"{self.name}: updateSubGroup {group} failed:\n{r.text[-3000:]}")

    def consumer_progress(self, group: str) -> list[ProgressRow] | None:
        """Rows of ``consumerProgress -g group``; None when the broker knows no such group
        (no ``%RETRY%group`` route, or no offsets and not online)."""
        r = self.mqadmin("consumerProgress", "-g", group)
        rows = parse_consumer_progress(r.out)
        if not rows:
            return None
        return rows

    def consumer_lag(self, group: str, topic: str) -> int | None:
        """Total diff (broker offset - consumer offset, summed over queues) of ``group`` on
        ``topic``, from the broker; None if the group or its rows for the topic are not found."""
        rows = self.consumer_progress(group)
        if rows is None:
            return None
        mine = [r for r in rows if r.topic == topic]
        if not mine:
            return None
        return sum(r.diff for r in mine)

    def topic_status(self, topic: str) -> list[tuple[str, int, int, int]] | None:
        rows = parse_topic_status(self.mqadmin("topicStatus", "-t", topic).out)
        return rows or None

    def topic_max_offsets_total(self, topic: str) -> int | None:
        """Sum of the max offsets of all queues of ``topic`` = messages ever stored on this
        cluster for it (None if the topic is unknown)."""
        rows = self.topic_status(topic)
        return None if rows is None else sum(r[3] for r in rows)

    def consumer_clients(self, group: str) -> str:
        """Raw ``consumerConnection -g group`` output (contains ``ip@instanceName`` ids)."""
        return self.mqadmin("consumerConnection", "-g", group).text

    def consumer_online(self, group: str, instance_name: str) -> bool:
        """True if a client with ``instance_name`` heartbeats group ``group`` to this broker."""
        return re.search(rf"@{re.escape(instance_name)}(?:[@\s]|$)",
                         self.mqadmin("consumerConnection", "-g", group).out, re.M) is not None

    def keys_stored(self, topic: str, keys: Sequence[str], sample: int | None = None,
                    seed: int = 7, namesrv: str | None = None, sign: bool = True) -> "KeyCheck":
        """Ask this cluster's broker(s) (QUERY_MESSAGE on the key index, directly via the real
        name server) whether ``keys`` (or a random ``sample`` of them) are stored on ``topic``.

        On an authenticated cluster the query pod signs with the cluster's account (unless
        ``sign=False``). Note: a 4.9.x ACL 1.0 broker rejects every client-signed QUERY_MESSAGE
        (it leaves ``_UNIQUE_KEY_QUERY`` out of the verified content, protocol notes 6.4), so on
        such a cluster this raises; ``namesrv`` can point the query through a sidecar instead."""
        keys = list(keys)
        if sample is not None and len(keys) > sample:
            keys = sorted(random.Random(seed).sample(keys, sample))
        if not keys:
            return KeyCheck([], [], {})
        build = ensure_client(OLD_CLIENT_VERSION)
        qdir = self.workdir / "query"
        qdir.mkdir(parents=True, exist_ok=True)
        kf = qdir / f"keys-{os.getpid()}-{time.monotonic_ns()}.txt"
        kf.write_text("\n".join(keys) + "\n")
        argv = [_require_tool("java"), "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-Duser.home={qdir}", "-cp", build.classpath, "sidecar.interop.Pod", "query-keys",
                "--namesrv", namesrv or self.namesrv_addr, "--topic", topic, "--keys-file", str(kf),
                "--pod", f"query-{self.name}-{os.getpid()}"]
        if sign and self.auth is not None:
            argv += self.auth.pod_args()
        cp = _run_checked(argv, 60 + 3 * len(keys), f"{self.name}: query keys")
        found, missing, hosts = [], [], {}
        for line in cp.stdout.splitlines():
            cols = line.split("\t")
            if cols[0] == "FOUND" and len(cols) >= 6:
                found.append(cols[1])
                hosts[cols[1]] = cols[5]
            elif cols[0] == "MISSING" and len(cols) >= 2:
                missing.append(cols[1])
        if len(found) + len(missing) != len(keys):
            raise HarnessError(f"{self.name}: query-keys answered {len(found) + len(missing)} of "
                               f"{len(keys)} keys:\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}")
        return KeyCheck(found, missing, hosts)


@dataclasses.dataclass
class KeyCheck:
    """Result of ``keys_stored``: which keys the broker has, and on which store host."""

    found: list
    missing: list
    store_hosts: dict

    @property
    def all_found(self) -> bool:
        return not self.missing


# Module-level spellings of the cluster helpers (``mqadmin(cluster, ...)`` etc.).
def mqadmin(cluster: Cluster, *args: str, timeout: float = 60.0) -> AdminResult:
    return cluster.mqadmin(*args, timeout=timeout)


def update_topic(cluster: Cluster, topic: str, queues: int = 4) -> None:
    cluster.update_topic(topic, queues)


def update_sub_group(cluster: Cluster, group: str) -> None:
    cluster.update_sub_group(group)


def consumer_lag(cluster: Cluster, group: str, topic: str) -> int | None:
    return cluster.consumer_lag(group, topic)


def topic_max_offsets_total(cluster: Cluster, topic: str) -> int | None:
    return cluster.topic_max_offsets_total(topic)


def keys_stored(cluster: Cluster, topic: str, keys: Sequence[str], sample: int | None = None) -> KeyCheck:
    return cluster.keys_stored(topic, keys, sample)


def query_keys(namesrv: str, topic: str, keys: Sequence[str], workdir: Path, *,
               client_version: str = OLD_CLIENT_VERSION, auth: ClusterAuth | None = None,
               name: str = "query", timeout: float | None = None) -> tuple["KeyCheck", str]:
    """Run the pod's ``query-keys`` mode against ``namesrv`` (a cluster or a sidecar) without
    raising on failure; returns the KeyCheck and the pod's full output (stdout + stderr + the
    tail of its rocketmq_client.log)."""
    build = ensure_client(client_version)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kf = workdir / f"{name}-keys.txt"
    kf.write_text("\n".join(keys) + "\n")
    argv = [_require_tool("java"), "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Duser.home={workdir / (name + '-home')}",
            f"-Drocketmq.client.logRoot={workdir / (name + '-home')}/logs"]
    if not is_v4(client_version):
        argv.append(SHADED_LOGBACK_QUIET)
    argv += ["-cp", build.classpath, "sidecar.interop.Pod", "query-keys", "--namesrv", namesrv,
             "--topic", topic, "--keys-file", str(kf), "--pod", name]
    if auth is not None:
        argv += auth.pod_args()
    env = {k: v for k, v in os.environ.items() if k not in ("NAMESRV_ADDR", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS")}
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                            timeout=timeout or (60 + 3 * len(keys)))
        out = cp.stdout + "\n" + cp.stderr
    except subprocess.TimeoutExpired as e:
        out = f"(timed out)\n{e.stdout or ''}\n{e.stderr or ''}"
        cp = None
    client_log = workdir / f"{name}-home" / "logs" / "rocketmq_client.log"
    if client_log.exists():  # the client logs a failed QUERY_MESSAGE's code and remark only here
        out += f"\n--- {client_log} ---\n" + tail(client_log, 200)
    (workdir / f"{name}.log").write_text(out)
    found, missing, hosts = [], [], {}
    for line in (cp.stdout if cp else "").splitlines():
        cols = line.split("\t")
        if cols[0] == "FOUND" and len(cols) >= 6:
            found.append(cols[1])
            hosts[cols[1]] = cols[5]
        elif cols[0] == "MISSING" and len(cols) >= 2:
            missing.append(cols[1])
    return KeyCheck(found, missing, hosts), out


class Proxy:
    """The Apache RocketMQ Proxy (5.x, cluster mode) in front of one cluster, on loopback.

    Remoting clients use ``addr`` as their name server; the proxy answers every route with its
    own address (``remotingAccessAddr``:``remotingListenPort``) for every broker and relays the
    broker traffic itself -- how TDMQ 5.x exposes a cluster. With ``auth`` it authenticates
    every remoting request, GET_ROUTEINFO_BY_TOPIC included (users are looked up on the broker
    via ``ProxyAuthenticationMetadataProvider``), and signs its own requests to the brokers with
    the same account (``enableAclRpcHookForClusterMode`` + ``innerClientAuthenticationCredentials``).
    Note: the 5.3.3 proxy's remoting server has no processor for QUERY_MESSAGE / VIEW_MESSAGE_BY_ID.
    """

    def __init__(self, cluster: Cluster, remoting_port: int, grpc_port: int, workdir: Path,
                 auth: ClusterAuth | None = None, version: str | None = None, name: str | None = None,
                 authorization: bool = False):
        self.cluster = cluster
        self.authorization = authorization
        self.version = version or cluster.version
        self.name = name or f"{cluster.name}-proxy"
        self.remoting_port = remoting_port
        self.grpc_port = grpc_port
        self.workdir = Path(workdir)
        self.auth = auth
        self.proc: ManagedProcess | None = None
        self.started_in: float | None = None

    def __repr__(self) -> str:
        acl = f", authentication as {self.auth.access_key}" if self.auth else ""
        return (f"Proxy({self.name}: RocketMQ Proxy {self.version} cluster mode, remoting {self.addr}, "
                f"gRPC :{self.grpc_port}, -> {self.cluster.cluster_name} via {self.cluster.namesrv_addr}{acl})")

    @property
    def addr(self) -> str:
        """The proxy's remoting address: what clients use as their name server."""
        return f"127.0.0.1:{self.remoting_port}"

    @property
    def ports(self) -> list[int]:
        return [self.remoting_port, self.grpc_port]

    def config(self) -> dict:
        conf = {
            "rocketMQClusterName": self.cluster.cluster_name,
            "proxyClusterName": f"{self.cluster.cluster_name}Proxy",
            "proxyName": self.name,
            "proxyMode": "cluster",
            "namesrvAddr": self.cluster.namesrv_addr,
            "localServeAddr": "127.0.0.1",
            "remotingAccessAddr": "127.0.0.1",
            "remotingListenPort": self.remoting_port,
            "grpcServerPort": self.grpc_port,
            "enablePrintJstack": False,
            "rocketmqMQClientNum": 2,
        }
        if self.auth is not None:
            conf.update({
                "authenticationEnabled": True,
                "authenticationProvider":
                    "org.apache.rocketmq.auth.authentication.provider.DefaultAuthenticationProvider",
                "authenticationMetadataProvider": "org.apache.rocketmq.proxy.auth.ProxyAuthenticationMetadataProvider",
                "enableAclRpcHookForClusterMode": True,
                "innerClientAuthenticationCredentials": json.dumps(
                    {"accessKey": self.auth.access_key, "secretKey": self.auth.secret_key}, separators=(",", ":")),
            })
            if self.authorization:  # ACLs read from the broker, like the users
                conf.update({
                    "authorizationEnabled": True,
                    "authorizationProvider":
                        "org.apache.rocketmq.auth.authorization.provider.DefaultAuthorizationProvider",
                    "authorizationMetadataProvider":
                        "org.apache.rocketmq.proxy.auth.ProxyAuthorizationMetadataProvider",
                })
        return conf

    def start(self, timeout: float = 120.0) -> "Proxy":
        try:
            return self._start(timeout)
        except BaseException:
            self.stop(10)
            raise

    def _start(self, timeout: float) -> "Proxy":
        t0 = time.monotonic()
        busy = [p for p in self.ports if not port_free(p)]
        if busy:
            raise HarnessError(f"{self.name}: ports already in use: {busy}")
        lib = ensure_proxy(self.version)
        home, user = self.workdir / "home", self.workdir / "user"
        (home / "conf").mkdir(parents=True, exist_ok=True)
        user.mkdir(parents=True, exist_ok=True)
        conf_path = home / "conf" / "rmq-proxy.json"
        conf_path.write_text(json.dumps(self.config(), indent=2) + "\n")
        argv = [_require_tool("java"), "-Xms256m", "-Xmx512m", "-XX:MaxDirectMemorySize=256m", "-XX:+UseG1GC",
                f"-Duser.home={user}", f"-Drocketmq.home.dir={home}", "-XX:-OmitStackTraceInFastThrow",
                SHADED_LOGBACK_QUIET, "-cp", f"{lib}/*", "org.apache.rocketmq.proxy.ProxyStartup",
                "-pc", str(conf_path), "-pm", "cluster"]
        env = dict(os.environ, ROCKETMQ_HOME=str(home), RMQ_PROXY_HOME=str(home))
        for k in ("NAMESRV_ADDR", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS"):
            env.pop(k, None)
        self.proc = ManagedProcess(self.name, argv, cwd=self.workdir, log_path=self.workdir / "proxy.out",
                                   env=env).start()
        if self not in LOG_SOURCES:
            LOG_SOURCES.append(self)
        log(f"{self.name}: RocketMQ Proxy {self.version} pid {self.proc.pid} on {self.addr} (gRPC :{self.grpc_port})")
        wait_until(lambda: "rocketmq-proxy startup successfully" in tail(self.proc.log_path, 200), timeout,
                   f"{self.name} start-up banner", 0.25, self.proc.exited_reason)
        wait_until(lambda: _can_connect("127.0.0.1", self.remoting_port), 30,
                   f"{self.name} remoting port {self.remoting_port}", 0.25, self.proc.exited_reason)
        self.started_in = time.monotonic() - t0
        log(f"{self.name}: up in {self.started_in:.1f}s")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is not None:
            self.proc.stop(timeout)
            log(f"{self.name}: stopped")

    def alive(self) -> bool:
        return bool(self.proc and self.proc.alive())

    def log_files(self) -> list[Path]:
        files = [self.workdir / "proxy.out"]
        logs = self.workdir / "user" / "logs" / "rocketmqlogs"
        for n in ("proxy.log", "remoting.log"):
            if (logs / n).exists():
                files.append(logs / n)
        return files

    def dump_logs(self, lines: int = 40, echo: bool = True) -> str:
        parts = [f"===== {self!r} pid={self.proc.pid if self.proc else None} ====="]
        for f in self.log_files():
            parts.append(f"----- {f} (last {lines} lines) -----\n{tail(f, lines)}")
        text = "\n".join(parts)
        if echo:
            print(text, flush=True)
        return text


def _can_connect(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def start_clusters(*clusters: Cluster, timeout: float = 150.0) -> None:
    """Start several clusters in parallel threads; on any failure stop all and raise."""
    errors: list[BaseException] = []

    def run(c: Cluster):
        try:
            c.start(timeout)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,), name=f"start-{c.name}") for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for c in clusters:
            c.dump_logs(30)
        stop_clusters(*clusters)
        raise errors[0]


def stop_clusters(*clusters: Cluster) -> None:
    threads = [threading.Thread(target=c.stop, name=f"stop-{c.name}") for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --------------------------------------------------------------------------- pods


@dataclasses.dataclass(frozen=True)
class ClientTimers:
    """Java client timers; None keeps the RocketMQ default (30 s / 30 s / 5 s / 20 s)."""

    poll_ns_ms: int | None = None
    heartbeat_ms: int | None = None
    persist_offset_ms: int | None = None
    rebalance_ms: int | None = None

    def args(self) -> list[str]:
        out = []
        for flag, v in (("--poll-ns-ms", self.poll_ns_ms), ("--heartbeat-ms", self.heartbeat_ms),
                        ("--persist-offset-ms", self.persist_offset_ms),
                        ("--rebalance-ms", self.rebalance_ms)):
            if v is not None:
                out += [flag, str(v)]
        return out

    # effective values (defaults from ClientConfig / RebalanceService)
    @property
    def poll_s(self) -> float:
        return (self.poll_ns_ms or 30000) / 1000

    @property
    def heartbeat_s(self) -> float:
        return (self.heartbeat_ms or 30000) / 1000

    @property
    def persist_s(self) -> float:
        return (self.persist_offset_ms or 5000) / 1000

    @property
    def rebalance_s(self) -> float:
        return (self.rebalance_ms or 20000) / 1000

    def describe(self) -> str:
        return (f"route poll {self.poll_s:g}s, heartbeat {self.heartbeat_s:g}s, "
                f"rebalance {self.rebalance_s:g}s, persist offsets {self.persist_s:g}s")


DEFAULT_TIMERS = ClientTimers()
FAST_TIMERS = ClientTimers(poll_ns_ms=2000, heartbeat_ms=2000, persist_offset_ms=1000, rebalance_ms=2000)


class Pod:
    """One simulated application pod: a JVM running ``sidecar.interop.Pod`` (official client).

    ``mode`` is producer | consumer | smoke. Output records go to ``<workdir>/<name>.tsv``,
    the process log to ``<workdir>/<name>.log``, client logs under ``<workdir>/<name>-home``.
    """

    def __init__(self, name: str, mode: str, *, namesrv: str, topic: str, group: str,
                 workdir: Path, client_version: str = OLD_CLIENT_VERSION,
                 timers: ClientTimers = DEFAULT_TIMERS, rate: float | None = None,
                 count: int | None = None, send_timeout_ms: int | None = None,
                 extra_args: Sequence[str] = ()):
        self.name = name
        self.mode = mode
        self.namesrv = namesrv
        self.topic = topic
        self.group = group
        self.workdir = Path(workdir)
        self.client_version = client_version
        self.timers = timers
        self.rate = rate
        self.count = count
        self.send_timeout_ms = send_timeout_ms
        self.extra_args = list(extra_args)
        self.out_path = self.workdir / f"{name}.tsv"
        self.stop_path = Path(str(self.out_path) + ".stop")
        self.home = self.workdir / f"{name}-home"
        self.proc: ManagedProcess | None = None

    def __repr__(self) -> str:
        return f"Pod({self.name} {self.mode} client {self.client_version} -> {self.namesrv})"

    def argv(self) -> list[str]:
        build = ensure_client(self.client_version)
        argv = [_require_tool("java"), "-Xms32m", "-Xmx256m", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", f"-Duser.home={self.home}",
                f"-Drocketmq.client.logRoot={self.home}/logs"]
        if not is_v4(self.client_version):
            argv.append(SHADED_LOGBACK_QUIET)
        argv += ["-cp", build.classpath, "sidecar.interop.Pod", self.mode, "--pod", self.name,
                 "--namesrv", self.namesrv, "--topic", self.topic, "--group", self.group,
                 "--out", str(self.out_path)]
        if self.rate is not None:
            argv += ["--rate", str(self.rate)]
        if self.count is not None:
            argv += ["--count", str(self.count)]
        elif self.mode == "producer":
            argv += ["--forever"]
        if self.send_timeout_ms is not None:
            argv += ["--send-timeout-ms", str(self.send_timeout_ms)]
        return argv + self.timers.args() + self.extra_args

    def start(self) -> "Pod":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.stop_path.unlink(missing_ok=True)
        env = dict(os.environ)
        for k in ("NAMESRV_ADDR", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS"):
            env.pop(k, None)  # the name server must come from --namesrv only
        self.proc = ManagedProcess(f"pod-{self.name}", self.argv(), cwd=self.workdir,
                                   log_path=self.workdir / f"{self.name}.log", env=env).start()
        if self not in LOG_SOURCES:
            LOG_SOURCES.append(self)
        log(f"pod {self.name}: {self.mode} (client {self.client_version}) pid {self.proc.pid} "
            f"-> namesrv {self.namesrv}")
        return self

    def alive(self) -> bool:
        return bool(self.proc and self.proc.alive())

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ask politely (stop file), then SIGTERM, then SIGKILL; each with a bounded wait."""
        if self.proc is None:
            return None
        if self.proc.alive():
            self.stop_path.touch()
            if self.proc.wait(timeout) is None:
                log(f"pod {self.name}: no exit {timeout:.0f}s after stop file; SIGTERM")
        rc = self.proc.stop(timeout)
        log(f"pod {self.name}: stopped rc={rc}, {len(self.records())} records")
        return rc

    def wait_exit(self, timeout: float) -> int | None:
        return self.proc.wait(timeout) if self.proc else None

    def records(self) -> list[list[str]]:
        """Complete TSV lines of the output file (a partial last line is ignored)."""
        try:
            data = self.out_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        lines = data.split("\n")[:-1]  # everything after the last newline is incomplete
        return [ln.split("\t") for ln in lines if ln]

    def keys(self) -> list[str]:
        return [r[0] for r in self.records()]

    def output(self) -> str:
        return tail(self.workdir / f"{self.name}.log", 100000)

    def dump_logs(self, lines: int = 40, echo: bool = True) -> str:
        parts = [f"===== {self!r} pid={self.proc.pid if self.proc else None} "
                 f"rc={self.proc.returncode if self.proc else None} records={len(self.records())} ====="]
        parts.append(f"----- {self.workdir / (self.name + '.log')} -----\n"
                     f"{tail(self.workdir / (self.name + '.log'), lines)}")
        client_log = self.home / "logs" / "rocketmq_client.log"
        if client_log.exists():
            parts.append(f"----- {client_log} -----\n{tail(client_log, lines // 2)}")
        text = "\n".join(parts)
        if echo:
            print(text, flush=True)
        return text


@dataclasses.dataclass
class SmokeResult:
    ok: bool
    rc: int | None
    summary: str
    records: list
    output: str


def run_smoke(namesrv: str, topic: str, group: str, count: int, workdir: Path, *,
              client_version: str = OLD_CLIENT_VERSION, timeout_s: int = 60,
              timers: ClientTimers = FAST_TIMERS, name: str | None = None,
              extra_args: Sequence[str] = ()) -> SmokeResult:
    """Produce ``count`` messages and consume them back in one pod JVM (mode ``smoke``).

    ``extra_args`` go to the pod (e.g. ``ClusterAuth.pod_args()`` to let the app sign itself)."""
    name = name or f"smoke-{client_version.replace('.', '')}-{random.randrange(1 << 30):x}"
    pod = Pod(name, "smoke", namesrv=namesrv, topic=topic, group=group, workdir=workdir,
              client_version=client_version, timers=timers, count=count,
              extra_args=["--timeout-s", str(timeout_s), *extra_args])
    pod.start()
    rc = pod.wait_exit(timeout_s + 60)
    if rc is None:
        pod.stop(10)
        rc = pod.proc.returncode
    out = pod.output()
    summary = next((ln for ln in out.splitlines() if ln.startswith("SMOKE ")), "(no SMOKE line)")
    log(f"smoke {name}: rc={rc} {summary}")
    return SmokeResult(rc == 0 and summary.startswith("SMOKE OK"), rc, summary, pod.records(), out)


# --------------------------------------------------------------------------- sidecar


def find_sidecar_binary() -> Path | None:
    """``$RMQ_SIDECAR_BIN``, else the newer of target/release and target/debug rmq-sidecar."""
    env = os.environ.get("RMQ_SIDECAR_BIN")
    if env:
        return Path(env) if Path(env).exists() else None
    cands = [p for p in (REPO / "target" / "release" / "rmq-sidecar", REPO / "target" / "debug" / "rmq-sidecar")
             if p.exists() and os.access(p, os.X_OK)]
    return max(cands, key=lambda p: p.stat().st_mtime) if cands else None


def build_sidecar(release: bool = False, timeout: float = 900) -> Path:
    """``cargo build`` the sidecar binary (used when RMQ_INTEROP_BUILD_SIDECAR=1)."""
    cargo = _require_tool("cargo")
    args = [cargo, "build", "--bin", "rmq-sidecar"] + (["--release"] if release else [])
    t0 = time.monotonic()
    _run_checked(args, timeout, "cargo build rmq-sidecar", cwd=REPO)
    path = REPO / "target" / ("release" if release else "debug") / "rmq-sidecar"
    log(f"built {path} in {time.monotonic() - t0:.0f}s")
    return path


def _toml_str(s: str) -> str:
    return json.dumps(str(s))  # a JSON string is a valid TOML basic string for our values


class Sidecar:
    """The rmq-sidecar binary under test, with a generated config and its own address space."""

    def __init__(self, name: str, *, old_namesrv: str, new_namesrv: str, workdir: Path,
                 target: str = "old", binary: Path | None = None, drain_seconds: int = 5,
                 log_filter: str = "info,rocketmq_sidecar=debug", broker_name_prefix: str = "new~",
                 extra_toml: str = "", env: dict | None = None, cluster_toml: dict | None = None,
                 gates_toml: dict | None = None):
        """``cluster_toml``: extra keys for ``[clusters.old]`` / ``[clusters.new]``, e.g.
        ``{"new": {"access_key": "AK", "secret_key_file": "/path"}}`` (values: str/int/bool).
        ``gates_toml``: keys of ``[gates]``; by default the gates are on, with a 5 s quiet
        period (the product's default is 30 s: a test's producers stop writing sooner)."""
        self.name = name
        self.cluster_toml = {k: dict(v) for k, v in (cluster_toml or {}).items()}
        self.old_namesrv = old_namesrv
        self.new_namesrv = new_namesrv
        self.workdir = Path(workdir) / f"sidecar-{name}"
        self.initial_target = target
        self.binary = binary or find_sidecar_binary()
        self.drain_seconds = drain_seconds
        self.log_filter = log_filter
        self.broker_name_prefix = broker_name_prefix
        self.extra_toml = extra_toml
        self.extra_env = dict(env or {})
        self.gates_toml = {"quiet_seconds": 5, "retry_seconds": 2, **(gates_toml or {})}
        self.slot = allocate_sidecar_slot()
        self.config_path = self.workdir / "sidecar.toml"
        self.log_path = self.workdir / "sidecar.log"
        self.proc: ManagedProcess | None = None
        self.switches: list[tuple[float, str, int, object]] = []
        self.idle_memory_kib: dict = {}
        self.final_memory_kib: dict = {}

    def __repr__(self) -> str:
        return f"Sidecar({self.name} namesrv {self.namesrv_addr} admin {self.admin_port} " \
               f"bind {self.slot.broker_bind})"

    @property
    def namesrv_addr(self) -> str:
        """What the pod uses as its name server."""
        return f"127.0.0.1:{self.slot.namesrv_port}"

    @property
    def admin_port(self) -> int:
        return self.slot.admin_port

    @property
    def health_port(self) -> int:
        return self.slot.health_port

    def config_text(self) -> str:
        s = self.slot
        return "\n".join([
            "# generated by tests/interop/harness.py",
            f"target = {_toml_str(self.initial_target)}",
            f"state_dir = {_toml_str(self.workdir / 'state')}",
            f"drain_seconds = {int(self.drain_seconds)}",
            f"log = {_toml_str(self.log_filter)}",
            "",
            "[listen]",
            f"namesrv = {_toml_str(self.namesrv_addr)}",
            f"admin = {_toml_str(f'127.0.0.1:{s.admin_port}')}",
            f"health = {_toml_str(f'127.0.0.1:{s.health_port}')}",
            f"broker_bind = {_toml_str(s.broker_bind)}",
            f"broker_fallback_ports = {_toml_str(f'{s.fallback_lo}-{s.fallback_hi}')}",
            "",
            "[clusters.old]",
            f"namesrv = {_toml_str(self.old_namesrv)}",
            *self._cluster_lines("old"),
            "",
            "[clusters.new]",
            f"namesrv = {_toml_str(self.new_namesrv)}",
            f"broker_name_prefix = {_toml_str(self.broker_name_prefix)}",
            *self._cluster_lines("new"),
            "",
            "[gates]",
            *self._toml_lines(self.gates_toml),
            "",
            self.extra_toml,
        ])

    def _cluster_lines(self, side: str) -> list[str]:
        return self._toml_lines(self.cluster_toml.get(side, {}))

    @staticmethod
    def _toml_lines(table: dict) -> list[str]:
        out = []
        for k, v in table.items():
            if isinstance(v, bool):
                out.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, int):
                out.append(f"{k} = {v}")
            else:
                out.append(f"{k} = {_toml_str(v)}")
        return out

    def start(self, ready_timeout: float = 30.0) -> "Sidecar":
        if self.binary is None or not Path(self.binary).exists():
            raise HarnessError("sidecar binary not found (build it with cargo build, or set RMQ_SIDECAR_BIN)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "state").mkdir(exist_ok=True)
        self.config_path.write_text(self.config_text())
        env = dict(os.environ, RUST_BACKTRACE="1", **self.extra_env)
        env.pop("NAMESRV_ADDR", None)
        self.proc = ManagedProcess(f"sidecar-{self.name}", [str(self.binary), "--config", str(self.config_path)],
                                   cwd=self.workdir, log_path=self.log_path, env=env).start()
        if self not in LOG_SOURCES:
            LOG_SOURCES.append(self)
        log(f"sidecar {self.name}: pid {self.proc.pid}, namesrv {self.namesrv_addr}, admin :{self.admin_port}, "
            f"bind {self.slot.broker_bind}, fallback {self.slot.fallback_lo}-{self.slot.fallback_hi}")
        wait_until(lambda: self.ready(), ready_timeout, f"sidecar {self.name} GET /ready == 200", 0.2,
                   self.proc.exited_reason)
        self.idle_memory_kib = self.memory_kib()
        return self

    # ---- HTTP admin API
    def _http(self, method: str, path: str, body: object | None = None, port: int | None = None,
              timeout: float = 10.0) -> tuple[int, object]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.admin_port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        try:
            parsed: object = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError:
            parsed = raw
        return resp.status, parsed

    def ready(self) -> bool:
        try:
            return self._http("GET", "/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def live(self) -> bool:
        try:
            return self._http("GET", "/live", timeout=2)[0] == 200
        except OSError:
            return False

    def route(self, via_health: bool = False) -> dict:
        """GET /route (admin port, or the read-only health port)."""
        status, body = self._http("GET", "/route", port=self.health_port if via_health else None)
        if status != 200 or not isinstance(body, dict):
            raise HarnessError(f"sidecar {self.name}: GET /route -> {status} {body!r}")
        return body

    def switch_raw(self, target: object) -> tuple[int, object]:
        """PUT /route {"target": target}; returns (status, parsed body) without judging it."""
        return self._http("PUT", "/route", {"target": target})

    def switch(self, target: str, force: bool = False) -> dict:
        """PUT /route to ``target``; raise unless 200 with a route whose target matches.
        ``force``: past the migration gates, for tests of a mechanism (signing, metrics) that
        stop the app and then switch, an order the gates rightly refuse."""
        body_in: dict = {"target": target, **({"force": True} if force else {})}
        status, body = self._http("PUT", "/route", body_in, timeout=90)
        self.switches.append((time.time(), target, status, body))
        if status != 200 or not isinstance(body, dict) or body.get("target") != target:
            raise HarnessError(f"sidecar {self.name}: PUT /route {target} -> {status} {body!r}")
        log(f"sidecar {self.name}: switched to {target}: {json.dumps(body)[:300]}")
        return body

    def switch_roles(self, producer: str | None = None, consumer: str | None = None,
                     force: bool = False) -> dict:
        """PUT /route {"producer": ..., "consumer": ...} (the roles given); raise unless 200 with
        each given role on its target. ``force``: as in ``switch``."""
        body = {k: v for k, v in (("producer", producer), ("consumer", consumer)) if v is not None}
        status, doc = self._http("PUT", "/route", {**body, **({"force": True} if force else {})}, timeout=90)
        self.switches.append((time.time(), json.dumps(body), status, doc))
        ok = status == 200 and isinstance(doc, dict) and all(
            doc.get("roles", {}).get(role, {}).get("target") == t for role, t in body.items())
        if not ok:
            raise HarnessError(f"sidecar {self.name}: PUT /route {body} -> {status} {doc!r}")
        log(f"sidecar {self.name}: roles switched {body}: target={doc.get('target')}")
        return doc

    def put_route(self, body: dict, timeout: float = 90.0) -> tuple[int, object]:
        """PUT /route with ``body`` (roles, dry_run, force, seed_offsets); (status, parsed body)
        without judging it. The gates' reads can take seconds: the timeout is long."""
        status, doc = self._http("PUT", "/route", body, timeout=timeout)
        self.switches.append((time.time(), json.dumps(body), status, doc))
        return status, doc

    def switch_when_gates_pass(self, timeout: float, **roles: str) -> tuple[dict, float, dict]:
        """What an operator does: a dry run every 2 s until the migration gates would pass,
        then the switch. Returns (route document, seconds waited, the last refused dry run)."""
        t0 = time.monotonic()
        last: dict = {}
        while True:
            status, doc = self.put_route({**roles, "dry_run": True})
            if status == 200 and isinstance(doc, dict) and doc.get("would_switch"):
                break
            last = doc if isinstance(doc, dict) else {"raw": doc}
            if time.monotonic() - t0 > timeout:
                raise HarnessError(f"sidecar {self.name}: gates still refuse {roles} after {timeout:.0f}s: "
                                   f"{json.dumps(last)[:1500]}")
            time.sleep(2.0)
        waited = time.monotonic() - t0
        status, doc = self.put_route(dict(roles))
        if status != 200 or not isinstance(doc, dict):
            raise HarnessError(f"sidecar {self.name}: PUT /route {roles} -> {status} {doc!r}")
        log(f"sidecar {self.name}: {roles} passed the gates after {waited:.1f}s")
        return doc, waited, last

    def alive(self) -> bool:
        return bool(self.proc and self.proc.alive())

    def memory_kib(self) -> dict:
        """Current (VmRSS) and peak (VmHWM) resident memory of the sidecar process, in KiB."""
        out = {}
        pid = self.proc.pid if self.proc else None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0])
        return out

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (drains up to drain_seconds), bounded wait, then SIGKILL."""
        if self.proc is None:
            return None
        self.final_memory_kib = self.memory_kib()
        rc = self.proc.stop(timeout if timeout is not None else self.drain_seconds + 10)
        log(f"sidecar {self.name}: stopped rc={rc}")
        return rc

    def dump_logs(self, lines: int = 60, echo: bool = True) -> str:
        text = (f"===== {self!r} pid={self.proc.pid if self.proc else None} "
                f"rc={self.proc.returncode if self.proc else None} =====\n"
                f"----- {self.log_path} -----\n{tail(self.log_path, lines)}")
        if echo:
            print(text, flush=True)
        return text


# --------------------------------------------------------------------------- run directories


def new_run_dir(keep: int = 4) -> Path:
    """A fresh ``target/interop/runs/<stamp>-<pid>`` directory; older runs beyond ``keep`` are
    deleted (broker stores are large)."""
    runs = OUT / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    old = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for p in old[:max(0, len(old) - keep + 1)]:
        shutil.rmtree(p, ignore_errors=True)
    d = runs / f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
    d.mkdir()
    return d


# --------------------------------------------------------------------------- migration scenario


@dataclasses.dataclass
class MigrationReport:
    """Accounting of one migration run (see ``run_migration``)."""

    label: str
    old: str
    new: str
    client_version: str
    timers: str
    topic: str
    group: str
    sent: int = 0
    sent_old: int = 0
    sent_new: int = 0
    sent_unknown: int = 0
    sent_old_after_switch: int = 0
    deliveries: int = 0
    received_unique: int = 0
    lost: list = dataclasses.field(default_factory=list)
    duplicate_keys: int = 0
    extra_keys: int = 0
    per_consumer: dict = dataclasses.field(default_factory=dict)
    new_max_offsets_total: int | None = None
    old_max_offsets_total: int | None = None
    new_sample: KeyCheck | None = None
    new_sample_wrong_host: list = dataclasses.field(default_factory=list)
    old_final_lag: int | None = None
    new_final_lag: int | None = None
    timeline: list = dataclasses.field(default_factory=list)
    sidecar_exit_codes: dict = dataclasses.field(default_factory=dict)
    #: name -> (RSS KiB right after ready, peak RSS KiB over the run)
    sidecar_memory_kib: dict = dataclasses.field(default_factory=dict)
    error: str | None = None
    elapsed_s: float = 0.0

    def format(self) -> str:
        s = self.new_sample
        sample = "not checked" if s is None else (
            f"{len(s.found)}/{len(s.found) + len(s.missing)} sampled new-routed keys stored"
            + (f" (MISSING: {s.missing})" if s.missing else "")
            + (f" (on a wrong host: {self.new_sample_wrong_host})" if self.new_sample_wrong_host else ""))
        per = "; ".join(f"{n}: {c['deliveries']} deliveries ({c['old']} from old, {c['new']} from new)"
                        for n, c in self.per_consumer.items())
        lost = f"{len(self.lost)}" + (f"  e.g. {self.lost[:10]}" if self.lost else "")
        bar = "=" * 78
        lines = [
            bar,
            f" MIGRATION ACCOUNTING: {self.label}",
            bar,
            f" old cluster   {self.old}",
            f" new cluster   {self.new}",
            f" client        rocketmq-client {self.client_version}; {self.timers}",
            f" topic/group   {self.topic} / {self.group}",
            f" sent (acked)  {self.sent}   (to old: {self.sent_old}, to new: {self.sent_new}, "
            f"unknown broker: {self.sent_unknown}; to old after first new send: {self.sent_old_after_switch})",
            f" received      {self.received_unique} unique keys in {self.deliveries} deliveries",
            f"               {per}",
            f" LOST          {lost}",
            f" duplicates    {self.duplicate_keys} keys received more than once",
            f" extras        {self.extra_keys} keys received but never acked to the producer",
            f" new broker    topic max offsets total = {self.new_max_offsets_total}; {sample}",
            f" old broker    topic max offsets total = {self.old_max_offsets_total}",
            f" final lag     old = {self.old_final_lag}, new = {self.new_final_lag} (group {self.group})",
            " timeline      " + ("\n               ".join(self.timeline) or "-"),
            f" sidecars      exit codes after SIGTERM: {self.sidecar_exit_codes}",
            " sidecar RSS   " + ("; ".join(f"{n}: idle {i / 1024:.1f} MiB, peak {p / 1024:.1f} MiB"
                                          for n, (i, p) in self.sidecar_memory_kib.items()) or "-"),
            f" result        {'ABORTED: ' + self.error.splitlines()[0][:400] if self.error else 'scenario completed'}",
            f" elapsed       {self.elapsed_s:.1f}s",
            bar,
        ]
        return "\n".join(lines)


@dataclasses.dataclass
class MigrationBounds:
    """Upper bounds (seconds) of the scenario's waits, derived from the client timers."""

    first_receive: float
    c1_on_new: float
    c1_settle: float
    producer_on_new: float
    old_drained: float
    keep_producing: float
    final_receive: float

    @classmethod
    def for_timers(cls, t: ClientTimers, keep_producing: float = 5.0) -> "MigrationBounds":
        cycle = t.poll_s + t.heartbeat_s + t.rebalance_s
        return cls(
            first_receive=60 + cycle,
            c1_on_new=30 + 2 * (t.poll_s + t.heartbeat_s),
            # after C1 heartbeats to new it must also rebalance onto the new queues before the
            # producer moves (protocol notes 8): one poll + one rebalance, plus margin
            c1_settle=t.poll_s + t.rebalance_s + 2,
            producer_on_new=30 + 2 * t.poll_s,
            # brokers expire a silent client channel after 120 s; then C2 must rebalance
            old_drained=180 + cycle,
            keep_producing=keep_producing,
            final_receive=60 + cycle + t.persist_s,
        )


def run_migration(old: Cluster, new: Cluster, workdir: Path, *, label: str,
                  timers: ClientTimers = FAST_TIMERS, client_version: str = OLD_CLIENT_VERSION,
                  rate: float = 50, bounds: MigrationBounds | None = None,
                  say: Callable[[str], None] = log, broker_name_prefix: str = "new~",
                  sidecar_binary: Path | None = None, sidecar_options: dict | None = None,
                  new_namesrv: str | None = None, new_namespace: str | None = None) -> MigrationReport:
    """Move two consumer pods and one producer pod from ``old`` to ``new`` through sidecars.

    Order (the safe one): topic+group exist on both clusters; C1 moves first, then the producer,
    then -- once the old cluster shows zero lag for the group -- C2. Returns the accounting; the
    caller decides what to assert. If a step fails or a bounded wait runs out, the failure is
    recorded in ``report.error`` and the accounting is still computed from what the pods wrote.
    All processes started here are stopped before returning.

    ``sidecar_options``: extra ``Sidecar`` keyword arguments for every sidecar (credentials via
    ``cluster_toml`` / ``env``). ``new_namesrv``: what the sidecars use as the new cluster's name
    server (default ``new.namesrv_addr``; e.g. a RocketMQ Proxy's remoting address).
    ``new_namespace``: the new cluster is namespaced (TDMQ 4.x): the topic and group exist there
    only as ``<ns>%name`` and every sidecar has ``clusters.new.namespace`` set; the apps stay
    without a namespace.
    """
    bounds = bounds or MigrationBounds.for_timers(timers)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    suffix = f"{int(time.time()) % 100000}{random.randrange(100):02d}"
    topic, group, pgroup = f"MigTopic{suffix}", f"MigGroup{suffix}", f"MigProducer{suffix}"
    # How the new cluster names them (namespaced on a TDMQ 4.x-like cluster).
    new_topic = f"{new_namespace}%{topic}" if new_namespace else topic
    new_group = f"{new_namespace}%{group}" if new_namespace else group
    report = MigrationReport(label, repr(old), repr(new), client_version, timers.describe(), topic, group)
    t0 = time.monotonic()

    def mark(what: str) -> None:
        report.timeline.append(f"{time.monotonic() - t0:6.1f}s  {what}")
        say(what)

    sidecars: list[Sidecar] = []
    pods: dict[str, Pod] = {}

    # The sidecar closes a connection to the cluster a pod has left once the client has been
    # silent on it for a few heartbeat intervals (it heartbeats every broker it still uses);
    # with the default 30 s heartbeat that is the sidecar's default of 45 s.
    retire_s = 45 if timers.heartbeat_s >= 30 else max(3, math.ceil(3 * timers.heartbeat_s))

    def sidecar(n: str) -> Sidecar:
        options = dict(sidecar_options or {})
        if new_namespace:
            cluster_toml = {k: dict(v) for k, v in options.pop("cluster_toml", {}).items()}
            cluster_toml.setdefault("new", {})["namespace"] = new_namespace
            options["cluster_toml"] = cluster_toml
        sc = Sidecar(n, old_namesrv=old.namesrv_addr, new_namesrv=new_namesrv or new.namesrv_addr,
                     workdir=workdir, target="old", binary=sidecar_binary,
                     broker_name_prefix=broker_name_prefix,
                     extra_toml=f"[upstream]\nretire_idle_seconds = {retire_s}\n", **options)
        sidecars.append(sc)
        return sc.start()

    def pod(n: str, mode: str, sc: Sidecar, **kw) -> Pod:
        p = Pod(n, mode, namesrv=sc.namesrv_addr, topic=topic,
                group=pgroup if mode == "producer" else group, workdir=workdir,
                client_version=client_version, timers=timers, **kw)
        pods[n] = p
        return p.start()

    def any_exited(*ps: Pod):
        return lambda: next((why for why in (p.proc.exited_reason() for p in ps) if why), None)

    try:
        try:
            for c in (new, old):  # step 1: resources on the NEW cluster first (and on old)
                ns = f"{new_namespace}%" if new_namespace and c is new else ""
                c.update_topic(ns + topic, 4)
                c.update_sub_group(ns + group)
            mark(f"topic {topic} and group {group} created on the new and the old cluster")

            sc_c1, sc_c2, sc_p = sidecar("c1"), sidecar("c2"), sidecar("p")
            mark("3 sidecars ready, all targeting old")

            c1, c2 = pod("C1", "consumer", sc_c1), pod("C2", "consumer", sc_c2)
            wait_until(lambda: old.consumer_online(group, "C1") and old.consumer_online(group, "C2"),
                       bounds.first_receive, "C1 and C2 online on the old cluster", 1.0, any_exited(c1, c2))
            mark("consumers C1 and C2 are online on old (broker-side consumerConnection)")
            p = pod("P", "producer", sc_p, rate=rate)
            wait_until(lambda: c1.records() and c2.records(), bounds.first_receive,
                       "both consumers receiving", 0.5, any_exited(p, c1, c2))
            mark(f"both consumers receive (P acked {len(p.records())} so far)")

            sc_c1.switch("new")
            mark("C1's sidecar switched to new")
            wait_until(lambda: new.consumer_online(new_group, "C1"), bounds.c1_on_new,
                       "C1 online on the new cluster", 1.0, any_exited(c1))
            mark("C1 is online on new (broker-side consumerConnection)")
            time.sleep(bounds.c1_settle)
            mark(f"waited {bounds.c1_settle:g}s more for C1 to poll routes and rebalance onto the new queues")

            sc_p.switch("new")
            mark("P's sidecar switched to new")
            wait_until(lambda: any(_classify(r[1], old, new, broker_name_prefix) == "new" for r in p.records()),
                       bounds.producer_on_new, "producer acks from the new cluster", 0.5, any_exited(p))
            mark("P's sends are acked by the new cluster")
            wait_until(lambda: (new.topic_max_offsets_total(new_topic) or 0) > 0, 30,
                       "messages stored on the new broker", 1.0)
            mark(f"the new broker stores messages (max offsets total {new.topic_max_offsets_total(new_topic)})")

            lag_seen: list = []

            def old_drained() -> bool:
                lag = old.consumer_lag(group, topic)
                lag_seen.append(lag)
                return lag == 0

            try:
                wait_until(old_drained, bounds.old_drained, f"lag 0 for {group} on the old cluster", 2.0,
                           any_exited(c2))
            except HarnessError as e:
                raise HarnessError(f"{e}; lag readings: {lag_seen[-10:]}") from None
            mark(f"old cluster lag for the group is 0 ({len(lag_seen)} readings, last non-zero "
                 f"{next((x for x in reversed(lag_seen) if x), 0)})")

            # C2 is the group's last member on old: its gate waits for the old backlog to be
            # zero and for the old cluster to have had no write for the quiet period.
            _, waited, _ = sc_c2.switch_when_gates_pass(bounds.old_drained, target="new")
            mark(f"C2's sidecar switched to new (its gate passed after {waited:.1f}s)")
            time.sleep(bounds.keep_producing)
            mark(f"produced {bounds.keep_producing:g}s more")
        except HarnessError as e:
            report.error = str(e)
            mark(f"ABORTED: {str(e).splitlines()[0][:300]}")

        p = pods.get("P")
        sent_records: list = []
        if p is not None:
            p.stop()
            sent_records = p.records()
            mark(f"producer stopped: {len(sent_records)} acked keys")
        sent = {r[0] for r in sent_records}
        consumers = [pods[n] for n in ("C1", "C2") if n in pods]

        def received() -> set:
            return set().union(*(set(c.keys()) for c in consumers)) if consumers else set()

        if consumers and sent:
            try:
                wait_until(lambda: sent <= received(), bounds.final_receive,
                           "consumers to receive every acked key", 1.0)
                mark("consumers received every acked key")
            except HarnessError as e:
                mark(f"NOT all acked keys were received: {e}")
            time.sleep(min(3.0, timers.persist_s + 1))  # let offsets be committed before the lag read
        for c in consumers:
            c.stop()
        if consumers:
            mark("consumers stopped")

        # ---- accounting
        account(report, sent_records, {c.name: c.records() for c in consumers},
                lambda b: _classify(b, old, new, broker_name_prefix))

        new_keys = [r[0] for r in sent_records if _classify(r[1], old, new, broker_name_prefix) == "new"]
        try:  # broker-side checks, straight at the real name servers (not through a sidecar)
            report.new_max_offsets_total = new.topic_max_offsets_total(new_topic)
            report.old_max_offsets_total = old.topic_max_offsets_total(topic)
            if new_keys:
                report.new_sample = new.keys_stored(new_topic, new_keys, sample=5)
                report.new_sample_wrong_host = [k for k, h in report.new_sample.store_hosts.items()
                                                if h != new.broker_addr]
            report.old_final_lag = old.consumer_lag(group, topic)
            report.new_final_lag = new.consumer_lag(new_group, new_topic)
        except HarnessError as e:
            report.error = (report.error + "\n" if report.error else "") + f"broker-side check failed: {e}"
    finally:
        for pd in pods.values():
            with contextlib.suppress(Exception):
                pd.stop(15)
        for sc in sidecars:
            with contextlib.suppress(Exception):
                rc = sc.stop()
                report.sidecar_exit_codes[sc.name] = rc
                report.sidecar_memory_kib[sc.name] = (sc.idle_memory_kib.get("VmRSS", 0),
                                                      sc.final_memory_kib.get("VmHWM", 0))
        report.elapsed_s = time.monotonic() - t0
    return report


def account(report: MigrationReport, sent_records: Sequence[Sequence[str]],
            consumer_records: dict, classify: Callable[[str], str]) -> MigrationReport:
    """Fill the message accounting of ``report`` from the pods' output files.

    ``sent_records``: the producer's lines (key, brokerName, ...), one per SEND_OK, in order.
    ``consumer_records``: consumer name -> its lines (key, brokerName, ...), one per delivery.
    ``classify``: broker name as the app saw it -> "old" | "new" | "unknown".
    lost = acked keys never delivered; duplicates = keys delivered more than once (in total);
    extras = delivered keys that were never acked.
    """
    sent = {r[0] for r in sent_records}
    report.sent = len(sent)
    report.sent_old = report.sent_new = report.sent_unknown = report.sent_old_after_switch = 0
    seen_new = False
    for r in sent_records:
        kind = classify(r[1])
        if kind == "new":
            report.sent_new += 1
            seen_new = True
        elif kind == "old":
            report.sent_old += 1
            if seen_new:
                report.sent_old_after_switch += 1
        else:
            report.sent_unknown += 1
    all_keys: list[str] = []
    report.per_consumer = {}
    for name, recs in consumer_records.items():
        all_keys += [r[0] for r in recs]
        kinds = [classify(r[1]) for r in recs]
        report.per_consumer[name] = dict(deliveries=len(recs), old=kinds.count("old"), new=kinds.count("new"))
    uniq = set(all_keys)
    report.deliveries = len(all_keys)
    report.received_unique = len(uniq)
    report.lost = sorted(sent - uniq, key=_key_order)
    report.duplicate_keys = sum(1 for n in _counts(all_keys).values() if n > 1)
    report.extra_keys = len(uniq - sent)
    return report


def _classify(broker_name: str, old: Cluster, new: Cluster, prefix: str) -> str:
    """'new' / 'old' / 'unknown' for a broker name as the application saw it."""
    if prefix and broker_name.startswith(prefix):
        return "new"
    if broker_name == new.broker_name and new.broker_name != old.broker_name:
        return "new"
    if broker_name == old.broker_name:
        return "old"
    return "unknown"


def _counts(items: Iterable[str]) -> dict:
    c: dict = {}
    for i in items:
        c[i] = c.get(i, 0) + 1
    return c


def _key_order(k: str):
    m = re.search(r"(\d+)$", k)
    return (k[: m.start()] if m else k, int(m[1]) if m else 0)
