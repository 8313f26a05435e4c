"""The sandbox: start the harness under bubblewrap with limits, and believe only signed verdicts.

Student code runs in a fresh Python process (:mod:`dgmcourse.grading.harness`, started with
``python -I`` so no file next to the submission can shadow a module) under bubblewrap: new user,
PID, network, IPC and UTS namespaces, a read-only view of the Python installation and of the
``dgmcourse`` package the grader imported (:func:`library_root`, the one the harness imports),
the submission's private folder at ``/submission``, a tmpfs ``/tmp``;
rlimits on memory, file size, open files and processes; a wall-time limit per notebook (the
whole PID namespace is killed) and a soft limit per cell. Without ``bwrap`` it refuses to run
unless the :class:`Policy` says ``unsafe``.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from dgmcourse.grading.harness import VERDICT_FD, reference_names


@dataclasses.dataclass(frozen=True)
class Policy:
    """Limits of one sandboxed notebook run, and whether isolation may be skipped.

    Attributes:
        wall_s: wall-time limit of the whole notebook, seconds (the sandbox is killed).
        cell_s: soft time limit of one cell, seconds (the cell fails with ``CellTimeout``).
        memory_mb: private memory (``RLIMIT_DATA``), MiB; the address space is capped 8 GiB
            above it, since PyTorch alone maps about 3.5 GiB of libraries.
        fsize_mb: largest file the code may write, MiB.
        nofile: open files.
        nproc_extra: tasks the sandbox's uid may start beyond those running (``RLIMIT_NPROC``).
        processes: processes in the sandbox's PID namespace before it is killed.
        output_chars: characters kept of each output.
        unsafe: run without bubblewrap (rlimits only).

    Raises:
        ValueError: a limit that is not positive.
    """

    wall_s: float = 600.0
    cell_s: float = 300.0
    memory_mb: int = 4096
    fsize_mb: int = 64
    nofile: int = 256
    nproc_extra: int = 256
    processes: int = 64
    output_chars: int = 20000
    unsafe: bool = False

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "unsafe" and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{field.name} must be a positive number, got {value!r}")


class Status(str, enum.Enum):
    """How the grading of one submission ended (the ``status`` column of the grade table)."""

    GRADED = "graded"                # executed and scored normally
    REPAIRED = "repaired"            # scored after a repair listed in the notes
    MISSING = "missing"              # no notebook of that name: zero for its cells
    REJECTED = "rejected"            # not valid JSON / not a notebook: zero
    TIMEOUT = "timeout"              # killed at the wall-time limit
    PROCESSES = "processes"          # killed for starting too many processes
    CRASHED = "crashed"              # the student's process died before the end
    TAMPERED = "tampered"            # forged verdicts or library objects replaced: zero
    ERROR = "error"                  # nbgrader could not grade the submission
    INVALID_SCORE = "invalid-score"  # a score outside [0, points] was stored as 0
    OK = "ok"                        # (a sandbox run) finished normally

    def __str__(self) -> str:
        return self.value


def library_root() -> Path:
    """The folder holding the ``dgmcourse`` package this process imported (a checkout, or
    site-packages): the sandbox binds that package read-only at the same path and the harness
    imports it from there, so student code imports the very same library, wherever the course
    directory is and however the package was installed."""
    import dgmcourse
    return Path(dgmcourse.__file__).resolve().parents[1]

def trusted_roots() -> tuple:
    """Directories whose code the harness trusts: the Python installation and ``dgmcourse``."""
    package = str(library_root() / "dgmcourse")
    return tuple(sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, package}))

def bwrap_available() -> bool:
    """True when bubblewrap is installed and can create the namespaces the sandbox uses."""
    if shutil.which("bwrap") is None:
        return False
    probe = subprocess.run(["bwrap", "--unshare-all", "--unshare-user", "--ro-bind", "/", "/",
                            "--proc", "/proc", "--dev", "/dev", "true"], capture_output=True)
    return probe.returncode == 0

def sandbox_argv(workdir: Path, env: dict, unsafe: bool = False) -> list:
    """Command line that runs the harness with ``workdir`` as its only writable directory.

    Under bubblewrap the process sees: ``/usr`` and the Python installation read-only, the
    ``dgmcourse`` package of :func:`library_root` read-only, ``workdir`` at ``/submission``
    (read-write), a tmpfs ``/tmp``, no network, its own PID namespace (killing ``bwrap`` kills
    everything in it) and uid 65534 without capabilities. With ``unsafe=True`` it runs
    unsandboxed (rlimits only). The harness runs as a script of that package, not with ``-m``:
    with ``-I`` nothing outside the installation is importable until the harness imports the
    package from :func:`library_root`.
    """
    python = [sys.executable, "-I", str(library_root() / "dgmcourse" / "grading" / "harness.py")]
    if unsafe:
        return python
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr", "--ro-bind-try", "/etc/fonts", "/etc/fonts",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for link in ("lib", "lib64", "bin", "sbin"):
        target = Path("/") / link
        if target.is_symlink():
            argv += ["--symlink", os.readlink(target), str(target)]
        elif target.exists():
            argv += ["--ro-bind", str(target), str(target)]
    for root in trusted_roots():
        argv += ["--ro-bind", root, root]
    argv += ["--bind", str(workdir), "/submission", "--remount-ro", "/",
             "--chdir", "/submission", "--clearenv"]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    return argv + python

def _sandbox_env(threads: int = 1) -> dict:
    """Environment of the harness: nothing from the instructor's but the smoke, device and seed switches."""
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp/home", "LANG": "C.UTF-8",
           "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "DGMCOURSE_DATA": "/tmp/data",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "MPLCONFIGDIR": "/tmp/mpl", "IPYTHONDIR": "/tmp/ipython"}
    for name in ("DGMCOURSE_SMOKE", "DGMCOURSE_DEVICE", "DGMCOURSE_SEED"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env

def _rlimits(policy: Policy):
    """preexec_fn setting the memory, file-size, open-file and process limits (each at most the
    grader's own hard limit, which an unprivileged process cannot raise)."""
    import resource
    with open("/proc/loadavg", encoding="ascii") as fh:  # 4th field: running/total tasks
        tasks = int(fh.read().split()[3].split("/")[1])
    memory = policy.memory_mb * 2**20  # private memory; libraries' mappings are not counted ...
    wanted = {resource.RLIMIT_DATA: memory,
              resource.RLIMIT_AS: memory + 8 * 2**30,  # ... but the address space is bounded too
              resource.RLIMIT_FSIZE: policy.fsize_mb * 2**20,
              resource.RLIMIT_NOFILE: policy.nofile,
              resource.RLIMIT_NPROC: tasks + policy.nproc_extra,  # counts every task of the uid
              resource.RLIMIT_CORE: 0}
    limits = {}
    for kind, value in wanted.items():
        hard = resource.getrlimit(kind)[1]
        limits[kind] = value if hard == resource.RLIM_INFINITY else min(value, hard)

    def apply():
        for kind, value in limits.items():
            resource.setrlimit(kind, (value, value))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return apply

def _pids_cgroup(limit: int):
    """Create a pids cgroup allowing ``limit`` tasks (cgroup v1 or v2); None if not writable."""
    v1, v2 = Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")
    base = v1 if v1.is_dir() else v2 if "pids" in _read(v2 / "cgroup.subtree_control") else None
    if base is None:
        return None
    group = base / f"dgmcourse-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        group.mkdir()
        (group / "pids.max").write_text(str(limit))
    except OSError:
        return None
    return group

def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""

def _remove_cgroup(group) -> None:
    """Kill what is left in the cgroup and remove it (waits up to 60 s for the kernel)."""
    for _ in range(600):
        for pid in _read(group / "cgroup.procs").split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)

def run_sandboxed(cells: list, workdir: Path, policy: Policy = Policy()) -> dict:
    """Run ``cells`` in the sandbox; return verified verdicts, untrusted outputs and a status.

    Args:
        cells: dicts ``{"kind": "student"|"instructor"|"test", "source", "grade_id"}`` in
            notebook order.
        workdir: private directory the code may read and write (becomes ``/submission``).
        policy: the limits, and whether to run without bubblewrap.

    Returns:
        ``{"verdicts": {grade_id: {"passed", "score", "message"}}, "outputs": list|None,
        "status": Status (OK, TIMEOUT, PROCESSES, CRASHED or TAMPERED), "detail": str,
        "time_s": float}``. The sandbox's own output is kept in ``<workdir>.log``; a sandbox that
        cannot import ``dgmcourse`` CRASHED with the detail "sandbox could not import dgmcourse: ...".

    Raises:
        RuntimeError: if bubblewrap is unavailable and ``unsafe`` is False.
    """
    unsafe = policy.unsafe
    if not unsafe and not bwrap_available():
        raise RuntimeError("bubblewrap (bwrap) is not available: refusing to run student code "
                           "without isolation; install it (apt-get install bubblewrap) or pass "
                           "--unsafe")
    key = secrets.token_bytes(32)
    tests = [c for c in cells if c["kind"] == "test"]
    job = {"key": key.hex(), "cells": cells, "trusted_roots": list(trusted_roots()),
           "library_root": str(library_root()),
           "cell_s": policy.cell_s, "output_chars": policy.output_chars,
           "preimport": _imports(c["source"] for c in cells if c["kind"] != "student")
           + sorted({".".join(name.split(".")[:cut]) for c in tests for name in reference_names(c["source"])
                     for cut in range(1, name.count(".") + 1)})}  # every prefix: the harness skips non-modules
    (workdir / "outputs.json").unlink(missing_ok=True)
    read_fd, write_fd = os.pipe()
    env = _sandbox_env()
    if unsafe:
        env = {**os.environ, **env, "HOME": str(workdir)}
        env.pop("MPLCONFIGDIR"), env.pop("IPYTHONDIR"), env.pop("DGMCOURSE_DATA")
    limit_fn = _rlimits(policy)
    group = _pids_cgroup(policy.processes + 8)  # + bwrap and the harness's threads

    def preexec():
        os.dup2(write_fd, VERDICT_FD)
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        limit_fn()

    start = time.monotonic()
    with open(workdir.parent / f"{workdir.name}.log", "wb") as log:
        proc = subprocess.Popen(sandbox_argv(workdir, env, unsafe), stdin=subprocess.PIPE,
                                stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec,
                                pass_fds=(VERDICT_FD,) if write_fd != VERDICT_FD else (write_fd,),
                                cwd=workdir, env=env, start_new_session=True)
        os.close(write_fd)
        lines, reason = _read_capped(read_fd, proc, job, float(policy.wall_s), start,
                                     None if unsafe else policy.processes)
    elapsed = time.monotonic() - start
    status, detail = Status.OK, ""
    if reason or proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status, detail = (Status.PROCESSES, f"killed: more than {policy.processes} processes") \
            if reason == "processes" else \
            (Status.TIMEOUT, f"killed after the {policy.wall_s:.0f} s wall-time limit")
    if group is not None:
        _remove_cgroup(group)
    verdicts, status, detail = _verified(lines, key, status, detail, proc.returncode)
    outputs = None
    path = workdir / "outputs.json"
    if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 * 2**20:
        try:
            outputs = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            outputs = None
    if tests and status == Status.OK and len(verdicts) != len(tests):
        status, detail = Status.CRASHED, "some test cells returned no verdict"
    return {"verdicts": verdicts, "outputs": outputs, "status": status, "detail": detail,
            "time_s": elapsed}


def _verified(lines: list, key: bytes, status: Status, detail: str, returncode) -> tuple:
    """Verdicts of the lines whose HMAC checks; any forged line or refusal means TAMPERED.

    Returns ``(verdicts, status, detail)``; a run that ended without its signed end line
    CRASHED (with the harness's signed reason, if it sent one), and the verdicts of a TAMPERED
    run all fail.
    """
    verdicts, end, failed = {}, None, ""
    for line in lines:
        try:
            message = json.loads(line)
            payload = message["payload"]
            expected = hmac.new(key, json.dumps(payload, sort_keys=True).encode(),
                                "sha256").hexdigest()
            genuine = hmac.compare_digest(expected, str(message["mac"]))
        except (ValueError, KeyError, TypeError):
            genuine = False
        if not genuine:
            status, detail = Status.TAMPERED, "unsigned message on the verdict channel"
            continue
        if payload["kind"] == "tampered":
            status, detail = Status.TAMPERED, payload.get("event", "")
        elif payload["kind"] == "verdict":
            if payload["grade_id"] in verdicts:
                status, detail = Status.TAMPERED, "two verdicts for one test cell"
            verdicts[payload["grade_id"]] = payload
        elif payload["kind"] == "end":
            end = payload
        elif payload["kind"] == "failed":
            failed = str(payload.get("detail", ""))
    if status == Status.OK and end is None:
        status = Status.CRASHED
        detail = failed or f"sandbox exited with code {returncode} before the end of the notebook"
    if status == Status.TAMPERED:
        verdicts = {k: {**v, "passed": False, "score": None} for k, v in verdicts.items()}
    return verdicts, status, detail


def _namespace_size(pid: int) -> int:
    """Number of processes in the PID namespace bubblewrap ``pid`` created (0 if none yet)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        namespace = os.readlink(f"/proc/{children[0]}/ns/pid")
    except (OSError, IndexError):
        return 0
    count = 0
    for entry in os.listdir("/proc"):
        try:
            count += entry.isdigit() and os.readlink(f"/proc/{entry}/ns/pid") == namespace
        except OSError:
            continue
    return count

def _read_capped(fd: int, proc, job: dict, wall_s: float, start: float,
                 max_processes: int | None = None) -> tuple:
    """Send the job, then read verdict lines (at most 1 MiB) until exit or a limit.

    Returns ``(lines, reason)``: ``reason`` is "" on exit, else why the sandbox must be killed.
    """
    import selectors
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    data, selector, reason = b"", selectors.DefaultSelector(), ""
    selector.register(fd, selectors.EVENT_READ)
    while True:
        remaining = wall_s - (time.monotonic() - start)
        if remaining <= 0:
            reason = "timeout"
            break
        if max_processes and _namespace_size(proc.pid) > max_processes + 1:  # + bwrap's init
            reason = "processes"
            break
        if selector.select(timeout=min(remaining, 0.1)):
            chunk = os.read(fd, 65536)
            if not chunk:
                try:
                    proc.wait(timeout=max(0.1, wall_s - (time.monotonic() - start)))
                except subprocess.TimeoutExpired:
                    reason = "timeout"
                break
            if len(data) < 2**20:
                data += chunk
    selector.close()
    os.close(fd)
    return data.decode("utf-8", "replace").splitlines(), reason

def _imports(sources) -> list:
    """Top-level module names imported by instructor and test cells (pre-imported, trusted)."""
    names = set()
    for source in sources:
        try:
            tree = ast.parse(_strip_magics(source))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module)
    return sorted(names)

def _strip_magics(source: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())
