"""Isolation: the command line and init config that put one run in its mode.

``namespaces`` runs the init under bubblewrap (``bwrap``): new user (when not root), pid,
network, mount, IPC, UTS and cgroup namespaces, a private root that is read-only except for a
size-limited ``/tmp`` and ``/dev/shm``, a fresh ``/proc`` and a minimal ``/dev``, a new session
(no terminal to inject input into), no nested user namespaces (``--disable-userns`` where
bubblewrap makes the user namespace; the seccomp filter everywhere), and the init as pid 1,
killed with its parent (``--die-with-parent``). As root, bubblewrap runs without a user
namespace and keeps only the capabilities the init needs to hand the program a uid of its own;
the init itself stays root, out of the program's reach. As another user, bubblewrap makes the
user namespace and the program keeps the caller's uid without any capability.

``uid`` and ``rlimits`` run the init directly (no bubblewrap): a uid of the run's own in a
``0700`` directory, or only the caller's uid and the rlimits.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from .cgroup import Cgroup

#: Isolation modes, strongest first.
MODES = ("namespaces", "uid", "rlimits")

MIB = 1 << 20
_NOFILE = 256  # open files per process
_INIT_GRACE = 1.0  # the init's own deadline runs this long after the caller's
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# What the init keeps as root under bubblewrap: become the program's uid, hand it /tmp, sweep.
_ROOT_INIT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL")
_BOX = "/.sandbox"  # where the run's directory (init, config, program) appears, read-only
_INIT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "init.py")


@dataclass(frozen=True)
class Interpreter:
    path: str  # real path of the python binary
    prefixes: tuple[str, ...]  # directories it needs (base_prefix, base_exec_prefix)


@dataclass(frozen=True)
class ModeProbe:
    """A mode that was verified to work, with the interpreter and cgroup use it was verified with."""

    mode: str
    interpreter: Interpreter
    cgroup: bool
    seccomp: bool
    facts: dict[str, Any]


def is_root() -> bool:
    return os.geteuid() == 0


@functools.lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    """The bubblewrap executable, or ``None`` when it is not installed."""
    found = shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin:" + os.environ.get("PATH", ""))
    return found if found and os.access(found, os.X_OK) else None


@functools.lru_cache(maxsize=1)
def libseccomp_available() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def init_script() -> bytes:
    """The init (``init.py`` of this package), copied into every run's directory."""
    with open(_INIT_FILE, "rb") as f:
        return f.read()


@functools.lru_cache(maxsize=1)
def interpreters() -> tuple[Interpreter, ...]:
    """Python interpreters the program may run under: ours first, then the system's."""
    own = Interpreter(
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
            found.append(Interpreter(path, tuple(dict.fromkeys(os.path.realpath(p) for p in lines))))
    return tuple(found)


def reachable_by_anyone(interp: Interpreter) -> bool:
    """Whether any uid may run ``interp``: world-executable binary, world-searchable parents."""
    paths = [interp.path, *interp.prefixes]
    for path in paths:
        while path not in ("/", ""):
            mode = os.stat(path).st_mode
            if not mode & stat.S_IXOTH or (path in paths and not mode & stat.S_IROTH):
                return False
            path = os.path.dirname(path)
    return True


def minimal_env(home: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}
    env.update(extra or {})
    return env


def _bwrap_args(
    probe: ModeProbe, base: str, ro_paths: tuple[str, ...], disk_mb: int, shm_mb: int
) -> list[str]:
    """bubblewrap's arguments for a run whose directory is ``base``."""
    args = [bwrap_path() or "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--die-with-parent", "--new-session", "--as-pid-1"]
    if is_root():  # no user namespace: the init is root with a few capabilities, the program a uid
        args += ["--cap-drop", "ALL"]
        for cap in _ROOT_INIT_CAPS:
            args += ["--cap-add", cap]
    else:  # bubblewrap makes the user namespace; nothing inside may make another one
        args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    args += ["--hostname", "sandbox"]
    binds = []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            binds.append(d)
    covered = lambda p: any(p == b or p.startswith(b.rstrip("/") + "/") for b in binds)  # noqa: E731
    interp = probe.interpreter
    for p in (*interp.prefixes, os.path.dirname(interp.path)):
        if not covered(os.path.realpath(p)):
            binds.append(os.path.realpath(p))
    made = set()
    for b in binds:
        # Parents bubblewrap would create with the host's modes (e.g. /root, 0700) must let the
        # program's uid through to the interpreter.
        parent = os.path.dirname(b)
        chain = []
        while parent not in ("/", "") and not covered(parent) and parent not in made:
            chain.append(parent)
            parent = os.path.dirname(parent)
        for d in reversed(chain):
            args += ["--perms", "0755", "--dir", d]
            made.add(d)
        args += ["--ro-bind", b, b]
    args += ["--dev", "/dev", "--perms", "1777", "--size", str(shm_mb * MIB), "--tmpfs", "/dev/shm"]
    args += ["--proc", "/proc"]
    args += ["--perms", "0700", "--size", str(disk_mb * MIB), "--tmpfs", "/tmp"]
    args += ["--ro-bind", base, _BOX]
    for p in sorted(ro_paths):
        args += ["--ro-bind", p, p]
    args += ["--remount-ro", "/", "--chdir", "/", "--clearenv", "--"]
    return args


def plan(
    probe: ModeProbe, base: str, *, uid: int | None, cgroup: Cgroup | None, ro_paths: tuple[str, ...],
    memory_mb: int, cpu_seconds: int, max_processes: int, max_file_mb: int, disk_mb: int,
    timeout: float, env: dict[str, str] | None, status_fd: int,
) -> tuple[list[str], dict[str, Any]]:
    """The command line and init config of one run in ``probe.mode``; ``base`` is its directory."""
    boxed = probe.mode == "namespaces"
    cwd = "/tmp" if boxed else os.path.join(base, "work")
    rlimits = {
        "RLIMIT_AS": [memory_mb * MIB] * 2,
        "RLIMIT_CPU": [int(cpu_seconds), int(cpu_seconds) + 1],
        "RLIMIT_NPROC": [max_processes] * 2,
        "RLIMIT_FSIZE": [max_file_mb * MIB] * 2,
        "RLIMIT_CORE": [0, 0],
        "RLIMIT_NOFILE": [_NOFILE] * 2,
    }
    procs = cgroup.procs_files() if cgroup is not None else []
    cfg = {
        "status_fd": status_fd,
        "cgroup_procs": [] if boxed else procs,  # under bubblewrap the wrapper below joins them
        "keyring": True,
        "seccomp": probe.seccomp,
        "copy_source": [f"{_BOX}/main.py", "/tmp/main.py"] if boxed else None,
        "cwd": cwd,
        "setuid": [uid, uid] if uid is not None and probe.mode != "rlimits" else None,
        "rlimits": rlimits,
        "timeout": timeout + _INIT_GRACE,
        "argv": [probe.interpreter.path, "-I", "-S", "-B", os.path.join(cwd, "main.py")],
        "env": minimal_env(cwd, env),
    }
    init_argv = ["-I", "-S", "-B"]
    if boxed:
        cmd = _bwrap_args(probe, base, ro_paths, disk_mb, max_file_mb)
        cmd += [probe.interpreter.path, *init_argv, f"{_BOX}/init.py", f"{_BOX}/init.json"]
        if procs:  # join the cgroups before bubblewrap forks anything
            joins = " && ".join(f'echo 0 > "${i + 1}"' for i in range(len(procs)))
            cmd = ["/bin/sh", "-c", f'{joins} && shift {len(procs)} && exec "$@"', "sh", *procs, *cmd]
    else:
        cmd = [os.path.realpath(sys.executable), *init_argv, os.path.join(base, "init.py"), os.path.join(base, "init.json")]
    return cmd, cfg


def prepare_dir(probe: ModeProbe, source: str, uid: int | None) -> str:
    """The run's host directory: init script, program, and the work dir of the fallback modes."""
    import tempfile

    base = tempfile.mkdtemp(prefix="infscale-sbx-")
    with open(os.path.join(base, "init.py"), "wb") as f:
        f.write(init_script())
    with open(os.path.join(base, "main.py"), "w", encoding="utf-8") as f:
        f.write(source)
    if probe.mode != "namespaces":
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        shutil.copy(os.path.join(base, "main.py"), os.path.join(work, "main.py"))
        if uid is not None and probe.mode == "uid":
            os.chmod(base, 0o711)  # the uid may pass through to its work dir, nothing else
            for p in (work, os.path.join(work, "main.py")):
                os.chown(p, uid, uid)
    return base
