"""Per-run cgroups (v1): one memory limit, one task limit and a CPU quota for a whole process tree.

Rlimits bind per process; a cgroup binds the run as a whole, so 64 processes of 512 MB each
cannot exhaust the machine and a fork bomb gets at most its CPU quota. Created below the
caller's own cgroups when the caller may write them (root with v1 ``memory`` and ``pids``
hierarchies mounted); ``cpu`` is used when it is there too. cgroup v2 is not supported yet.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("infscale.sandbox")

#: CFS period of the CPU quota, in microseconds; the quota is ``cpus`` periods.
_CPU_PERIOD_US = 100_000


def _is_root() -> bool:
    return os.geteuid() == 0


class Cgroup:
    """A memory+pids (+cpu) cgroup for one run."""

    def __init__(self, dirs: dict[str, str]):
        self.dirs = dirs

    @staticmethod
    def _mounts() -> dict[str, str]:
        mounts: dict[str, str] = {}
        with open("/proc/self/mountinfo") as f:
            for line in f:
                pre, _, post = line.partition(" - ")
                fstype, _, options = post.split()[:3]
                if fstype != "cgroup":
                    continue
                for controller in ("memory", "pids", "cpu"):
                    if controller in options.split(","):
                        mounts.setdefault(controller, pre.split()[4])
        return mounts

    @classmethod
    def create(cls, memory_bytes: int, tasks: int, cpus: float | None = 1.0) -> Cgroup | None:
        """A new cgroup, or ``None`` when this machine has no writable v1 memory+pids.

        ``cpus`` is the CPU quota in CPUs (``None``: no quota); it is set only where the ``cpu``
        controller is mounted and writable, which :attr:`cpu_quota` tells.
        """
        if not _is_root():
            return None
        group = cls({})
        try:
            mounts = cls._mounts()
            if not {"memory", "pids"} <= set(mounts):
                return None
            own: dict[str, str] = {}
            with open("/proc/self/cgroup") as f:
                for line in f:
                    _, controllers, path = line.rstrip("\n").split(":", 2)
                    for c in controllers.split(","):
                        own[c] = path
            name = f"infscale-sbx-{os.getpid()}-{os.urandom(4).hex()}"
            for c in ("memory", "pids"):
                d = os.path.join(mounts[c], own.get(c, "/").lstrip("/"), name)
                os.mkdir(d)
                group.dirs[c] = d
            group._write("memory", "memory.limit_in_bytes", memory_bytes)
            try:
                group._write("memory", "memory.memsw.limit_in_bytes", memory_bytes)
            except OSError:
                pass  # no swap accounting on this kernel
            group._write("pids", "pids.max", tasks)
        except OSError as exc:
            log.debug("no cgroup for the sandbox: %s", exc)
            group.remove()
            return None
        if cpus is not None and "cpu" in mounts:
            d = os.path.join(mounts["cpu"], own.get("cpu", "/").lstrip("/"), name)
            try:
                os.mkdir(d)
                group.dirs["cpu"] = d
                group._write("cpu", "cpu.cfs_period_us", _CPU_PERIOD_US)
                group._write("cpu", "cpu.cfs_quota_us", max(1000, int(cpus * _CPU_PERIOD_US)))
            except OSError as exc:
                log.debug("no cpu cgroup for the sandbox: %s", exc)
                if "cpu" in group.dirs:
                    try:
                        os.rmdir(group.dirs.pop("cpu"))
                    except OSError:
                        pass
        return group

    @property
    def cpu_quota(self) -> bool:
        """Whether the run's CPU time is bounded by a quota."""
        return "cpu" in self.dirs

    def _write(self, controller: str, name: str, value: int) -> None:
        with open(os.path.join(self.dirs[controller], name), "w") as f:
            f.write(str(value))

    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a process writes ``0`` to, to join the run's cgroups."""
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
        """Remove the cgroup's directories (retrying while the last tasks exit)."""
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
