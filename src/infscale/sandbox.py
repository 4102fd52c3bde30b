"""Run untrusted Python programs in a sandbox: the code-execution half of code evaluation.

:func:`run_code` runs one program in a fresh process tree and returns a :class:`SandboxResult`
(status, exit code, captured output, seconds). :func:`run_tests` and :func:`run_test_list`
build HumanEval- and MBPP-style test programs around a candidate solution.

Isolation is layered. The strongest layer the machine supports is detected once
(:func:`sandbox_capabilities`) by actually running a probe program, and every run uses it:

``namespaces`` (running as root)
    ``unshare`` puts the run in new pid, network, mount, IPC and UTS namespaces. Inside, a small
    init process (this file, run as a script) builds a private root: a read-only tmpfs holding
    read-only binds of ``/usr``, ``/etc``, the interpreter's prefix and the library directories,
    a minimal ``/dev``, a fresh ``/proc`` that shows only the run's own processes, and a
    size-limited tmpfs at ``/tmp`` that is the program's cwd, ``HOME`` and ``TMPDIR`` -- the
    only writable place. It then drops to an unprivileged uid that is unique to the run (no
    capabilities, ``no_new_privs``), sets the rlimits and runs the program as its child. When
    cgroup v1 ``memory`` and ``pids`` controllers are writable, the whole tree also shares one
    memory limit and one task limit.
``userns`` (not root, unprivileged user namespaces allowed)
    The same, inside a user namespace: the program keeps the caller's uid (mapped to root inside,
    with every capability dropped and ``SECBIT_NOROOT`` locked), and the private read-only root
    is what keeps it away from the caller's files.
``uid`` (root, no namespaces)
    No namespaces: the program runs under a unique unprivileged uid in a private ``0700``
    temporary directory, so rlimits (including the process count) bind, it cannot signal other
    users' processes and file permissions apply. The network is not isolated.
``rlimits`` (nothing else works)
    Resource limits, a minimal environment, a private temporary directory and a process group
    only. This protects against accidents, not against hostile code.

In every mode: a minimal environment (``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` and what the
caller passes; nothing inherited), ``python -I -S -B`` (no site-packages, no user environment;
the standard library imports), rlimits on address space, CPU seconds, processes, file size,
open files and core dumps, a wall-clock timeout enforced twice (by the caller, and by the
sandbox's own init in case the caller dies), output capped while it is read, and a sweep that
kills every process of the run before :func:`run_code` returns.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MODES",
    "STATUSES",
    "SandboxCapabilities",
    "SandboxError",
    "SandboxResult",
    "run_code",
    "run_test_list",
    "run_tests",
    "sandbox_capabilities",
]

log = logging.getLogger("infscale.sandbox")

#: Isolation modes, strongest first.
MODES = ("namespaces", "userns", "uid", "rlimits")
#: What :attr:`SandboxResult.status` can be.
STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "killed")

_MIB = 1 << 20
_NOFILE = 256  # open files per process
_INIT_GRACE = 1.0  # the init's own deadline runs this long after the caller's
_SWEEP_SECONDS = 3.0  # how long to wait for a killed process tree to disappear
_LEADER_GRACE = 0.5  # how long the sweep lets unshare / the init exit by itself
_UID_BASE = 1_870_000_000  # per-run uids come from [_UID_BASE, _UID_BASE + _UID_COUNT)
_UID_COUNT = 1_000_000
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_CRASH_SIGNALS = {"SIGSEGV", "SIGABRT", "SIGBUS", "SIGFPE", "SIGILL", "SIGSYS", "SIGTRAP"}
_MEMORY_ERROR = re.compile(r"(?m)^MemoryError\b")


# =============================================================================================
# Results and capabilities.


@dataclass
class SandboxResult:
    """What one sandboxed run did.

    ``status``: ``ok`` (exit 0), ``error`` (non-zero exit, an uncaught exception or a crash
    such as a segfault), ``timeout`` (wall timeout or CPU-seconds limit), ``memory`` (a
    ``MemoryError`` or the memory cgroup's OOM killer), ``output_limit`` (stdout or stderr
    passed ``max_output_bytes``; the run was killed) or ``killed`` (ended by another signal).
    ``returncode`` is the exit code, ``-N`` for signal N, ``None`` when the run was killed
    before it reported one. ``stdout``/``stderr`` are decoded as UTF-8 (invalid bytes
    replaced) and hold at most ``max_output_bytes`` each. ``contained`` is ``True`` when every
    process of the run is known to be gone; ``notes`` says what happened beyond the status.
    ``uid`` is the host uid the program ran under when the run had one of its own.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    mode: str
    contained: bool = True
    notes: list[str] = field(default_factory=list)
    uid: int | None = None

    @property
    def passed(self) -> bool:
        """The program ran to completion and exited with 0."""
        return self.status == "ok" and self.returncode == 0


@dataclass(frozen=True)
class SandboxCapabilities:
    """The isolation this machine supports, as verified by running probe programs.

    ``mode`` is the strongest working mode (used by default); ``available`` lists every mode
    that works, strongest first. The guarantee flags describe ``mode``:

    - ``pid_isolated``: the program sees and can signal only its own processes;
    - ``network_isolated``: no network at all (only a loopback that is down);
    - ``private_root``: read-only view of system directories; only its ``/tmp`` is writable;
    - ``unprivileged``: runs without root or capabilities;
    - ``own_uid``: runs under a uid no other process uses, so it cannot signal anything else;
    - ``process_limit``: the process-count limit binds (non-root uid or a pids cgroup);
    - ``cgroup``: memory and task limits apply to the whole process tree.
    """

    mode: str
    available: tuple[str, ...]
    root: bool
    unshare: str | None
    python: str
    pid_isolated: bool
    network_isolated: bool
    private_root: bool
    unprivileged: bool
    own_uid: bool
    process_limit: bool
    cgroup: bool
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line saying what protects a sandboxed program on this machine."""
        layers = []
        if self.pid_isolated or self.network_isolated:
            layers.append("pid/net/mount/ipc/uts namespaces")
        if self.private_root:
            layers.append("private read-only root")
        if self.unprivileged:
            layers.append("unprivileged uid" if self.root else "no capabilities")
        if self.cgroup:
            layers.append("memory+pids cgroup")
        layers.append("rlimits")
        return f"sandbox mode {self.mode}: " + ", ".join(layers)


class SandboxError(RuntimeError):
    """The sandbox itself could not run a program (not the program's fault)."""


# =============================================================================================
# The init: runs inside the sandbox. The section between the two ``--- init`` markers is written
# out as ``init.py`` for every run (see _init_script): it may use only ``json``, ``os``,
# ``signal``, ``time``, ``ctypes``, ``platform`` and ``resource``, and nothing defined outside it.

# --- init: begin ---
_NICE = 10  # sandboxed programs yield the CPU to the host
_DEVICES = ("null", "zero", "full", "random", "urandom")

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_SET_CHILD_SUBREAPER = 1, 24, 28, 36
_PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
_SECBIT_NOROOT_ALL = 0x3 | 0x4 | 0x8 | 0x10 | 0x20  # NOROOT, NO_SETUID_FIXUP, KEEP_CAPS_LOCKED
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41}


class _Libc:
    """The few system calls the init needs that :mod:`os` does not expose."""

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)

    def _check(self, ret: int, what: str) -> None:
        if ret != 0:
            err = self.ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def mount(
        self, src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
    ) -> None:
        enc = lambda s: None if s is None else s.encode()  # noqa: E731
        ret = self.lib.mount(enc(src), enc(target), enc(fstype), self.ctypes.c_ulong(flags), enc(data))
        self._check(ret, f"mount {src or ''} {target}")

    def umount_detach(self, target: str) -> None:
        self._check(self.lib.umount2(target.encode(), _MNT_DETACH), f"umount {target}")

    def pivot_root(self, new_root: str) -> None:
        """``pivot_root(".", ".")`` in ``new_root``, then detach the old root (chroot if unknown)."""
        import platform

        os.chdir(new_root)
        number = _SYS_PIVOT_ROOT.get(platform.machine())
        if number is None:
            os.chroot(".")
        else:
            self._check(self.lib.syscall(number, b".", b"."), "pivot_root")
            self.umount_detach(".")
        os.chdir("/")

    def prctl(self, option: int, arg: int = 0, what: str = "prctl") -> None:
        c = self.ctypes.c_ulong
        self._check(self.lib.prctl(option, c(arg), c(0), c(0), c(0)), what)


def _mount_flags(path: str) -> int:
    """The per-mount flags of ``path`` that a user namespace may not clear on remount."""
    f = os.statvfs(path).f_flag
    pairs = (
        (os.ST_RDONLY, _MS_RDONLY), (os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV),
        (os.ST_NOEXEC, _MS_NOEXEC), (os.ST_NOATIME, _MS_NOATIME),
        (os.ST_NODIRATIME, _MS_NODIRATIME), (os.ST_RELATIME, _MS_RELATIME),
    )
    return sum(ms for st, ms in pairs if f & st)


def _bind(libc: _Libc, src: str, dst: str, *, readonly: bool = True, device: bool = False) -> None:
    """Bind ``src`` at ``dst`` (created as an empty file or directory), read-only by default."""
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    try:
        libc.mount(src, dst, None, _MS_BIND)
    except OSError:  # a user namespace may not bind a subtree with locked submounts alone
        libc.mount(src, dst, None, _MS_BIND | _MS_REC)
    flags = _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _mount_flags(dst)
    if device:
        flags |= _MS_NOEXEC
    else:
        flags |= _MS_NODEV | (_MS_RDONLY if readonly else 0)
    libc.mount(None, dst, None, flags)


def _build_root(libc: _Libc, cfg: dict[str, Any]) -> None:
    """Build the private root under ``cfg["newroot"]`` and pivot into it."""
    root, owner = cfg["newroot"], f"uid={cfg['tmp_uid']},gid={cfg['tmp_gid']}"
    libc.mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    libc.mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for link, target in cfg["symlinks"]:
        os.symlink(target, root + link)
    for src in cfg["system_binds"]:
        _bind(libc, src, root + src)
    # /dev: a few harmless devices, the usual symlinks and a small shared-memory tmpfs.
    dev = root + "/dev"
    os.makedirs(dev)
    libc.mount("tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,mode=0755")
    for name in _DEVICES:
        _bind(libc, "/dev/" + name, f"{dev}/{name}", device=True)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"{dev}/{name}")
    os.symlink("/proc/self/fd", dev + "/fd")
    os.makedirs(dev + "/shm")
    libc.mount("tmpfs", dev + "/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={cfg['shm_mb']}m,mode=1777")
    libc.mount(None, dev, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NOEXEC)
    # /proc for the new pid namespace (skipped where the kernel refuses, e.g. masked /proc).
    os.makedirs(root + "/proc")
    try:
        libc.mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    except OSError:
        pass
    # /tmp: the only writable place, size-limited, owned by the program's uid.
    tmp = root + "/tmp"
    os.makedirs(tmp)
    libc.mount("tmpfs", tmp, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={cfg['disk_mb']}m,mode=0700,{owner}")
    with open(cfg["source"], "rb") as src, open(tmp + "/main.py", "wb") as dst:
        dst.write(src.read())
    os.chown(tmp + "/main.py", cfg["tmp_uid"], cfg["tmp_gid"])
    for path in sorted(cfg["ro_paths"]):
        _bind(libc, path, root + path)
    libc.mount(None, root, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    libc.pivot_root(root)


def _drop_bounding_set(libc: _Libc) -> None:
    cap = 0
    while True:
        try:
            libc.prctl(_PR_CAPBSET_DROP, cap)
        except OSError:  # EINVAL past the last capability the kernel knows
            return
        cap += 1


def _init_setup(libc: _Libc, cfg: dict[str, Any]) -> None:
    """Join cgroups, build the private root, drop privileges, set rlimits (in that order)."""
    import resource

    for procs in cfg["cgroup_procs"]:
        with open(procs, "w") as f:
            f.write("0")
    # Orphans of the run become our children (not the host's pid 1's), so we can reap them.
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, "child subreaper")
    if cfg["private_root"]:
        _build_root(libc, cfg)
    os.chdir(cfg["cwd"])
    if cfg["setuid"] is not None:  # real root: become the run's own unprivileged uid
        _drop_bounding_set(libc)
        uid, gid = cfg["setuid"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    elif cfg["drop_caps"]:  # root of a user namespace: make sure exec gives no capabilities
        libc.prctl(_PR_SET_SECUREBITS, _SECBIT_NOROOT_ALL, "securebits")
        _drop_bounding_set(libc)
        libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "ambient caps")
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
    if cfg["pid_ns"]:  # changing credentials cleared unshare's --kill-child; set it again
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, "pdeathsig")
    for name, (soft, hard) in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    os.nice(_NICE)


def _children(parent: int) -> list[int]:
    """Live children of ``parent``, from /proc (empty when /proc is not mounted)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if len(fields) > 1 and int(fields[1]) == parent and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def _init_main(config_path: str) -> int:
    """The sandbox's init: set up, run the program as a child, report, clean up.

    In a pid namespace this is pid 1: when it exits the kernel kills every process left in
    the namespace. Elsewhere it is the run's child subreaper, so every orphan of the run
    (session leaders and double-forked daemons included) becomes its child and is killed and
    reaped before it exits. It reports one JSON line on the status pipe: ``{"status": wait
    status, "timed_out": bool}`` or ``{"setup_error": message}``.
    """
    with open(config_path) as f:
        cfg = json.load(f)
    status_fd = cfg["status_fd"]
    report = lambda obj: os.write(status_fd, (json.dumps(obj) + "\n").encode())  # noqa: E731
    try:
        libc = _Libc()
        _init_setup(libc, cfg)
        os.set_inheritable(status_fd, False)
    except BaseException as exc:  # noqa: BLE001 - reported to the caller, who raises
        report({"setup_error": f"{type(exc).__name__}: {exc}"})
        return 125
    deadline = time.monotonic() + cfg["timeout"]
    pid = os.fork()
    if pid == 0:
        try:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
        finally:
            os._exit(127)
    timed_out = False

    def sweep() -> None:
        # pid 1 of a namespace, or a uid of our own: kill(-1) reaches exactly the run's
        # processes (never the caller). Otherwise we kill our children until none is left:
        # as a subreaper we inherit every orphan of the run, session leaders included.
        if os.getpid() == 1 or cfg["setuid"] is not None:
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
        give_up = time.monotonic() + 2.0
        while time.monotonic() < give_up:
            for child in _children(os.getpid()):
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                return  # no children left, not even zombies
            time.sleep(0.005)

    def on_alarm(signum: int, frame: Any) -> None:
        nonlocal timed_out
        if time.monotonic() < deadline:  # a stray SIGALRM sent by the program itself
            signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.01))
            return
        timed_out = True
        sweep()
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.01))
    status = None
    while status is None:
        try:
            waited, st = os.waitpid(-1, 0)  # reaps orphans too (we may be their init)
        except ChildProcessError:
            break
        if waited == pid:
            status = st
    signal.setitimer(signal.ITIMER_REAL, 0)
    report({"status": status, "timed_out": timed_out})
    sweep()
    return 0


# --- init: end ---


# =============================================================================================
# The caller's side.


@dataclass(frozen=True)
class _Interpreter:
    path: str  # real path of the python binary
    prefixes: tuple[str, ...]  # directories it needs (base_prefix, base_exec_prefix)


@dataclass(frozen=True)
class _ModeProbe:
    mode: str
    interpreter: _Interpreter
    cgroup: bool
    facts: dict[str, Any]


_caps_lock = threading.Lock()
_caps: SandboxCapabilities | None = None
_probes: dict[str, _ModeProbe] = {}
_uids_lock = threading.Lock()
_uids_in_use: set[int] = set()
_init_source: bytes | None = None


def _is_root() -> bool:
    return os.geteuid() == 0


@functools.lru_cache(maxsize=1)
def _unshare_path() -> str | None:
    found = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin:" + os.environ.get("PATH", ""))
    return found if found and os.access(found, os.X_OK) else None


_INIT_HEADER = (
    "from __future__ import annotations\nimport json, os, signal, sys, time\nfrom typing import Any\n"
)
_INIT_FOOTER = "\nif __name__ == '__main__':\n    sys.exit(_init_main(sys.argv[1]))\n"


def _init_script() -> bytes:
    """The init section of this file as a stand-alone script (cheap to start: few imports)."""
    global _init_source
    if _init_source is None:
        with open(__file__, encoding="utf-8") as f:
            text = f.read()
        body = text.split("# --- init: begin ---\n", 1)[1].split("# --- init: end ---", 1)[0]
        _init_source = (_INIT_HEADER + body + _INIT_FOOTER).encode()
    return _init_source


@functools.lru_cache(maxsize=1)
def _interpreters() -> tuple[_Interpreter, ...]:
    """Python interpreters the program may run under: ours first, then the system's."""
    own = _Interpreter(
        os.path.realpath(sys.executable),
        tuple(dict.fromkeys(os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix))),
    )
    found = [own]
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        path = os.path.realpath(candidate)
        if not os.access(path, os.X_OK) or any(i.path == path for i in found):
            continue
        try:
            out = subprocess.run(
                [path, "-I", "-S", "-c", "import sys; print(sys.base_prefix); print(sys.base_exec_prefix)"],
                capture_output=True, text=True, timeout=10, env={"PATH": "/usr/bin:/bin"},
            )
        except (OSError, subprocess.SubprocessError):
            continue
        lines = out.stdout.split()
        if out.returncode == 0 and len(lines) == 2:
            found.append(_Interpreter(path, tuple(dict.fromkeys(os.path.realpath(p) for p in lines))))
    return tuple(found)


def _reachable_by_anyone(interp: _Interpreter) -> bool:
    """Whether any uid may run ``interp``: world-executable binary, world-searchable parents."""
    import stat

    paths = [interp.path, *interp.prefixes]
    for path in paths:
        while path not in ("/", ""):
            mode = os.stat(path).st_mode
            if not mode & stat.S_IXOTH or (path in paths and not mode & stat.S_IROTH):
                return False
            path = os.path.dirname(path)
    return True


def _allocate_uid() -> int:
    """A uid (and gid) no other live run of this process uses; spread across processes."""
    with _uids_lock:
        while True:
            uid = _UID_BASE + int.from_bytes(os.urandom(4), "little") % _UID_COUNT
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int | None) -> None:
    if uid is not None:
        with _uids_lock:
            _uids_in_use.discard(uid)


# --- cgroups (v1 memory + pids, when root can create them) -----------------------------------


class _Cgroup:
    """A memory+pids cgroup for one run, created below the caller's own cgroups (v1)."""

    def __init__(self, dirs: dict[str, str]):
        self.dirs = dirs

    @staticmethod
    def _mounts() -> dict[str, str]:
        mounts = {}
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fstype, _, options = post.split()[:3]
                if fstype != "cgroup":
                    continue
                for controller in ("memory", "pids"):
                    if controller in options.split(","):
                        mounts.setdefault(controller, pre.split()[4])
        return mounts

    @classmethod
    def create(cls, memory_bytes: int, tasks: int, owner: int | None) -> "_Cgroup | None":
        """A new cgroup, or ``None`` when this machine has no writable v1 memory+pids.

        ``owner`` (a uid) may then move itself in: the init of a user-namespace run joins
        without being root.
        """
        if not _is_root():
            return None
        group = cls({})
        try:
            mounts = cls._mounts()
            if set(mounts) != {"memory", "pids"}:
                return None
            own = {}
            with open("/proc/self/cgroup") as f:
                for line in f:
                    _, controllers, path = line.rstrip("\n").split(":", 2)
                    for c in controllers.split(","):
                        own[c] = path
            name = f"infscale-sbx-{os.getpid()}-{os.urandom(4).hex()}"
            for c, mount in mounts.items():
                d = os.path.join(mount, own.get(c, "/").lstrip("/"), name)
                os.mkdir(d)
                group.dirs[c] = d
            group._write("memory", "memory.limit_in_bytes", memory_bytes)
            try:
                group._write("memory", "memory.memsw.limit_in_bytes", memory_bytes)
            except OSError:
                pass  # no swap accounting on this kernel
            group._write("pids", "pids.max", tasks)
            if owner is not None:
                for procs in group.procs_files():
                    os.chown(procs, owner, owner)
            return group
        except OSError as exc:
            log.debug("no cgroup for the sandbox: %s", exc)
            group.remove()
            return None

    def _write(self, controller: str, name: str, value: int) -> None:
        with open(os.path.join(self.dirs[controller], name), "w") as f:
            f.write(str(value))

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.procs_files():
            try:
                with open(path) as f:
                    found.update(int(x) for x in f.read().split())
            except OSError:
                pass
        return found

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this cgroup."""
        try:
            with open(os.path.join(self.dirs["memory"], "memory.oom_control")) as f:
                counters = dict(line.split() for line in f if len(line.split()) == 2)
        except (OSError, KeyError):
            return False
        return int(counters.get("oom_kill", 0)) > 0

    def remove(self) -> bool:
        ok = True
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                ok = False
                log.warning("sandbox cgroup %s could not be removed", d)
        return ok


# --- sweeping ----------------------------------------------------------------------------


def _run_pids(pgid: int, uid: int | None) -> set[int]:
    """Live (non-zombie) processes in process group ``pgid`` or owned by ``uid``, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            owner = os.stat(f"/proc/{entry}").st_uid
        except (OSError, IndexError):
            continue
        if len(fields) < 3 or fields[0] in ("Z", "X"):
            continue
        if int(fields[2]) == pgid or (uid is not None and owner == uid):
            found.add(int(entry))
    return found


def _sweep(leader: int, uid: int | None, cgroup: _Cgroup | None) -> bool:
    """Kill every process of a run until none is left; ``True`` when that was verified.

    A run's processes are those in its cgroup, those owned by its unique uid and those in the
    process group of ``leader``, the process we started (the caller has not reaped it yet, so
    its pid cannot have been reused). The leader is spared at first: it is ``unshare`` or the
    init, and given a moment it reaps its children and exits by itself, so nothing is left for
    the host's pid 1 to reap. (Processes that left the group without a uid or cgroup of their
    own -- ``rlimits`` mode -- are the init's to kill: it is the run's subreaper.)
    """
    started = time.monotonic()
    while True:
        live = _run_pids(leader, uid if _is_root() else None)
        if cgroup is not None:
            live |= cgroup.pids()
        if not live:
            return True
        elapsed = time.monotonic() - started
        targets = live if elapsed > _LEADER_GRACE else live - {leader}
        if elapsed > _LEADER_GRACE:
            try:
                os.killpg(leader, signal.SIGKILL)
            except OSError:
                pass
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if elapsed > _SWEEP_SECONDS:
            return False
        time.sleep(0.005)


# --- one run -----------------------------------------------------------------------------


def _minimal_env(home: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}
    env.update(extra or {})
    return env


def _validate(**values: Any) -> None:
    from .errors import ConfigError

    for name, value in values.items():
        if name == "env":
            strings = isinstance(value, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            )
            if value is not None and not strings:
                raise ConfigError("env", f"must map strings to strings, got {value!r}", "dict[str, str]")
        elif name == "mode":
            if value is not None and value not in MODES:
                raise ConfigError("mode", f"unknown sandbox mode {value!r}", ", ".join(MODES))
        elif name == "ro_paths":
            for p in value:
                if not (isinstance(p, str) and os.path.isabs(p) and os.path.exists(p)):
                    raise ConfigError("ro_paths", f"{p!r} is not an existing absolute path", "absolute paths")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(name, f"must be a positive number, got {value!r}", "a number > 0")


def _plan(
    probe: _ModeProbe, workdir_host: str, *, uid: int | None, cgroup: _Cgroup | None,
    ro_paths: tuple[str, ...], memory_mb: int, cpu_seconds: int, max_processes: int, max_file_mb: int, disk_mb: int,
    timeout: float, env: dict[str, str] | None, status_fd: int,
) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """The command line, Popen keywords and init config for one run in ``probe.mode``."""
    mode, interp = probe.mode, probe.interpreter
    private = mode in ("namespaces", "userns")
    cwd = "/tmp" if private else os.path.join(workdir_host, "work")
    rlimits = {
        "RLIMIT_AS": [memory_mb * _MIB] * 2,
        "RLIMIT_CPU": [int(cpu_seconds), int(cpu_seconds) + 1],
        "RLIMIT_NPROC": [max_processes] * 2,
        "RLIMIT_FSIZE": [max_file_mb * _MIB] * 2,
        "RLIMIT_CORE": [0, 0],
        "RLIMIT_NOFILE": [_NOFILE] * 2,
    }
    symlinks, binds = [], []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            symlinks.append([d, os.readlink(d)])
        elif os.path.isdir(d):
            binds.append(d)
    covered = lambda p: any(p == b or p.startswith(b.rstrip("/") + "/") for b in binds)  # noqa: E731
    for p in (*interp.prefixes, os.path.dirname(interp.path)):
        if not covered(os.path.realpath(p)):
            binds.append(os.path.realpath(p))
    in_userns = mode == "userns"
    cfg = {
        "status_fd": status_fd,
        "private_root": private,
        "newroot": os.path.join(workdir_host, "root"),
        "source": os.path.join(workdir_host, "main.py"),
        "symlinks": symlinks,
        "system_binds": binds,
        "ro_paths": list(ro_paths) if private else [],
        "shm_mb": max_file_mb,
        "disk_mb": disk_mb,
        "tmp_uid": 0 if in_userns else uid,  # owner of /tmp as the program sees it
        "tmp_gid": 0 if in_userns else uid,
        "cwd": cwd,
        "setuid": [uid, uid] if mode in ("namespaces", "uid") else None,
        "drop_caps": in_userns,
        "pid_ns": private,
        "cgroup_procs": cgroup.procs_files() if cgroup is not None else [],
        "rlimits": rlimits,
        "timeout": timeout + _INIT_GRACE,
        "argv": [interp.path, "-I", "-S", "-B", os.path.join(cwd, "main.py")],
        "env": _minimal_env(cwd, env),
    }
    init = os.path.join(workdir_host, "init.py")
    popen: dict[str, Any] = {}
    if private:
        flags = ["--pid", "--fork", "--kill-child", "--net", "--mount", "--ipc", "--uts"]
        flags += ["--propagation", "private"]
        if in_userns:
            flags = ["--user", "--map-root-user", *flags]
            if _is_root():  # act as an ordinary user would: outside, the run is `uid`
                popen = {"user": uid, "group": uid, "extra_groups": []}
        # As real root the init can reach our own interpreter; as a user it needs the program's.
        launcher = interp.path if in_userns else os.path.realpath(sys.executable)
        cmd = [_unshare_path() or "unshare", *flags, launcher]
    else:
        cmd = [os.path.realpath(sys.executable)]
    cmd += ["-I", "-S", "-B", init, os.path.join(workdir_host, "init.json")]
    return cmd, popen, cfg


def _prepare_dir(probe: _ModeProbe, source: str, uid: int | None) -> str:
    """The run's host directory: init script, config, program, mount point or work dir."""
    base = tempfile.mkdtemp(prefix="infscale-sbx-")
    with open(os.path.join(base, "init.py"), "wb") as f:
        f.write(_init_script())
    with open(os.path.join(base, "main.py"), "w", encoding="utf-8") as f:
        f.write(source)
    if probe.mode in ("namespaces", "userns"):
        os.mkdir(os.path.join(base, "root"))
    else:
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        shutil.copy(os.path.join(base, "main.py"), os.path.join(work, "main.py"))
        if uid is not None:
            os.chmod(base, 0o711)  # the uid may pass through to its work dir, nothing else
            for p in (work, os.path.join(work, "main.py")):
                os.chown(p, uid, uid)
    if probe.mode == "userns" and _is_root():
        for dirpath, dirnames, filenames in os.walk(base):
            for name in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
                os.chown(name, uid, uid)
    return base


def _exited(pid: int) -> bool:
    """Whether ``pid`` (our child) has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _communicate(
    proc: subprocess.Popen, status_r: int, stdin: bytes, deadline: float, cap: int
) -> tuple[bytes, bytes, bytes, str | None]:
    """Feed stdin, read stdout/stderr (capped) and the status pipe until exit or a limit.

    Returns ``(stdout, stderr, status_bytes, reason)`` where ``reason`` is ``"timeout"``,
    ``"output_limit"`` or ``None`` (the init exited).
    """
    sel = selectors.DefaultSelector()
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), status_r: bytearray()}
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    stdin_fd, pending = proc.stdin.fileno(), memoryview(stdin)
    if pending:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
    reason = None
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
                break
            if exited_at is None and _exited(proc.pid):
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                break  # the init is gone; whatever still holds a pipe is swept next
            for key, _ in sel.select(min(deadline - now, 0.05)):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        n = os.write(fd, pending[: 1 << 16])
                        pending = pending[n:]
                    except BlockingIOError:
                        continue
                    except OSError:  # the program closed stdin or exited
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(fd)
                    continue
                buf = bufs[fd]
                if fd != status_r and len(buf) + len(data) > cap:
                    buf += data[: cap - len(buf)]
                    reason = "output_limit"
                    break
                buf += data
            if reason:
                break
    finally:
        sel.close()
    return bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]), bytes(bufs[status_r]), reason


def _classify(
    report: dict[str, Any] | None, reason: str | None, stderr: str, oom: bool, proc_rc: int | None
) -> tuple[str, int | None, list[str]]:
    notes: list[str] = []
    if reason == "output_limit":
        return "output_limit", None, ["output passed max_output_bytes; the run was killed"]
    if reason == "timeout" or (report or {}).get("timed_out"):
        return "timeout", None, ["wall-clock timeout; the run was killed"]
    if report is None or report.get("status") is None:
        notes.append("the sandbox init ended without reporting the program's exit")
        return ("memory" if oom else "killed"), proc_rc, notes
    ws = report["status"]
    if os.WIFEXITED(ws):
        rc = os.WEXITSTATUS(ws)
        if rc == 0:
            return "ok", 0, notes
        if oom or _MEMORY_ERROR.search(stderr[-4000:]):
            return "memory", rc, notes
        return "error", rc, notes
    sig = os.WTERMSIG(ws) if os.WIFSIGNALED(ws) else signal.SIGKILL
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    notes.append(f"terminated by {name}")
    if sig == signal.SIGXCPU:
        return "timeout", -sig, notes + ["CPU-seconds limit"]
    if oom:
        return "memory", -sig, notes + ["killed by the memory cgroup"]
    if name in _CRASH_SIGNALS:
        return "error", -sig, notes
    return "killed", -sig, notes


def _run(
    probe: _ModeProbe, source: str, *, stdin: str, timeout: float, memory_mb: int, cpu_seconds: int,
    max_processes: int, max_file_mb: int, max_output_bytes: int, disk_mb: int,
    env: dict[str, str] | None, ro_paths: tuple[str, ...],
) -> SandboxResult:
    uid = _allocate_uid() if (_is_root() and probe.mode != "rlimits") else None
    cgroup = None
    if probe.cgroup:
        total = (memory_mb + disk_mb + max_file_mb) * _MIB
        cgroup = _Cgroup.create(total, max_processes + 1, uid if probe.mode == "userns" else None)
        if cgroup is None:
            log.warning("sandbox: could not create this run's cgroup; running without it")
    base = _prepare_dir(probe, source, uid)
    status_r, status_w = os.pipe()
    cmd, popen_kw, cfg = _plan(
        probe, base, uid=uid, cgroup=cgroup, ro_paths=ro_paths, memory_mb=memory_mb,
        cpu_seconds=cpu_seconds, max_processes=max_processes, max_file_mb=max_file_mb,
        disk_mb=disk_mb, timeout=timeout, env=env, status_fd=status_w,
    )
    with open(os.path.join(base, "init.json"), "w") as f:
        json.dump(cfg, f)
    if probe.mode == "userns" and uid is not None:
        os.chown(os.path.join(base, "init.json"), uid, uid)
    started = time.monotonic()
    proc = None
    try:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(status_w,), start_new_session=True, cwd=base,
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}, **popen_kw,
            )
        finally:
            os.close(status_w)
        out, err, status_bytes, reason = _communicate(
            proc, status_r, stdin.encode(), started + timeout, max_output_bytes
        )
        # Sweep before reaping so the process group id cannot be reused in between.
        contained = _sweep(proc.pid, uid, cgroup)
        proc.wait()
        seconds = time.monotonic() - started
        report = None
        for line in status_bytes.decode(errors="replace").splitlines():
            try:
                report = json.loads(line)
            except ValueError:
                continue
        if report is not None and "setup_error" in report:
            raise SandboxError(f"sandbox setup failed in mode {probe.mode}: {report['setup_error']}")
        stderr = err.decode(errors="replace")
        oom = cgroup.oom_killed() if cgroup is not None else False
        status, rc, notes = _classify(report, reason, stderr, oom, proc.returncode)
        if not contained:
            notes.append("some processes of the run could not be confirmed gone")
            log.warning("sandbox run in mode %s: processes could not be confirmed gone", probe.mode)
        return SandboxResult(
            status=status, returncode=rc, stdout=out.decode(errors="replace"), stderr=stderr,
            seconds=seconds, mode=probe.mode, contained=contained, notes=notes, uid=uid,
        )
    finally:
        if proc is not None and proc.returncode is None:
            _sweep(proc.pid, uid, cgroup)
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr) if proc is not None else ():
            try:
                stream.close()
            except OSError:
                pass
        os.close(status_r)
        if cgroup is not None:
            cgroup.remove()
        shutil.rmtree(base, ignore_errors=True)
        _release_uid(uid)


# --- capability detection ---------------------------------------------------------------

_PROBE_PROGRAM = r"""
import json, os, socket
facts = {"uid": os.getuid(), "pid": os.getpid(), "ifaces": sorted(n for _, n in socket.if_nameindex())}
facts["root_readonly"] = bool(os.statvfs("/").f_flag & os.ST_RDONLY)
for key, path, prefix in (("cap_eff", "/proc/self/status", "CapEff:"), ("cgroup", "/proc/self/cgroup", "")):
    try:
        with open(path) as f:
            facts[key] = [l.strip() for l in f if l.startswith(prefix)]
    except OSError:
        facts[key] = None
print(json.dumps(facts))
"""


def _cgroup_works() -> bool:
    group = _Cgroup.create(64 * _MIB, 8, None)
    if group is None:
        return False
    return group.remove()


def _facts_ok(mode: str, facts: dict[str, Any], cgroup: bool) -> bool:
    """Whether what the probe program observed matches what ``mode`` promises."""
    caps = facts["cap_eff"]
    no_caps = caps is None or caps == [] or all(c.split()[-1] == "0000000000000000" for c in caps)
    isolated = facts["ifaces"] == ["lo"] and facts["pid"] <= 3 and facts["root_readonly"]
    if cgroup and not (facts["cgroup"] and any("infscale-sbx" in line for line in facts["cgroup"])):
        return False
    if mode == "namespaces":
        return isolated and facts["uid"] != 0 and no_caps
    if mode == "userns":
        return isolated and no_caps
    if mode == "uid":
        return facts["uid"] != 0 and no_caps
    return True


def _probe(mode: str, root: bool, unshare: str | None, cgroup_ok: bool) -> _ModeProbe | None:
    """Run the probe program in ``mode``; the mode works when its guarantees are observed.

    Where the run leaves root for a uid of its own (``userns`` and ``uid`` as root), the
    caller's interpreter may not be reachable (e.g. under ``/root``); the system's Python is
    tried next.
    """
    if mode in ("namespaces", "uid") and not root:
        return None
    if mode in ("namespaces", "userns") and unshare is None:
        return None
    if root and mode in ("userns", "uid"):  # the program runs as a uid of its own
        interps = tuple(i for i in _interpreters() if _reachable_by_anyone(i))
    else:
        interps = _interpreters()[:1]
    for interp in interps:
        for cgroup in ((True, False) if cgroup_ok else (False,)):
            probe = _ModeProbe(mode, interp, cgroup, {})
            try:
                res = _run(
                    probe, _PROBE_PROGRAM, stdin="", timeout=20.0, memory_mb=512, cpu_seconds=10,
                    max_processes=16, max_file_mb=1, max_output_bytes=10_000, disk_mb=4, env=None,
                    ro_paths=(),
                )
            except (SandboxError, OSError) as exc:
                log.debug("sandbox mode %s with %s (cgroup=%s) fails: %s", mode, interp.path, cgroup, exc)
                continue
            if not res.passed:
                log.debug("sandbox probe in mode %s with %s: %s %s", mode, interp.path, res.status, res.stderr[-500:])
                continue
            facts = json.loads(res.stdout)
            if _facts_ok(mode, facts, cgroup):
                return _ModeProbe(mode, interp, cgroup, facts)
            log.warning("sandbox mode %s ran but its guarantees were not observed: %s", mode, facts)
    return None


def sandbox_capabilities(refresh: bool = False) -> SandboxCapabilities:
    """What isolation this machine gives sandboxed programs (probed once, then cached).

    Every mode is tried by running a probe program in it and checking what the program
    observes (its uid, network interfaces, pid, whether ``/`` is read-only, its capabilities,
    its cgroup). The default mode is the strongest that works, or ``INFSCALE_SANDBOX_MODE``
    when that is set (to a weaker one, e.g. inside a container that forbids namespaces). The
    result is logged once: at INFO with namespaces, at WARNING without.
    """
    global _caps
    with _caps_lock:
        if _caps is not None and not refresh:
            return _caps
        root = _is_root()
        unshare = _unshare_path()
        cgroup_ok = _cgroup_works()
        _probes.clear()
        for mode in MODES:
            probe = _probe(mode, root, unshare, cgroup_ok)
            if probe is not None:
                _probes[mode] = probe
        if not _probes:
            raise SandboxError("no sandbox mode works on this machine (not even plain rlimits)")
        available = tuple(m for m in MODES if m in _probes)
        best = _probes[available[0]]
        forced = os.environ.get("INFSCALE_SANDBOX_MODE")
        if forced:
            if forced not in available:
                from .errors import ConfigError

                raise ConfigError(
                    "INFSCALE_SANDBOX_MODE", f"sandbox mode {forced!r} does not work here", ", ".join(available)
                )
            best = _probes[forced]
        ns = best.mode in ("namespaces", "userns")
        notes = []
        if best.interpreter.path != os.path.realpath(sys.executable):
            notes.append(f"programs run under {best.interpreter.path}: the caller's interpreter is unreachable")
        if not ns:
            notes.append("no namespaces: the network is reachable and the host filesystem is visible")
        if best.mode == "rlimits":
            notes.append("no privilege separation: the program runs as the caller's user")
        if best.mode == "userns" and not root:
            notes.append("the process limit counts all of the caller's processes (RLIMIT_NPROC is per user)")
        if not best.cgroup:
            notes.append("no cgroup: memory is limited per process (RLIMIT_AS), not per run")
        _caps = SandboxCapabilities(
            mode=best.mode, available=available, root=root, unshare=unshare,
            python=best.interpreter.path, pid_isolated=ns, network_isolated=ns, private_root=ns,
            unprivileged=best.mode != "rlimits" or not root,
            own_uid=root and best.mode != "rlimits",
            process_limit=not root or best.mode != "rlimits" or best.cgroup,
            cgroup=best.cgroup, notes=tuple(notes),
        )
        level = logging.INFO if ns else logging.WARNING
        log.log(level, "%s (available: %s)", _caps.summary(), ", ".join(available))
        for note in notes:
            log.log(level, "sandbox: %s", note)
        return _caps


def _probe_for(mode: str | None) -> _ModeProbe:
    from .errors import ConfigError

    caps = sandbox_capabilities()
    chosen = mode or caps.mode
    probe = _probes.get(chosen)
    if probe is None:
        raise ConfigError("mode", f"sandbox mode {chosen!r} does not work here", ", ".join(caps.available))
    return probe


# --- public entry points ----------------------------------------------------------------


def run_code(
    source: str,
    *,
    stdin: str = "",
    timeout: float = 10.0,
    memory_mb: int = 512,
    cpu_seconds: int = 10,
    max_processes: int = 64,
    max_file_mb: int = 16,
    max_output_bytes: int = 1_000_000,
    max_disk_mb: int = 64,
    env: dict[str, str] | None = None,
    ro_paths: tuple[str, ...] | list[str] = (),
    mode: str | None = None,
) -> SandboxResult:
    """Run the Python program ``source`` in the sandbox and return what it did.

    The program runs as ``main.py`` in its own empty temporary directory (its cwd, ``HOME``
    and ``TMPDIR``), with ``stdin`` on its standard input and only ``PATH``, ``LANG``,
    ``HOME``, ``TMPDIR`` and ``env`` in its environment. Limits: ``timeout`` wall seconds for
    the whole run, ``cpu_seconds`` of CPU, ``memory_mb`` of address space per process (and,
    with a cgroup, of memory for the whole run), ``max_processes`` processes/threads,
    ``max_file_mb`` per written file, ``max_disk_mb`` in its temporary directory (private-root
    modes), ``max_output_bytes`` per output stream. ``ro_paths`` are host paths made visible
    read-only at the same place (private-root modes; elsewhere the host filesystem is visible
    as the program's uid allows). ``mode`` picks a weaker isolation mode than the strongest
    available one (see :data:`MODES`); ``None`` uses the strongest.

    Raises :class:`~infscale.errors.ConfigError` for bad arguments and :class:`SandboxError`
    when the sandbox itself fails; whatever the program does is reported in the result.
    """
    _validate(
        timeout=timeout, memory_mb=memory_mb, cpu_seconds=cpu_seconds, max_processes=max_processes,
        max_file_mb=max_file_mb, max_output_bytes=max_output_bytes, max_disk_mb=max_disk_mb,
        env=env, mode=mode, ro_paths=tuple(ro_paths),
    )
    return _run(
        _probe_for(mode), source, stdin=stdin, timeout=float(timeout), memory_mb=int(memory_mb),
        cpu_seconds=max(1, int(cpu_seconds)), max_processes=int(max_processes), max_file_mb=int(max_file_mb),
        max_output_bytes=int(max_output_bytes), disk_mb=int(max_disk_mb), env=env,
        ro_paths=tuple(os.path.realpath(p) for p in ro_paths),
    )


def _marker() -> str:
    return "__infscale_tests_" + os.urandom(8).hex()


def _strip_marker(res: SandboxResult, marker: str) -> list[str]:
    """Remove the marker lines from ``res.stdout``; return their payloads in order."""
    kept, payloads = [], []
    for line in res.stdout.splitlines(keepends=True):
        if line.startswith(marker):
            payloads.append(line[len(marker):].strip())
        else:
            kept.append(line)
    res.stdout = "".join(kept)
    return payloads


def run_tests(
    solution_code: str,
    test_code: str,
    entry_point: str | None = None,
    *,
    timeout: float = 10.0,
    **limits: Any,
) -> SandboxResult:
    """Run a solution against HumanEval/MBPP-style test code; ``result.passed`` says if it passed.

    The program executes the solution, then the test code, then ``check(entry_point)`` when an
    entry point is given, all in one fresh namespace whose ``__name__`` is not ``"__main__"``
    (so a solution's ``if __name__ == "__main__":`` block does not run, as in HumanEval's own
    harness). A completion marker printed after the tests guards against solutions that exit
    early with status 0 (``sys.exit()``, ``os._exit(0)``): without it the run is an ``error``.
    The marker stops accidents, not a program that deliberately inspects the harness -- the
    sandbox protects the machine, not the score. ``limits`` go to :func:`run_code`.
    """
    from .errors import ConfigError

    if entry_point is not None and not entry_point.isidentifier():
        raise ConfigError("entry_point", f"{entry_point!r} is not a Python identifier", "a function name")
    marker = _marker()
    program = (
        "import sys as _sys\n"
        "_ns = {'__name__': '__solution__', '__builtins__': __builtins__}\n"
        f"exec(compile({solution_code!r}, 'solution.py', 'exec'), _ns)\n"
        f"exec(compile({test_code!r}, 'tests.py', 'exec'), _ns)\n"
        + (f"exec(compile('check({entry_point})', 'check.py', 'exec'), _ns)\n" if entry_point else "")
        + f"_sys.stdout.flush()\nprint({marker!r}, flush=True)\n"
    )
    res = run_code(program, timeout=timeout, **limits)
    finished = bool(_strip_marker(res, marker))
    if res.passed and not finished:
        res.status = "error"
        res.notes.append("the program exited before the tests finished")
    return res


def run_test_list(
    solution_code: str, tests: list[str], *, setup_code: str = "", timeout: float = 10.0, **limits: Any
) -> tuple[SandboxResult, list[bool]]:
    """Run each test (an MBPP-style ``assert`` string) separately; one outcome per test, in order.

    The solution and ``setup_code`` run once; each test then runs in the same namespace and
    passes when it raises nothing. Tests that did not get to run (the solution failed, the run
    timed out or crashed) count as failed. Like :func:`run_tests`, this defends against
    accidental early exits, not against a program that inspects the harness.
    """
    marker = _marker()
    program = (
        "import sys as _sys\n"
        "_ns = {'__name__': '__solution__', '__builtins__': __builtins__}\n"
        f"exec(compile({solution_code!r}, 'solution.py', 'exec'), _ns)\n"
        f"exec(compile({setup_code!r}, 'setup.py', 'exec'), _ns)\n"
        f"for _i, _t in enumerate({list(tests)!r}):\n"
        "    try:\n"
        "        exec(compile(_t, f'test_{_i}.py', 'exec'), _ns)\n"
        "        _ok = 1\n"
        "    except Exception as _e:\n"
        "        print(f'test {_i} failed: {type(_e).__name__}: {_e}', file=_sys.stderr)\n"
        "        _ok = 0\n"
        "    _sys.stdout.flush()\n"
        f"    print({marker!r}, _i, _ok, flush=True)\n"
    )
    res = run_code(program, timeout=timeout, **limits)
    outcomes = [False] * len(tests)
    for payload in _strip_marker(res, marker):
        parts = payload.split()
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) < len(tests):
            outcomes[int(parts[0])] = parts[1] == "1"
    return res, outcomes

