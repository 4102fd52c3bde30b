"""The sandbox against hostile programs: each is contained and leaves the machine unaffected.

Every hostile test checks two things: what the program tried did not happen (or was cut
short with the right status), and the machine is as it was: the test process is alive, no
process of the run survives (checked by the run's own uid, by markers in command lines, and
by counting the run's own processes, found by a marker in their environment -- never the
machine's, which other work moves), the host can still fork, and files outside the sandbox are
untouched.

The battery runs in the strongest mode this machine supports (see
``sandbox_capabilities()``). Where a check needs a protection the machine does not offer, that
test is skipped with the reason -- never run unprotected -- and the rest still run. Hostile
runs use 2-second timeouts so the whole file stays well under a minute on 2 cores.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from infscale.errors import ConfigError
from infscale.sandbox import (
    MODES,
    STATUSES,
    run_code,
    run_test_list,
    run_tests,
    sandbox_capabilities,
)

CAPS = sandbox_capabilities()  # INFSCALE_SANDBOX_MODE=uid (say) runs the battery in a fallback
HERE = f"in sandbox mode {CAPS.mode}"
T = 2.0  # timeout of hostile runs
SLACK = 1.5  # how late a timeout may be reported (start-up, kill, sweep)

needs_process_limit = pytest.mark.skipif(
    not CAPS.process_limit,
    reason=f"the process-count limit does not bind {HERE} (root, no own uid, no pids cgroup)",
)
needs_network_isolation = pytest.mark.skipif(
    not CAPS.network_isolated, reason=f"no network namespace {HERE}"
)
needs_private_root = pytest.mark.skipif(not CAPS.private_root, reason=f"no private read-only root {HERE}")
needs_signal_isolation = pytest.mark.skipif(
    not (CAPS.pid_isolated or CAPS.own_uid),
    reason=f"the program runs as the caller's user without a pid namespace {HERE}: it could signal us",
)
needs_unprivileged = pytest.mark.skipif(not CAPS.unprivileged, reason=f"the program runs as root {HERE}")
needs_seccomp = pytest.mark.skipif(not CAPS.seccomp, reason=f"no seccomp filter {HERE} (libseccomp missing)")
x86_64_only = pytest.mark.skipif(os.uname().machine != "x86_64", reason="system call numbers are x86_64's")
needs_fs_protection = pytest.mark.skipif(
    not (CAPS.private_root or CAPS.own_uid),
    reason=f"the program runs as the caller's user and sees the host filesystem {HERE}",
)


# ---------------------------------------------------------------------------------------------
# Looking at the host.


def _proc_entries():
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def processes_of_uid(uid: int) -> list[int]:
    found = []
    for pid in _proc_entries():
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid and _state(pid) not in ("Z", "X", None):
                found.append(pid)
        except OSError:
            pass
    return found


def processes_with(marker: str) -> list[int]:
    """Processes whose command line contains ``marker``."""
    found = []
    for pid in _proc_entries():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def processes_with_env(marker: str) -> tuple[int, int]:
    """``(live, zombies)``: the processes whose environment holds ``marker`` -- exactly the
    processes of one sandboxed run, in every mode (the run passes it in ``env``). Zombies keep
    no readable environment; they are counted by the run's uid instead (:func:`zombies_of_uid`)."""
    live = zombies = 0
    needle = marker.encode()
    for pid in _proc_entries():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle not in f.read():
                    continue
        except OSError:
            continue
        if _state(pid) == "Z":
            zombies += 1
        elif _state(pid) not in (None, "X"):
            live += 1
    return live, zombies


def zombies_of_uid(uid: int) -> int:
    found = 0
    for pid in _proc_entries():
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid and _state(pid) == "Z":
                found += 1
        except OSError:
            pass
    return found


class RunWatcher:
    """Samples, in a thread, how many processes of one run (found by an environment marker)
    are alive, and keeps the maximum: the run's own count, not the machine's (which other work
    on a shared machine moves)."""

    def __init__(self) -> None:
        self.marker = f"INFSCALE_TEST_RUN_{os.getpid()}_{time.time_ns()}"
        self.env = {"INFSCALE_TEST_RUN": self.marker}
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, processes_with_env(self.marker)[0])
            self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self) -> "RunWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def left(self) -> tuple[int, int]:
        return processes_with_env(self.marker)


def settles(check, seconds: float = 3.0) -> bool:
    """Whether ``check()`` becomes true within ``seconds`` (other machine activity settles)."""
    deadline = time.monotonic() + seconds
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def host_can_fork() -> bool:
    return subprocess.run(["true"], timeout=10).returncode == 0


def assert_contained(res, marker: str | None = None) -> None:
    """The run is over: nothing of it survives, and the host still works."""
    assert res.status in STATUSES
    assert res.contained, res.notes
    if res.uid is not None:
        assert processes_of_uid(res.uid) == []
    if marker is not None:
        assert settles(lambda: processes_with(marker) == [])
    assert host_can_fork()


@pytest.fixture(autouse=True)
def _no_children_left():
    """After every test: no child process of ours is left (the runs reap what they start)."""
    yield
    me = os.getpid()

    def no_children() -> bool:
        for pid in _proc_entries():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] not in ("Z", "X"):
                return False
        return True

    assert settles(no_children)


@pytest.fixture
def host_dir():
    """A directory under /tmp that belongs to the test (root-owned and 0755 when we are root)."""
    d = tempfile.mkdtemp(prefix="infscale-test-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    subprocess.run(["rm", "-rf", d], check=False)


# ---------------------------------------------------------------------------------------------
# Positive behaviour.


def test_capabilities_describe_the_active_protection():
    forced = os.environ.get("INFSCALE_SANDBOX_MODE")
    assert CAPS.mode in CAPS.available and set(CAPS.available) <= set(MODES)
    assert CAPS.mode == (forced or CAPS.available[0])
    assert CAPS.summary().startswith(f"sandbox mode {CAPS.mode}:")
    assert sandbox_capabilities() is CAPS  # probed once, cached
    if CAPS.bwrap and not forced:
        assert CAPS.mode == "namespaces", CAPS  # what CI with bubblewrap installed should get
    from infscale.sandbox.isolation import libseccomp_available

    if libseccomp_available():  # the filter loads wherever libseccomp does: no silent fallback
        assert CAPS.seccomp, CAPS


def test_normal_program_prints_and_exits_ok():
    res = run_code("print('hello', 6 * 7)")
    assert res.passed and res.status == "ok" and res.returncode == 0
    assert res.stdout == "hello 42\n" and res.stderr == ""
    assert res.mode == CAPS.mode and res.contained


def test_stdin_passes_through():
    program = "import sys\ndata = sys.stdin.read()\nprint(len(data), data.splitlines()[-1])"
    res = run_code(program, stdin="a\nb\nlast line\n")
    assert res.stdout == "14 last line\n"


def test_standard_library_imports_work():
    program = """
import bisect, collections, dataclasses, datetime, decimal, fractions, functools, hashlib, heapq
import itertools, json, math, random, re, sqlite3, statistics, string, typing, unittest
import multiprocessing
with multiprocessing.Pool(2) as pool:
    print(pool.map(abs, [-1, -2, 3]), math.comb(5, 2), fractions.Fraction(1, 3) * 3)
"""
    res = run_code(program)
    assert res.passed, res.stderr
    assert res.stdout == "[1, 2, 3] 10 1\n"


def test_failing_assert_is_an_error_and_exit_codes_pass_through():
    res = run_code("assert 1 + 1 == 3, 'arithmetic'")
    assert res.status == "error" and res.returncode == 1
    assert "AssertionError: arithmetic" in res.stderr
    res = run_code("import sys; sys.exit(3)")
    assert (res.status, res.returncode) == ("error", 3)


def test_the_temp_dir_is_cwd_home_and_tmpdir_and_is_writable():
    program = """
import os, tempfile
with open("out.txt", "w") as f:
    f.write("x" * 1000)
with tempfile.NamedTemporaryFile(dir=None) as t:
    t.write(b"y")
print(os.getcwd() == os.environ["HOME"] == os.environ["TMPDIR"], os.path.getsize("out.txt"), os.listdir("."))
"""
    res = run_code(program)
    assert res.passed, res.stderr
    assert res.stdout.startswith("True 1000 ")
    assert sorted(eval(res.stdout.split(" ", 2)[2])) == ["main.py", "out.txt"]


def test_env_is_minimal_plus_what_the_caller_passes():
    res = run_code("import os, json; print(json.dumps(dict(os.environ)))", env={"ANSWER": "42"})
    env = json.loads(res.stdout)
    assert set(env) == {"PATH", "LANG", "HOME", "TMPDIR", "ANSWER"} and env["ANSWER"] == "42"


def test_run_tests_humaneval_style():
    solution = "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    raise SystemExit('main ran')\n"
    tests = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
    res = run_tests(solution, tests, "add", timeout=5)
    assert res.passed, res.stderr
    assert "__infscale" not in res.stdout

    wrong = run_tests("def add(a, b):\n    return a - b\n", tests, "add", timeout=5)
    assert not wrong.passed and wrong.status == "error" and "AssertionError" in wrong.stderr

    # A solution that exits with 0 before the tests ran does not pass.
    early = run_tests("import sys\ndef add(a, b):\n    return 0\nsys.exit(0)\n", tests, "add", timeout=5)
    assert not early.passed and early.status == "error"
    assert "exited before the tests finished" in " ".join(early.notes)

    hang = run_tests("def add(a, b):\n    while True: pass\n", tests, "add", timeout=1)
    assert hang.status == "timeout" and not hang.passed


def test_run_test_list_reports_each_assert():
    solution = "def sq(x):\n    return x * x if x < 3 else -1\n"
    tests = ["assert sq(1) == 1", "assert sq(2) == 4", "assert sq(3) == 9", "assert sq(undefined) == 0"]
    res, outcomes = run_test_list(solution, tests, timeout=5)
    assert outcomes == [True, True, False, False]
    assert "test 2 failed: AssertionError" in res.stderr and "NameError" in res.stderr
    _, outcomes = run_test_list("this is not python", tests, timeout=5)
    assert outcomes == [False] * 4


def test_bad_arguments_are_config_errors():
    for kwargs, param in [
        ({"timeout": 0}, "timeout"),
        ({"memory_mb": -1}, "memory_mb"),
        ({"max_processes": True}, "max_processes"),
        ({"env": {"A": 1}}, "env"),
        ({"mode": "docker"}, "mode"),
        ({"ro_paths": ["relative/path"]}, "ro_paths"),
    ]:
        with pytest.raises(ConfigError, match=param):
            run_code("pass", **kwargs)
    with pytest.raises(ConfigError, match="entry_point"):
        run_tests("pass", "pass", "not an identifier")


def test_the_init_script_is_self_contained():
    """The init runs as a stand-alone script: it imports only the standard library."""
    from infscale.sandbox import isolation

    tree = ast.parse(isolation.init_script().decode())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the init must not import relative to the package"
            imported.add(node.module.split(".")[0])
    assert imported <= sys.stdlib_module_names, imported - sys.stdlib_module_names
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            defined.add(node.name)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert used - defined == set()


@pytest.mark.parametrize("mode", CAPS.available)
def test_every_available_mode_runs_limits_and_hides_secrets(mode, monkeypatch):
    """The fallbacks keep their basic promises too: output, env, timeout, output cap."""
    monkeypatch.setenv("INFSCALE_SECRET", "s3cr3t-fallback")
    res = run_code("import os; print(os.environ.get('INFSCALE_SECRET'), 'ran')", mode=mode)
    assert (res.status, res.stdout, res.mode) == ("ok", "None ran\n", mode)
    res = run_code("while True: pass", mode=mode, timeout=1)
    assert res.status == "timeout" and res.seconds < 1 + SLACK
    assert_contained(res)
    res = run_code("while True: print('x' * 10000)", mode=mode, max_output_bytes=50_000)
    assert res.status == "output_limit" and len(res.stdout) == 50_000
    assert_contained(res)


def test_runs_leave_no_temp_dirs_or_cgroups(monkeypatch):
    base = tempfile.mkdtemp(prefix="infscale-test-tmp-", dir="/tmp")
    os.chmod(base, 0o755)
    monkeypatch.setattr(tempfile, "tempdir", base)
    try:
        run_code("print(1)")
        run_code("while True: pass", timeout=0.5)
        assert os.listdir(base) == []
    finally:
        os.rmdir(base)
    leftovers = []
    for hierarchy in ("memory", "pids", "cpu"):
        for dirpath, dirnames, _ in os.walk(f"/sys/fs/cgroup/{hierarchy}"):
            leftovers += [d for d in dirnames if d.startswith(f"infscale-sbx-{os.getpid()}-")]
    assert leftovers == []


# ---------------------------------------------------------------------------------------------
# Hostile programs.

FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


BOMB_LIMIT = 16  # max_processes of the fork-bomb runs


def assert_bomb_bounded_and_gone(res, watch: RunWatcher) -> None:
    """The run's own processes stayed within its process limit while it ran (the init and
    bubblewrap carry the marker too, hence the slack of 3), and none of them -- live or
    zombie -- is left after it: counted by the run's marker and uid, never host-wide."""
    assert watch.samples >= 5, watch.samples  # the watcher really looked while the bomb ran
    assert 1 <= watch.peak <= BOMB_LIMIT + 3, watch.peak
    assert settles(lambda: watch.left() == (0, 0)), watch.left()
    if res.uid is not None:  # reaped by the run's init, not left to the host's pid 1
        assert settles(lambda: zombies_of_uid(res.uid) == 0)


@needs_process_limit
def test_fork_bomb():
    with RunWatcher() as watch:
        res = run_code(FORK_BOMB, timeout=T, max_processes=BOMB_LIMIT, env=watch.env)
    assert res.status == "timeout" and res.seconds < T + SLACK
    assert_contained(res)
    assert_bomb_bounded_and_gone(res, watch)


@needs_process_limit
def test_shell_fork_bomb_via_exec():
    with RunWatcher() as watch:
        res = run_code("import os\nos.execv('/bin/sh', ['sh', '-c', 'f(){ f|f& }; f; sleep 100'])", timeout=T,
                       max_processes=BOMB_LIMIT, env=watch.env)
    # Either the bomb runs until the timeout or sh gives up ("Cannot fork"); both are contained.
    assert res.status in ("timeout", "error") and res.seconds < T + SLACK
    assert_contained(res)
    assert_bomb_bounded_and_gone(res, watch)


def test_memory_bomb_single_allocation():
    res = run_code("x = bytearray(10 ** 11)", memory_mb=256, timeout=T)
    assert res.status == "memory" and "MemoryError" in res.stderr
    assert_contained(res)


def test_memory_bomb_growing():
    res = run_code("chunks = []\nwhile True:\n    chunks.append(b'x' * 10 ** 7)", memory_mb=256, timeout=5)
    assert res.status == "memory" and res.seconds < 5
    assert_contained(res)


def test_memory_bomb_across_processes():
    """Six children of 150 MB each: with a cgroup the run as a whole gets ~the memory limit."""
    program = """
import os
pids = []
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (150 * 2 ** 20)  # touched, unlike bytearray(n)
        import time; time.sleep(1)
        os._exit(0)
    pids.append(pid)
killed = sum(1 for pid in pids if os.WIFSIGNALED(os.waitpid(pid, 0)[1]))
print("killed", killed)
"""
    res = run_code(program, memory_mb=256, timeout=10)
    assert_contained(res)
    assert res.status == "ok", res.stderr
    if CAPS.cgroup:  # 900 MB asked, about 340 MB allowed for the whole run
        assert int(res.stdout.split()[1]) >= 1


def test_infinite_loop_is_killed_at_the_timeout():
    res = run_code("while True: pass", timeout=T)
    assert res.status == "timeout" and T <= res.seconds < T + SLACK
    assert_contained(res)


def test_cpu_burn_in_threads_hits_the_cpu_limit():
    program = """
import threading
def burn():
    while True:
        pass
for _ in range(4):
    threading.Thread(target=burn).start()
"""
    res = run_code(program, cpu_seconds=1, timeout=10)  # ends long before the wall timeout
    assert res.status == "timeout" and "CPU-seconds limit" in res.notes and res.seconds < 8
    assert_contained(res)


@needs_network_isolation
def test_tcp_connection_to_a_host_listener_fails():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        program = f"""
import socket
s = socket.socket()
s.settimeout(1)
try:
    s.connect(("127.0.0.1", {port}))
    print("connected")
except OSError as e:
    print("refused", e.errno)
"""
        res = run_code(program, timeout=T)
        assert res.stdout.startswith("refused"), res.stdout + res.stderr
        listener.settimeout(0.3)
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()
    assert_contained(res)


@needs_network_isolation
def test_udp_and_dns_fail():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    try:
        program = f"""
import socket
results = []
for what, action in [
    ("dns", lambda: socket.getaddrinfo("example.com", 80)),
    ("udp-host", lambda: socket.socket(type=socket.SOCK_DGRAM).sendto(b"leak", ("127.0.0.1", {port}))),
    ("udp-out", lambda: socket.socket(type=socket.SOCK_DGRAM).sendto(b"leak", ("8.8.8.8", 53))),
]:
    try:
        action()
        results.append(what + ":sent")
    except OSError:
        results.append(what + ":failed")
print(" ".join(results))
"""
        res = run_code(program, timeout=T)
        # bubblewrap brings the namespace's own loopback up: a datagram to 127.0.0.1 is sent, into
        # the sandbox's loopback, where nobody listens; the host's receiver (below) gets nothing.
        out = res.stdout.split()
        assert out[0] == "dns:failed" and out[2] == "udp-out:failed", res.stdout + res.stderr
        assert out[1] in ("udp-host:failed", "udp-host:sent"), res.stdout
        receiver.settimeout(0.3)
        with pytest.raises(socket.timeout):
            receiver.recvfrom(100)
    finally:
        receiver.close()
    assert_contained(res)


@needs_fs_protection
def test_writing_outside_the_temp_dir(host_dir):
    target = os.path.join(host_dir, "escaped.txt")
    program = f"""
for path in [{target!r}, "/escaped.txt", "/usr/escaped.txt", "/etc/escaped.txt"]:
    try:
        open(path, "w").write("x")
        print("wrote", path)
    except OSError as e:
        print("failed", path, type(e).__name__)
"""
    res = run_code(program, timeout=T)
    assert "wrote" not in res.stdout
    for path in (target, "/escaped.txt", "/usr/escaped.txt", "/etc/escaped.txt"):
        assert not os.path.exists(path)
    assert_contained(res)


@needs_private_root
def test_writing_to_world_writable_host_dirs(host_dir):
    os.chmod(host_dir, 0o1777)
    marker = f"infscale-escape-{os.getpid()}"
    targets = [os.path.join(host_dir, marker), f"/dev/shm/{marker}", f"/var/tmp/{marker}"]
    program = f"""
import os
for path in {targets!r}:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write("x")
    except OSError:
        pass
"""
    res = run_code(program, timeout=T)
    for path in targets:
        assert not os.path.exists(path)
    assert_contained(res)


def test_environment_secrets_are_not_inherited(monkeypatch):
    monkeypatch.setenv("INFSCALE_SECRET", "s3cr3t-value-7731")
    program = """
import os
print(dict(os.environ))
try:
    print(open("/proc/self/environ", "rb").read())
except OSError as e:
    print("no environ", e)
"""
    res = run_code(program, timeout=T)
    assert res.status == "ok" and "s3cr3t-value-7731" not in res.stdout + res.stderr
    assert_contained(res)


@needs_signal_isolation
def test_parent_environment_is_unreadable(monkeypatch):
    monkeypatch.setenv("INFSCALE_SECRET", "s3cr3t-value-8842")
    program = f"""
import os
for pid in {{os.getppid(), 1, {os.getpid()}, {os.getppid()}}}:
    try:
        print(pid, open(f"/proc/{{pid}}/environ", "rb").read())
    except OSError as e:
        print(pid, "unreadable", type(e).__name__)
"""
    res = run_code(program, timeout=T)
    assert "s3cr3t-value-8842" not in res.stdout + res.stderr
    assert_contained(res)


@needs_signal_isolation
def test_killing_the_parent_and_everyone():
    canary = subprocess.Popen(["sleep", "30"])
    try:
        program = f"""
import os, signal
for target in (os.getppid(), 1, {os.getpid()}, {canary.pid}, -1):
    try:
        os.kill(target, signal.SIGKILL)
    except OSError as e:
        print("kill", target, "failed", e.errno)
print("still here")
"""
        res = run_code(program, timeout=T)
        assert canary.poll() is None, "a host process was killed"
    finally:
        canary.kill()
        canary.wait()
    assert_contained(res)  # and we, the parent, are evidently alive


def test_huge_stdout_is_capped():
    program = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"
    res = run_code(program, max_output_bytes=100_000, timeout=T)
    assert res.status == "output_limit" and len(res.stdout) == 100_000 and res.seconds < T
    assert_contained(res)


def test_huge_stderr_is_capped():
    program = "import sys\nwhile True:\n    sys.stderr.write('e' * 65536)"
    res = run_code(program, max_output_bytes=100_000, timeout=T)
    assert res.status == "output_limit" and len(res.stderr) == 100_000 and res.seconds < T
    assert_contained(res)


def test_huge_file_write_hits_the_file_size_limit():
    program = """
import os
with open("big.bin", "wb") as f:
    for _ in range(64):
        f.write(b"x" * 2 ** 20)
"""
    res = run_code(program, max_file_mb=4, timeout=T)
    assert res.status == "error" and "File too large" in res.stderr
    assert_contained(res)


@needs_private_root
def test_filling_the_disk_stops_at_the_temp_dir_quota():
    program = """
i = 0
while True:
    with open(f"f{i}", "wb") as f:
        f.write(b"x" * 2 ** 20)
    i += 1
"""
    res = run_code(program, max_disk_mb=8, timeout=T)
    assert res.status == "error" and "No space left" in res.stderr
    assert_contained(res)


def test_too_many_open_files():
    program = """
files = []
try:
    while True:
        files.append(open("/dev/null"))
except OSError as e:
    print(len(files), e.errno)
    raise
"""
    res = run_code(program, timeout=T)
    assert res.status == "error" and "Too many open files" in res.stderr
    assert int(res.stdout.split()[0]) <= 256
    assert_contained(res)


def test_deep_recursion_is_an_error():
    res = run_code("def f(n):\n    return f(n + 1)\nf(0)", timeout=T)
    assert res.status == "error" and "RecursionError" in res.stderr
    assert_contained(res)


def test_c_stack_overflow_segfault_is_an_error():
    res = run_code("import json, sys\nsys.setrecursionlimit(10 ** 8)\njson.loads('[' * 10 ** 7)", timeout=5)
    assert res.status == "error" and res.returncode == -signal.SIGSEGV
    assert_contained(res)


def test_ctypes_segfault_is_an_error():
    res = run_code("import ctypes\nctypes.string_at(0)", timeout=T)
    assert res.status == "error" and res.returncode == -signal.SIGSEGV
    assert_contained(res)


def test_children_that_outlive_the_program_are_killed():
    """New sessions and double-forked daemons too: the init is the run's subreaper."""
    marker = f"{1000 + os.getpid() % 1000}.{time.time_ns() % 10**9}"
    program = f"""
import os, subprocess
subprocess.Popen(["sleep", "{marker}"], start_new_session=True)  # a new session
if os.fork() == 0:  # and a classic double-forked daemon
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "{marker}"])
    os._exit(0)
print("parent exits")
"""
    res = run_code(program, timeout=T)
    assert res.status == "ok" and res.seconds < T
    assert_contained(res, marker=marker)


@needs_fs_protection
def test_deleting_or_changing_a_file_outside(host_dir):
    canary = os.path.join(host_dir, "canary.txt")
    with open(canary, "w") as f:
        f.write("canary")
    os.chmod(canary, 0o644)
    program = f"""
import os, shutil
attempts = [
    ("remove", lambda: os.remove({canary!r})),
    ("truncate", lambda: open({canary!r}, "w").write("gone")),
    ("append", lambda: open({canary!r}, "a").write("more")),
    ("chmod", lambda: os.chmod({canary!r}, 0o777)),
    ("rename", lambda: os.rename({canary!r}, {canary!r} + ".moved")),
    ("rmtree", lambda: shutil.rmtree({host_dir!r})),
]
for name, attempt in attempts:
    try:
        attempt()
        print(name, "succeeded")
    except OSError as e:
        print(name, "failed", type(e).__name__)
"""
    res = run_code(program, ro_paths=[host_dir], timeout=T)
    assert "succeeded" not in res.stdout, res.stdout
    with open(canary) as f:
        assert f.read() == "canary"
    assert stat.S_IMODE(os.stat(canary).st_mode) == 0o644
    assert os.listdir(host_dir) == ["canary.txt"]
    assert_contained(res)


@needs_unprivileged
def test_privilege_escalation_attempts_fail(host_dir):
    canary = os.path.join(host_dir, "canary.txt")
    with open(canary, "w") as f:
        f.write("canary")
    program = f"""
import ctypes, os, json
out = {{}}
def attempt(name, fn):
    try:
        fn()
        out[name] = "succeeded"
    except OSError as e:
        out[name] = "failed"
attempt("setuid", lambda: os.setuid(12345))
attempt("setgid", lambda: os.setgid(12345))
attempt("setuid-chmod", lambda: os.chmod({canary!r}, 0o4755))
attempt("chown", lambda: os.chown({canary!r}, 12345, 12345))
libc = ctypes.CDLL(None, use_errno=True)
def checked(ret):
    if ret != 0:
        raise OSError(ctypes.get_errno(), "libc call failed")
attempt("sethostname", lambda: checked(libc.sethostname(b"x", 1)))
attempt("mount", lambda: checked(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)))
try:
    out["caps"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
except OSError:
    out["caps"] = "0000000000000000"
print(json.dumps(out))
"""
    res = run_code(program, ro_paths=[host_dir], timeout=T)
    out = json.loads(res.stdout)
    assert out.pop("caps") == "0000000000000000"
    assert set(out.values()) == {"failed"}, out
    assert stat.S_IMODE(os.stat(canary).st_mode) & 0o7000 == 0
    assert_contained(res)


@needs_unprivileged
def test_reading_etc_shadow_fails():
    res = run_code("print(open('/etc/shadow').read())", timeout=T)
    assert res.status == "error" and "root:" not in res.stdout
    assert ("PermissionError" in res.stderr) or ("FileNotFoundError" in res.stderr)
    assert_contained(res)


@needs_private_root
def test_host_files_are_not_visible():
    res = run_code(f"print(open({__file__!r}).read()[:20])", timeout=T)
    assert res.status == "error" and "FileNotFoundError" in res.stderr
    assert_contained(res)


def test_ignoring_signals_does_not_escape_the_timeout():
    program = """
import os, signal
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM, signal.SIGXCPU, signal.SIGUSR1):
    signal.signal(sig, signal.SIG_IGN)
try:
    os.kill(os.getppid(), signal.SIGALRM)  # poke the sandbox's init, which must ignore early alarms
except OSError:
    pass
while True:
    pass
"""
    res = run_code(program, timeout=T)
    assert res.status == "timeout" and T <= res.seconds < T + SLACK
    assert_contained(res)


def test_a_non_daemon_thread_keeping_the_process_alive():
    program = "import threading, time\nthreading.Thread(target=time.sleep, args=(600,)).start()"
    res = run_code(program, timeout=T)
    assert res.status == "timeout" and res.seconds < T + SLACK
    assert_contained(res)


def test_zombie_spawning():
    program = """
import os, time
for _ in range(40):
    if os.fork() == 0:
        os._exit(0)
time.sleep(0.3)  # never reaped: 40 zombies
print("zombies made")
"""
    with RunWatcher() as watch:
        res = run_code(program, timeout=T, env=watch.env)
    assert res.status == "ok", res.stderr
    assert_contained(res)
    assert settles(lambda: watch.left() == (0, 0)), watch.left()
    if res.uid is not None:  # the zombies went with the run, not to the host's pid 1
        assert settles(lambda: zombies_of_uid(res.uid) == 0)


def test_stdin_flood_that_the_program_ignores():
    res = run_code("print('not reading')", stdin="x" * (16 * 2 ** 20), timeout=T)
    assert res.status == "ok" and res.seconds < T
    res = run_code("import sys\nprint(len(sys.stdin.buffer.read()))", stdin="y" * (8 * 2 ** 20), timeout=10)
    assert res.stdout == f"{8 * 2 ** 20}\n"
    assert_contained(res)


def test_sleeping_past_the_timeout():
    res = run_code("import time\ntime.sleep(600)", timeout=T)
    assert res.status == "timeout" and T <= res.seconds < T + SLACK
    assert_contained(res)


@pytest.mark.skipif(not CAPS.own_uid, reason=f"runs share the caller's uid and its process limit {HERE}")
def test_a_fork_bomb_does_not_starve_a_concurrent_run():
    results = {}

    def bomb():
        results["bomb"] = run_code(FORK_BOMB, timeout=T)

    thread = threading.Thread(target=bomb)
    thread.start()
    time.sleep(0.5)  # the bomb is at its limit by now
    results["normal"] = run_code("import os\nprint(os.fork() > 0 or os._exit(0))", timeout=T)
    thread.join()
    assert results["normal"].status == "ok" and results["normal"].stdout == "True\n"
    assert results["bomb"].status == "timeout"
    assert_contained(results["bomb"])


# ---------------------------------------------------------------------------------------------
# What bubblewrap and the seccomp filter close: keyring, nested namespaces, the init, the kernel.

_KEY_SPEC_SESSION_KEYRING = -3


def _keyctl_syscall(*args):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(*args), ctypes.get_errno()


@x86_64_only
@needs_seccomp
@needs_unprivileged
def test_the_callers_session_keyring_is_out_of_reach():
    """A key the parent holds in its session keyring: not readable, not listed, not requestable."""
    import ctypes

    description = f"infscale-test-key-{os.getpid()}".encode()
    secret = b"k3yr1ng-s3cr3t-5521"
    key, err = _keyctl_syscall(248, b"user", description, secret, len(secret), ctypes.c_long(_KEY_SPEC_SESSION_KEYRING))
    if key < 0:
        pytest.skip(f"this machine's kernel refuses keys to the test process (errno {err})")
    try:
        program = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(256)
out = []
for name, args in [
    ("read", (250, 11, {key}, buf, 256)),                       # keyctl(KEYCTL_READ, key)
    ("session", (250, 0, ctypes.c_long(-3), 0)),                 # keyctl(GET_KEYRING_ID, session)
    ("request", (249, b"user", {description!r}, None, 0)),       # request_key
    ("add", (248, b"user", b"x", b"y", 1, ctypes.c_long(-3))),   # add_key
]:
    ret = libc.syscall(*args)
    out.append(f"{{name}}:{{'ok' if ret >= 0 else ctypes.get_errno()}}")
try:
    keys = open("/proc/keys").read()
except OSError:
    keys = ""
print(" ".join(out), buf.raw.rstrip(b"\\0"), {description!r}.decode() in keys)
"""
        res = run_code(program, timeout=T)
        assert res.status == "ok", res.stderr
        assert secret.decode() not in res.stdout + res.stderr
        calls, _, rest = res.stdout.partition(" b")
        assert calls.split() == ["read:1", "session:1", "request:1", "add:1"], res.stdout  # EPERM
        if CAPS.own_uid:  # under the caller's uid the key's user-view permission would list it
            assert res.stdout.rstrip().endswith("False"), res.stdout  # not listed in /proc/keys
    finally:
        _keyctl_syscall(250, 3, key)  # KEYCTL_REVOKE
    assert_contained(res)


@needs_seccomp
def test_no_nested_user_namespace():
    """Neither unshare(2), the unshare tool nor clone(CLONE_NEWUSER) gives the program a namespace."""
    program = """
import ctypes, os, subprocess
out = {}
libc = ctypes.CDLL(None, use_errno=True)
for name, flags in [("user", 0x10000000), ("user+net", 0x10000000 | 0x40000000), ("mount", 0x00020000)]:
    out[name] = "succeeded" if libc.unshare(flags) == 0 else "failed"
r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "id", "-u"], capture_output=True, text=True)
out["tool"] = "succeeded" if r.returncode == 0 else "failed"
if os.uname().machine == "x86_64":
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # clone(CLONE_NEWUSER | SIGCHLD)
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
    out["clone"] = "succeeded" if pid >= 0 else "failed"
print(sorted(set(out.values())), out)
"""
    res = run_code(program, timeout=5)
    assert res.status == "ok", res.stderr
    assert res.stdout.startswith("['failed']"), res.stdout
    assert_contained(res)


@needs_seccomp
@needs_unprivileged
def test_the_init_is_out_of_reach():
    """The program cannot ptrace its init, read its memory or change its limits."""
    program = """
import ctypes, os, resource
init = os.getppid()
out = {}
libc = ctypes.CDLL(None, use_errno=True)
out["ptrace"] = "failed" if libc.ptrace(16, init, None, None) != 0 else "succeeded"  # PTRACE_ATTACH
for what, fn in [
    ("mem", lambda: open(f"/proc/{init}/mem", "rb").read(1)),
    ("environ", lambda: open(f"/proc/{init}/environ", "rb").read()),
    ("prlimit-raise", lambda: resource.prlimit(init, resource.RLIMIT_NOFILE, (10 ** 6, 10 ** 6))),
    ("prlimit-lower", lambda: resource.prlimit(init, resource.RLIMIT_NOFILE, (3, 3))),
    ("prlimit-pid1", lambda: resource.prlimit(1, resource.RLIMIT_CPU, (1, 1))),
]:
    try:
        fn()
        out[what] = "succeeded"
    except (OSError, ValueError):
        out[what] = "failed"
resource.prlimit(0, resource.RLIMIT_CORE, (0, 0))  # its own limits it may still lower
print(sorted(set(out.values())), out)
"""
    res = run_code(program, timeout=T)
    assert res.status == "ok", res.stderr
    assert res.stdout.startswith("['failed']"), res.stdout
    assert_contained(res)


# x86_64 numbers; arguments are junk on purpose: the filter answers before the kernel checks them.
DENIED = {
    "bpf": (321, 0, 0, 0), "perf_event_open": (298, 0, 0, -1, -1, 0), "userfaultfd": (323, 0),
    "io_uring_setup": (425, 1, 0), "keyctl": (250, 0, -3, 0), "mount": (165, 0, 0, 0, 0, 0),
    "umount2": (166, 0, 0), "unshare": (272, 0x10000000), "setns": (308, 0, 0), "ptrace": (101, 0, 1, 0, 0),
    "process_vm_readv": (310, 1, 0, 0, 0, 0, 0), "pidfd_getfd": (438, 0, 0, 0), "kexec_load": (246, 0, 0, 0, 0),
    "init_module": (175, 0, 0, 0), "open_by_handle_at": (304, 0, 0, 0), "pivot_root": (155, 0, 0),
    "chroot": (161, 0), "fsopen": (430, 0, 0), "open_tree": (428, 0, 0, 0), "swapon": (167, 0, 0),
    "syslog": (103, 3, 0, 0), "reboot": (169, 0, 0, 0, 0), "add_key": (248, 0, 0, 0, 0, 0),
    "clone3": (435, 0, 0),
}


@x86_64_only
@needs_seccomp
@pytest.mark.parametrize("name", sorted(DENIED))
def test_system_calls_a_test_never_needs_are_denied(name):
    program = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ret = libc.syscall(*[ctypes.c_long(a) for a in {DENIED[name]!r}])
print(ret, ctypes.get_errno())
"""
    res = run_code(program, timeout=T)
    assert res.status == "ok", res.stderr
    ret, err = map(int, res.stdout.split())
    expected = 38 if name == "clone3" else 1  # ENOSYS (the C library falls back to clone), EPERM
    assert (ret, err) == (-1, expected), res.stdout
    assert_contained(res)


@pytest.mark.skipif(not CAPS.cpu_quota, reason=f"no cpu cgroup {HERE}")
def test_a_fork_bomb_of_burners_gets_one_cpu_at_most():
    """Four busy processes for 1.5 s of wall time use about one CPU in all (the cgroup's quota)."""
    program = """
import os, resource, time
pids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            pass
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime)
"""
    from infscale.sandbox.cgroup import Cgroup

    cpu_root = Cgroup._mounts()["cpu"]
    prefix = f"infscale-sbx-{os.getpid()}-"
    seen: dict[str, int] = {}
    done = threading.Event()

    def watch_quota() -> None:
        """From the host, while the run lives: its cpu cgroup's quota and period."""
        while not done.is_set() and not seen:
            for dirpath, dirnames, _ in os.walk(cpu_root):
                for d in dirnames:
                    if d.startswith(prefix):
                        try:
                            for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"):
                                with open(os.path.join(dirpath, d, name)) as f:
                                    seen[name] = int(f.read())
                        except OSError:
                            seen.clear()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_quota)
    watcher.start()
    try:
        res = run_code(program, timeout=10, cpu_seconds=10)
    finally:
        done.set()
        watcher.join()
    assert res.status == "ok", res.stderr
    # The run's cgroup had a quota of one CPU (without it, quota is -1: unlimited) ...
    assert seen and seen["cpu.cfs_quota_us"] == seen["cpu.cfs_period_us"] > 0, seen
    # ... and it binds: 1.5 s at one CPU, plus a period of slack; four uncapped burners would
    # take up to 3 s on 2 cores (6 s on 4). (On a loaded machine they may get less anyway,
    # which is why the quota itself is read above.)
    assert float(res.stdout) < 1.5 + 0.5, res.stdout
    assert_contained(res)


@pytest.mark.skipif("uid" not in CAPS.available, reason=f"no uid mode here (not root) {HERE}")
def test_uid_mode_leaves_nothing_in_the_hosts_temp_dirs():
    marker = f"infscale-leftover-{os.getpid()}-{time.time_ns()}"
    targets = [f"/tmp/{marker}", f"/var/tmp/{marker}", f"/dev/shm/{marker}", f"/tmp/{marker}-dir"]
    program = f"""
import os
for path in {targets[:3]!r}:
    try:
        open(path, "w").write("x")
        print("wrote", path)
    except OSError as e:
        print("failed", path, e)
os.makedirs({targets[3]!r} + "/sub")
open({targets[3]!r} + "/sub/f", "w").write("y")
"""
    res = run_code(program, mode="uid", timeout=T)
    assert res.status == "ok", res.stderr
    assert "wrote /tmp/" in res.stdout  # the host's /tmp is visible in this mode ...
    for path in targets:
        assert not os.path.exists(path), path  # ... but nothing written there survives the run
    assert_contained(res)
