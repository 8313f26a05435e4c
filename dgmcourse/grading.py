"""Sandboxed, parallel, tamper-resistant autograding on top of nbgrader.

``dgmcourse grade ASSIGNMENT`` grades every submission in its own job::

    submitted/<student>/<assignment>/*.ipynb
        -> repair()            metadata repaired or rejected, one clear status per notebook
        -> nbgrader Autograde  (ClearOutput, DeduplicateIds, OverwriteCells with
                                add_missing_cells, ..., SaveAutoGrades) with its Execute
                                step replaced by :class:`SandboxedExecute`
        -> <job>/result.json   scores validated against the cells' points
    merge_results()            one step writes every result into the gradebook

Nothing in a job touches the course's gradebook: the job autogrades into a private copy
(``<job>/course/gradebook.db``) and the merge copies the validated scores over.

Sandbox
    Student code runs in a fresh Python process under bubblewrap (``bwrap``): new user, PID,
    network, IPC and UTS namespaces (no network), a read-only view of the Python installation
    and of the ``dgmcourse`` package only, a private writable copy of the submission plus the
    files the assignment ships, a tmpfs ``/tmp``; rlimits on address space, file size, open
    files and processes; a wall-time limit per notebook (the whole PID namespace is killed)
    and a soft limit per cell. Without ``bwrap`` grading is refused unless ``unsafe=True``.

Unforgeable verdicts
    A test cell scores only through a *signed verdict*: the sandboxed harness
    (:func:`_worker_main`) runs each test cell itself (not through IPython), after restoring
    the builtins, ``sys.modules`` and the dictionaries of every library module and class loaded
    before student code ran, and the names instructor cells bound to library objects. Inside
    test cells, comparisons and ``assert`` conditions refuse objects whose type was not loaded
    from the Python installation or the course library (``__eq__``-always-true objects, tensor
    subclasses). Any library attribute changed while a test cell runs voids that cell. The
    verdict is HMAC-signed by a Python audit hook whose key never appears in any object that
    student code can reach; the same hook blocks ``ctypes``, ``gc`` introspection, trace and
    profile hooks, ``__code__`` replacement, new audit hooks, and frame introspection while a
    test cell runs. Saved outputs of test cells are rebuilt from the signed verdicts, so
    student stderr never costs points and forged outputs never earn any.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER_FLAG = "--sandbox-worker"
VERDICT_FD = 3
DEFAULT_LIMITS = {"wall_s": 600.0, "cell_s": 300.0, "memory_mb": 4096, "fsize_mb": 64,
                  "nofile": 256, "nproc_extra": 256, "processes": 64, "output_chars": 20000}
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals",
                          "f_locals", "gi_code", "cr_code"})
_ALWAYS_BLOCKED = ("ctypes.", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                   "sys.settrace", "sys.setprofile", "sys.addaudithook", "sys._current_frames",
                   "cffi.")
_TEST_FILENAME = "<dgmcourse-test>"


# ---------------------------------------------------------------------------------------------
# The sandboxed harness (runs inside bwrap; imports only the standard library and IPython).
# ---------------------------------------------------------------------------------------------
class CellTimeout(BaseException):
    """Raised in the harness when a cell runs past its soft time limit."""


class Tampering(Exception):
    """Raised in a test cell when its inputs or the library were tampered with."""


def _install_guard(key: bytes, fd: int, tests: list, trusted_roots: tuple, verdict_code,
                   end_code) -> None:
    """Install the audit hook that blocks introspection and signs verdicts.

    ``tests`` is the ordered list of ``(grade_id, sha256 of source)`` of the test cells. The
    hook accepts ``dgmcourse.verdict(index, grade_id, digest, passed, score, message)`` only when
    raised by ``verdict_code`` (and ``dgmcourse.end`` only by ``end_code``) with nothing but
    library code on the stack, in the first process, on the main thread, once per test cell and
    in order; it writes the HMAC-signed line to ``fd``. The key and state live only in this
    closure, which no object visible to student code refers to (``gc`` introspection is blocked).

    ``ctypes``, ``gc`` introspection, trace and profile hooks, new audit hooks and ``__code__``
    replacement are refused while student code is on the stack (except behind an ``import`` of a
    library module, which may load shared libraries). Frame objects are refused to student code (``sys._getframe``, ``tb_frame``, ``gi_frame``...
    requested by student code or a library function it called directly, or by anything while
    student code runs inside a test cell): from a frame, ``f_back`` leads to the harness.
    """
    import _thread
    getframe, write, main_ident = sys._getframe, os.write, _thread.get_ident()
    getpid, main_pid = os.getpid, os.getpid()
    get_ident, digest_fn, dumps = _thread.get_ident, hmac.digest, json.dumps
    trusted = trusted_roots + ("<frozen ",)
    state = {"next": 0, "busy": False, "tampered": False}

    def student(frame):
        name = frame.f_code.co_filename
        return name != _TEST_FILENAME and not name.startswith(trusted)

    def frames_would_leak():
        requester = getframe(2)
        if student(requester) or (requester.f_back is not None and student(requester.f_back)):
            return True
        frame, seen_student = requester, False
        while frame is not None:  # inside a test cell: no student code between us and it
            if frame.f_code is verdict_code:
                return seen_student
            seen_student = seen_student or student(frame)
            frame = frame.f_back
        return False

    def student_on_stack():
        """Student code on the stack, other than behind an import of a library module."""
        frame = getframe(2)
        while frame is not None:
            if frame.f_code.co_filename.startswith("<frozen importlib"):
                return False
            if student(frame):
                return True
            frame = frame.f_back
        return False

    def raised_by(code, caller=None):
        frame = getframe(2)
        if frame.f_code is not code or get_ident() != main_ident or getpid() != main_pid or (
                caller is not None and (frame.f_back is None or frame.f_back.f_code is not caller)):
            return False
        while frame is not None:
            if not frame.f_code.co_filename.startswith(trusted):
                return False
            frame = frame.f_back
        return True

    def sign(payload):
        line = dumps(payload, sort_keys=True)
        mac = digest_fn(key, line.encode(), "sha256").hex()
        write(fd, (dumps({"payload": payload, "mac": mac}) + "\n").encode())

    def hook(event, args):
        if state["busy"]:
            return
        state["busy"] = True
        try:
            if event == "dgmcourse.verdict":
                index, grade_id, digest, passed, score, message = args
                if not (raised_by(verdict_code, end_code) and index == state["next"] < len(tests)
                        and tests[index] == (grade_id, digest)):
                    state["tampered"] = True
                    sign({"kind": "tampered", "event": "verdict out of order or from student code"})
                    raise RuntimeError("verdict refused")
                state["next"] += 1
                sign({"kind": "verdict", "index": index, "grade_id": grade_id,
                      "passed": bool(passed) and not state["tampered"], "score": score,
                      "message": str(message)[:2000]})
            elif event == "dgmcourse.end":
                if raised_by(end_code):
                    sign({"kind": "end", "verdicts": state["next"], "tampered": state["tampered"]})
            elif (event.startswith(_ALWAYS_BLOCKED) or (
                    event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__")) \
                    and student_on_stack():
                raise RuntimeError(f"blocked by the grading sandbox: {event}")
            elif event in ("sys._getframe", "sys._getframemodulename") or (
                    event == "object.__getattr__" and len(args) > 1 and args[1] in _FRAME_ATTRS):
                if frames_would_leak():
                    raise ValueError(f"frame introspection is blocked by the grader: {event}")
        finally:
            state["busy"] = False

    sys.addaudithook(hook)


def _library_snapshot(trusted_roots: tuple):
    """Immutable snapshot of library state: builtins, sys.modules, module and class dicts."""
    import warnings
    modules, classes = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, module in list(sys.modules.items()):
            _snapshot_module(name, module, trusted_roots, modules, classes)
    trusted_types = frozenset(cls for cls, _ in classes)
    return tuple(modules), tuple(classes), tuple(sys.modules.items()), trusted_types


def _snapshot_module(name, module, trusted_roots, modules, classes):
    """Append a library module's namespace and its classes' namespaces to the snapshot."""
    origin = getattr(module, "__file__", None)
    if origin is not None and not str(origin).startswith(trusted_roots):
        return
    try:
        namespace = vars(module)
    except TypeError:
        return
    items = tuple(namespace.items())
    modules.append((namespace, items))
    for _, value in items:
        if isinstance(value, type) and getattr(value, "__module__", None) == name:
            try:
                classes.append((value, tuple(vars(value).items())))
            except TypeError:
                pass


def _restore(snapshot) -> list:
    """Put back every library binding changed since ``snapshot``; return what was changed."""
    modules, classes, sys_modules, _ = snapshot
    changed = []
    for namespace, items in modules:
        for key, value in items:
            if namespace.get(key, _restore) is not value:
                namespace[key] = value
                changed.append(f"{namespace.get('__name__', '?')}.{key}")
    for cls, items in classes:
        original = dict(items)
        for key, value in items:
            if cls.__dict__.get(key, _restore) is not value:
                try:
                    setattr(cls, key, value)
                    changed.append(f"{cls.__qualname__}.{key}")
                except (TypeError, AttributeError):
                    pass
        for key in [k for k in list(cls.__dict__) if k not in original and k.startswith("__")]:
            try:
                delattr(cls, key)
                changed.append(f"{cls.__qualname__}.{key}")
            except (TypeError, AttributeError):
                pass
    for name, module in sys_modules:
        if sys.modules.get(name) is not module:
            sys.modules[name] = module
            changed.append(f"sys.modules[{name!r}]")
    return changed


class _HardenTests(ast.NodeTransformer):
    """Route comparisons and ``assert`` conditions of a test cell through trusted helpers."""

    _OPS = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt",
            ast.GtE: "ge", ast.Is: "is_", ast.IsNot: "is_not", ast.In: "contains_in",
            ast.NotIn: "contains_not_in"}

    def visit_Compare(self, node):
        self.generic_visit(node)
        calls, left = [], node.left
        for op, right in zip(node.ops, node.comparators):
            calls.append(ast.Call(ast.Name("__dgm_cmp__", ast.Load()),
                                  [ast.Constant(self._OPS[type(op)]), left, right], []))
            left = right
        return calls[0] if len(calls) == 1 else ast.BoolOp(ast.And(), calls)

    def visit_Assert(self, node):
        self.generic_visit(node)
        node.test = ast.Call(ast.Name("__dgm_truth__", ast.Load()), [node.test], [])
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        node.args = [a if isinstance(a, ast.Starred) else
                     ast.Call(ast.Name("__dgm_arg__", ast.Load()), [a], []) for a in node.args]
        return node


def _make_checks(trusted_types):
    """Helpers injected into test cells: refuse values whose type student code defined."""
    import operator
    ops = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
           "gt": operator.gt, "ge": operator.ge, "is_": operator.is_, "is_not": operator.is_not,
           "contains_in": lambda a, b: operator.contains(b, a),
           "contains_not_in": lambda a, b: not operator.contains(b, a)}
    hooks = ("__torch_function__", "__array_function__", "__array_ufunc__", "__torch_dispatch__")

    def trusted(value, depth=0):
        kind = type(value)
        if kind not in trusted_types:
            return False
        if depth < 3 and kind in (tuple, list, set, frozenset):
            return all(trusted(v, depth + 1) for v in list(value)[:10000])
        if depth < 3 and kind is dict:
            return all(trusted(k, depth + 1) and trusted(v, depth + 1)
                       for k, v in list(value.items())[:10000])
        if getattr(getattr(value, "dtype", None), "hasobject", False):
            return all(trusted(v, depth + 1) for v in value.ravel()[:10000])
        return True

    def need(value):
        if not trusted(value):
            raise Tampering(f"test compared a value of type {type(value).__qualname__!r} "
                            "that is not a Python, NumPy, PyTorch or course-library type")
        return value

    def cmp(op, a, b):
        if op not in ("is_", "is_not"):
            need(a)
            need(b)
        return ops[op](a, b)

    def truth(value):
        return bool(need(value))

    def arg(value):
        kind = type(value)
        if kind not in trusted_types and any(hasattr(kind, h) for h in hooks) and \
                not isinstance(value, type):
            raise Tampering(f"argument of type {kind.__qualname__!r} overrides array dispatch")
        return value

    return cmp, truth, arg


def _run_test_cell(index, grade_id, source, shell, snapshot, restore, bindings, checks,
                   transform):
    """Run one test cell in a restored, hardened namespace and sign its verdict.

    ``restore`` is the pristine :func:`_restore`: it runs first, so every global this function
    uses afterwards is the library's own. Returns the cell's nbformat outputs.
    """
    restore(snapshot)
    import contextlib
    import io
    digest = hashlib.sha256(source.encode()).hexdigest()
    out, err = io.StringIO(), io.StringIO()
    passed, score, error = False, None, None
    try:
        namespace = dict(shell.user_ns)
        namespace.update(bindings)
        namespace["__builtins__"] = __import__("builtins")
        namespace["__dgm_cmp__"], namespace["__dgm_truth__"], namespace["__dgm_arg__"] = checks
        tree = ast.parse(transform(source))
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        tree = ast.fix_missing_locations(_HardenTests().visit(tree))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(compile(tree, _TEST_FILENAME, "exec", dont_inherit=True, optimize=0), namespace)
            if last is not None:
                expr = ast.fix_missing_locations(ast.Expression(_HardenTests().visit(last.value)))
                value = eval(compile(expr, _TEST_FILENAME, "eval", dont_inherit=True), namespace)
                if type(value) in (int, float) and value == value:
                    score = float(value)
        after = restore(snapshot)
        if after:
            raise Tampering("library objects were replaced while the test ran: "
                            + ", ".join(sorted(set(after))[:5]))
        passed = True
    except BaseException as exc:  # noqa: BLE001 - every failure of a test cell scores zero
        error = {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc)[:2000],
                 "traceback": [f"{type(exc).__name__}: {str(exc)[:2000]}"]}
    signal.setitimer(signal.ITIMER_REAL, 0)
    sys.audit("dgmcourse.verdict", index, grade_id, digest, passed, score,
              error["traceback"][0] if error else "")
    outputs = []
    text = out.getvalue() + (("\n[stderr]\n" + err.getvalue()) if err.getvalue() else "")
    if text:
        outputs.append({"output_type": "stream", "name": "stdout", "text": text})
    if error:
        outputs.append(error)
    return outputs


def _instructor_bindings(source: str, namespace: dict, trusted_types, trusted_roots) -> dict:
    """Names an instructor cell bound to modules or library functions/classes."""
    import types
    names = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))

    def library_object(value):
        if isinstance(value, types.ModuleType):
            return str(getattr(value, "__file__", None) or trusted_roots[0]).startswith(trusted_roots)
        if isinstance(value, type):
            return value in trusted_types
        if isinstance(value, types.FunctionType):
            return value.__code__.co_filename.startswith(trusted_roots)
        return isinstance(value, types.BuiltinFunctionType)

    return {name: namespace[name] for name in names
            if name in namespace and library_object(namespace[name])}


def _worker_main() -> None:
    """Harness inside the sandbox: read the job on stdin, run cells, sign test verdicts.

    Input (stdin, JSON): ``{"key": hex, "cells": [{"kind": "student"|"instructor"|"test",
    "source": str, "grade_id": str|None}], "preimport": [module names], "cell_s": float,
    "output_chars": int, "trusted_roots": [str]}``. Outputs of every cell go to
    ``outputs.json`` in the working directory (untrusted); signed verdicts to fd 3.
    """
    job = json.loads(sys.stdin.read())
    os.close(0)
    key = bytes.fromhex(job.pop("key"))
    roots = tuple(job["trusted_roots"])
    for name in ["numpy", "IPython"] + job["preimport"]:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - a module the notebook imports may be absent
            pass
    try:
        import tqdm
        tqdm.tqdm.monitor_interval = 0
    except ImportError:
        pass
    _warm_up_torch()
    from IPython.core.inputtransformer2 import TransformerManager
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from traitlets.config import Config
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    transform = TransformerManager().transform_cell
    snapshot = _library_snapshot(roots)
    checks = _make_checks(snapshot[3] | {type(None), bool, int, float, complex, str, bytes,
                                         tuple, list, dict, set, frozenset, type})
    tests = [(c["grade_id"], hashlib.sha256(c["source"].encode()).hexdigest())
             for c in job["cells"] if c["kind"] == "test"]
    # Everything the loop uses is bound here, before student code can rebind module globals;
    # `restore` puts back every library (and this module's) binding before any harness code
    # that relies on them runs (instructor bindings, test cells).
    restore, run_test, outputs_of, truncate, bound_by = (
        _restore, _run_test_cell, _outputs, _truncate, _instructor_bindings)
    setitimer, set_handler, audit, dump, getpid, exit_ = (
        signal.setitimer, signal.signal, sys.audit, json.dump, os.getpid, os._exit)
    _install_guard(key, VERDICT_FD, tests, roots, run_test.__code__, _worker_main.__code__)
    del key
    limit, chars = float(job["cell_s"]), int(job["output_chars"])

    def alarm(signum, frame):
        raise CellTimeout(f"cell ran longer than {limit:.0f} s")

    results, bindings, index, main_pid = [], {}, 0, getpid()
    for cell in job["cells"]:
        set_handler(signal.SIGALRM, alarm)
        setitimer(signal.ITIMER_REAL, limit)
        try:
            if cell["kind"] == "test":
                outputs = run_test(index, cell["grade_id"], cell["source"], shell, snapshot,
                                   restore, bindings, checks, transform)
                index += 1
            else:
                with capture_output() as captured:
                    result = shell.run_cell(cell["source"], store_history=False)
                setitimer(signal.ITIMER_REAL, 0)
                outputs = outputs_of(captured, result)
                if cell["kind"] == "instructor":
                    restore(snapshot)
                    bindings.update(bound_by(cell["source"], shell.user_ns, snapshot[3], roots))
        except CellTimeout as exc:  # raised outside IPython's own handling of the cell
            outputs = [{"output_type": "error", "ename": "CellTimeout", "evalue": str(exc),
                        "traceback": [f"CellTimeout: {exc}"]}]
        finally:
            setitimer(signal.ITIMER_REAL, 0)
            if getpid() != main_pid:  # a process student code forked: it must not go on
                exit_(0)
        results.append(truncate(outputs, chars))
        with open("outputs.json", "w", encoding="utf-8") as fh:
            dump(results, fh)
    audit("dgmcourse.end")


def _warm_up_torch() -> None:
    """Run once, before student code, what torch sets up lazily with frame introspection.

    On first use ``torch.func`` (``vmap``, ``jacrev``, ``jacfwd``) and the vectorised
    ``torch.autograd.functional.jacobian`` register operator libraries through
    ``torch.library.Library``, which reads ``sys._getframe``. Inside a test cell, with student
    code on the stack, the guard refuses frame requests, so a correct answer built on them
    would fail; done here, the registration is over before any student code runs.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    x = torch.zeros(2, dtype=torch.float64)
    torch.func.vmap(torch.func.jacrev(torch.sin))(x[:, None])
    torch.func.vmap(torch.func.jacfwd(torch.sin))(x[:, None])
    torch.autograd.functional.jacobian(torch.sin, x, vectorize=True)


def _outputs(captured, result) -> list:
    """nbformat v4 outputs of one IPython cell run."""
    outputs = []
    if captured.stdout:
        outputs.append({"output_type": "stream", "name": "stdout", "text": captured.stdout})
    if captured.stderr:
        outputs.append({"output_type": "stream", "name": "stderr", "text": captured.stderr})
    for rich in captured.outputs:
        data = {k: v for k, v in rich.data.items() if isinstance(v, str)}
        outputs.append({"output_type": "display_data", "data": data, "metadata": {}})
    error = result.error_in_exec or result.error_before_exec
    if error is not None:
        outputs.append({"output_type": "error", "ename": type(error).__name__,
                        "evalue": str(error)[:2000], "traceback": [f"{type(error).__name__}: "
                                                                   f"{str(error)[:2000]}"]})
    elif result.result is not None:
        outputs.append({"output_type": "execute_result", "execution_count": None,
                        "metadata": {}, "data": {"text/plain": repr(result.result)[:2000]}})
    return outputs


def _truncate(outputs: list, chars: int) -> list:
    """Cap the text of each output at ``chars`` characters."""
    for output in outputs:
        if "text" in output and len(output["text"]) > chars:
            output["text"] = output["text"][:chars] + "\n... [output truncated by the grader]\n"
        for mime, value in list(output.get("data", {}).items()):
            if len(value) > 20 * chars:
                output["data"][mime] = value[:chars] if mime == "text/plain" else ""
    return outputs


# ---------------------------------------------------------------------------------------------
# Instructor side: sandbox command, nbgrader preprocessor, repair, jobs, merge.
# ---------------------------------------------------------------------------------------------
def trusted_roots() -> tuple:
    """Directories whose code the harness trusts: the Python installation and ``dgmcourse``."""
    package = str(Path(__file__).resolve().parent)
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
    ``dgmcourse`` package read-only, ``workdir`` at ``/submission`` (read-write), a tmpfs
    ``/tmp``, no network, its own PID namespace (killing ``bwrap`` kills everything in it)
    and uid 65534 without capabilities. With ``unsafe=True`` it runs unsandboxed (rlimits only).
    """
    python = [sys.executable, "-m", "dgmcourse.grading", WORKER_FLAG]
    if unsafe:
        return python
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr", "--ro-bind-try", "/etc/fonts", "/etc/fonts", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
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


def _rlimits(limits: dict):
    """preexec_fn setting the memory, file-size, open-file and process limits."""
    import resource
    with open("/proc/loadavg", encoding="ascii") as fh:  # 4th field: running/total tasks
        tasks = int(fh.read().split()[3].split("/")[1])
    nproc = tasks + int(limits["nproc_extra"])  # RLIMIT_NPROC counts every task of the uid

    def apply():
        memory = int(limits["memory_mb"]) * 2**20  # private memory; libraries' mappings are
        resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))  # not counted ...
        address_space = memory + 8 * 2**30  # ... but the address space is bounded too
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        fsize = int(limits["fsize_mb"]) * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (int(limits["nofile"]),) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
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


def run_sandboxed(cells: list, workdir: Path, limits: dict | None = None,
                  unsafe: bool = False) -> dict:
    """Run ``cells`` in the sandbox; return verified verdicts, untrusted outputs and a status.

    Args:
        cells: dicts ``{"kind": "student"|"instructor"|"test", "source", "grade_id"}`` in
            notebook order.
        workdir: private directory the code may read and write (becomes ``/submission``).
        limits: overrides of :data:`DEFAULT_LIMITS` (seconds, MiB).
        unsafe: run without bubblewrap (rlimits only).

    Returns:
        ``{"verdicts": {grade_id: {"passed", "score", "message"}}, "outputs": list|None,
        "status": "ok"|"timeout"|"crashed"|"tampered", "detail": str, "time_s": float}``.

    Raises:
        RuntimeError: if bubblewrap is unavailable and ``unsafe`` is False.
    """
    limits = {**DEFAULT_LIMITS, **(limits or {})}
    if not unsafe and not bwrap_available():
        raise RuntimeError("bubblewrap (bwrap) is not available: refusing to run student code "
                           "without isolation; install it (apt-get install bubblewrap) or pass "
                           "--unsafe")
    key = secrets.token_bytes(32)
    tests = [c for c in cells if c["kind"] == "test"]
    job = {"key": key.hex(), "cells": cells, "trusted_roots": list(trusted_roots()),
           "cell_s": limits["cell_s"], "output_chars": limits["output_chars"],
           "preimport": _imports(c["source"] for c in cells if c["kind"] != "student")}
    (workdir / "outputs.json").unlink(missing_ok=True)
    read_fd, write_fd = os.pipe()
    env = _sandbox_env()
    if unsafe:
        env = {**os.environ, **env, "HOME": str(workdir)}
        env.pop("MPLCONFIGDIR"), env.pop("IPYTHONDIR"), env.pop("DGMCOURSE_DATA")
    limit_fn = _rlimits(limits)
    group = _pids_cgroup(int(limits["processes"]) + 8)  # + bwrap and the harness's threads

    def preexec():
        os.dup2(write_fd, VERDICT_FD)
        if group is not None:
            (group / "cgroup.procs").write_text(str(os.getpid()))
        limit_fn()

    log = open(workdir.parent / f"{workdir.name}.log", "wb")
    start = time.monotonic()
    proc = subprocess.Popen(sandbox_argv(workdir, env, unsafe), stdin=subprocess.PIPE,
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec,
                            pass_fds=(VERDICT_FD,) if write_fd != VERDICT_FD else (write_fd,),
                            cwd=workdir, env=env, start_new_session=True)
    os.close(write_fd)
    lines, reason = _read_capped(read_fd, proc, job, float(limits["wall_s"]), start,
                                 None if unsafe else int(limits["processes"]))
    elapsed = time.monotonic() - start
    log.close()
    status, detail = "ok", ""
    if reason or proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status, detail = ("processes", f"killed: more than {limits['processes']} processes") \
            if reason == "processes" else \
            ("timeout", f"killed after the {limits['wall_s']:.0f} s wall-time limit")
    if group is not None:
        _remove_cgroup(group)
    verdicts, end = {}, None
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
            status, detail = "tampered", "unsigned message on the verdict channel"
            continue
        if payload["kind"] == "tampered":
            status, detail = "tampered", payload.get("event", "")
        elif payload["kind"] == "verdict":
            if payload["grade_id"] in verdicts:
                status, detail = "tampered", "two verdicts for one test cell"
            verdicts[payload["grade_id"]] = payload
        elif payload["kind"] == "end":
            end = payload
    if status == "ok" and end is None:
        status = "crashed"
        detail = f"sandbox exited with code {proc.returncode} before the end of the notebook"
    if status == "tampered":
        verdicts = {k: {**v, "passed": False, "score": None} for k, v in verdicts.items()}
    outputs = None
    path = workdir / "outputs.json"
    if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 * 2**20:
        try:
            outputs = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            outputs = None
    if tests and status == "ok" and len(verdicts) != len(tests):
        status, detail = "crashed", "some test cells returned no verdict"
    return {"verdicts": verdicts, "outputs": outputs, "status": status, "detail": detail,
            "time_s": elapsed}


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



_EXCHANGE_FILES = ("timestamp.txt", "submission_secret.txt")  # written by nbgrader's exchange
_COPY_SUFFIX = re.compile(r"(\s*\(\d+\)|[-_ ]copy\d*|-checkpoint)+$", re.IGNORECASE)


def repair_submission(submitted: Path, release: Path, dest: Path) -> list:
    """Repair the notebooks of one submission into ``dest``; return notes for the instructor.

    For every notebook the release ships (``release/<name>.ipynb``): find it in ``submitted``
    (also under a renamed file such as ``"a1_vae (1).ipynb"``), parse it (invalid JSON or an
    unreadable notebook is rejected: the notebook then counts as missing and scores zero),
    convert old nbformat versions to v4, and give every cell that carries nbgrader metadata the
    release's metadata for its ``grade_id`` (unknown ``schema_version``, edited points, a test
    cell turned into markdown). Cells whose ``grade_id`` the release does not know, and repeats
    of a ``grade_id``, lose their nbgrader metadata. Deleted test cells are restored later by
    nbgrader (``OverwriteCells.add_missing_cells``). Other files in the submission are ignored.

    Raises:
        ValueError: if ``release`` holds no notebook.
    """
    import nbformat
    expected = {p.stem: p for p in sorted(release.glob("*.ipynb"))}
    if not expected:
        raise ValueError(f"release={release} holds no notebook")
    dest.mkdir(parents=True, exist_ok=True)
    notes = []
    present = sorted(p for p in submitted.glob("*.ipynb")) if submitted.is_dir() else []
    unmatched = [p for p in present if p.stem not in expected]
    for name, release_path in expected.items():
        path = submitted / f"{name}.ipynb"
        if not path.is_file():
            guesses = [p for p in unmatched if _COPY_SUFFIX.sub("", p.stem).lower() == name.lower()]
            if not guesses and len(expected) == 1 and len(unmatched) == 1:
                guesses = unmatched
            if not guesses:
                notes.append(f"missing notebook {name}.ipynb")
                continue
            path = guesses[0]
            unmatched.remove(path)
            notes.append(f"renamed {path.name!r} to {name}.ipynb")
        try:
            text = path.read_text(encoding="utf-8")
            json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            notes.append(f"rejected {path.name}: not valid JSON ({str(err)[:60]})")
            continue
        try:
            version = json.loads(text).get("nbformat")
            nb = nbformat.reads(text, as_version=4)
        except Exception as err:  # noqa: BLE001 - nbformat raises many types on bad notebooks
            notes.append(f"rejected {path.name}: not a notebook ({str(err)[:60]})")
            continue
        if version != 4:
            notes.append(f"converted {path.name} from nbformat {version}")
        notes += _repair_cells(nb, nbformat.read(release_path, as_version=4))
        nbformat.write(nb, dest / f"{name}.ipynb")
    for path in sorted(submitted.iterdir()) if submitted.is_dir() else []:
        if path.name in _EXCHANGE_FILES and path.is_file() and not path.is_symlink():
            shutil.copy(path, dest / path.name)
        elif path.suffix != ".ipynb":
            notes.append(f"ignored file {path.name}")
    return notes


def _repair_cells(nb, release) -> list:
    """Give each graded/locked cell the release's nbgrader metadata (see repair_submission)."""
    import nbformat
    reference = {c.metadata.nbgrader["grade_id"]: c for c in release.cells
                 if "nbgrader" in c.metadata and "grade_id" in c.metadata.nbgrader}
    keep = {}
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if grade_id in reference and (grade_id not in keep or (
                cell.source == reference[grade_id].source
                and nb.cells[keep[grade_id]].source != reference[grade_id].source)):
            keep[grade_id] = i
    notes, cells = [], []
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            cells.append(cell)
            continue
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if grade_id not in reference or keep.get(grade_id) != i:
            notes.append(f"removed nbgrader metadata from a cell with grade_id {grade_id!r}")
            del cell.metadata["nbgrader"]
            cells.append(cell)
            continue
        ref = reference[grade_id]
        if dict(meta) != dict(ref.metadata.nbgrader):
            notes.append(f"restored nbgrader metadata of {grade_id}")
        if cell.cell_type != ref.cell_type:
            notes.append(f"restored cell type of {grade_id} ({cell.cell_type} -> {ref.cell_type})")
            cell = (nbformat.v4.new_code_cell if ref.cell_type == "code"
                    else nbformat.v4.new_markdown_cell)(source=cell.source)
        cell.metadata["nbgrader"] = nbformat.from_dict(dict(ref.metadata.nbgrader))
        cells.append(cell)
    nb.cells = _restore_deleted(cells, release, notes)
    return notes


def _restore_deleted(cells: list, release, notes: list) -> list:
    """Put back deleted locked and graded cells of the release after their release predecessor.

    A deleted written answer comes back unanswered, as released.

    (nbgrader's ``add_missing_cells`` stays on, but in nbgrader 0.9.6 it fails with a KeyError
    when the deleted cell follows a locked cell that is neither graded nor a solution.)
    """
    import copy
    order = [c for c in release.cells if "grade_id" in c.metadata.get("nbgrader", {})]
    position = {c.metadata["nbgrader"]["grade_id"]: i for i, c in enumerate(cells)
                if "nbgrader" in c.metadata}
    for k, ref in enumerate(order):
        grade_id, meta = ref.metadata.nbgrader["grade_id"], ref.metadata.nbgrader
        if grade_id in position or not (meta.get("locked") or meta.get("grade")):
            continue
        before = [position[c.metadata.nbgrader["grade_id"]] for c in order[:k]
                  if c.metadata.nbgrader["grade_id"] in position]
        at = max(before, default=-1) + 1
        restored = copy.deepcopy(ref)
        if "id" in restored:
            restored["id"] = secrets.token_hex(4)
        cells.insert(at, restored)
        position = {g: i + (i >= at) for g, i in position.items()}
        position[grade_id] = at
        notes.append(f"restored deleted cell {grade_id}")
    return cells


def _cell_kind(cell) -> str:
    meta = cell.metadata.get("nbgrader", {})
    if meta.get("grade") and not meta.get("solution"):
        return "test"
    if meta.get("locked") and not meta.get("solution"):
        return "instructor"
    return "student"


def _sandboxed_execute_class():
    """nbgrader preprocessor that executes a notebook with :func:`run_sandboxed`."""
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Bool, Dict, Unicode

    class SandboxedExecute(NbGraderPreprocessor):
        """Replaces nbgrader's ``Execute`` in ``Autograde.autograde_preprocessors``.

        Student and instructor cells get the outputs the harness recorded (untrusted, capped);
        test cells get outputs rebuilt from the signed verdicts only, so nbgrader's
        ``SaveAutoGrades`` scores exactly what the verdicts say.
        """

        job_dir = Unicode("", help="Folder for this submission's sandbox").tag(config=True)
        unsafe = Bool(False, help="Run without bubblewrap").tag(config=True)
        limits = Dict({}, help="Overrides of dgmcourse.grading.DEFAULT_LIMITS").tag(config=True)

        def preprocess(self, nb, resources):
            import nbformat
            job = Path(self.job_dir)
            source_dir = Path(resources.get("metadata", {}).get("path") or ".").resolve()
            work = job / "sandbox"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(source_dir, work, ignore=shutil.ignore_patterns("*.ipynb"),
                            symlinks=False)
            code = [c for c in nb.cells if c.cell_type == "code"]
            cells = [{"kind": _cell_kind(c), "source": c.source,
                      "grade_id": c.metadata.get("nbgrader", {}).get("grade_id")} for c in code]
            run = run_sandboxed(cells, work, self.limits, self.unsafe)
            outputs = run["outputs"] if isinstance(run["outputs"], list) and \
                len(run["outputs"]) <= len(code) else []
            for i, (cell, spec) in enumerate(zip(code, cells)):
                cell.execution_count = None
                if spec["kind"] == "test":
                    text = "".join(o.get("text", "") for o in _valid_outputs(
                        outputs[i] if i < len(outputs) else []) if o.output_type == "stream")
                    cell.outputs = ([nbformat.v4.new_output("stream", text=text)] if text else [])
                    cell.outputs += _verdict_outputs(run["verdicts"].get(spec["grade_id"]), run)
                else:
                    cell.outputs = _valid_outputs(outputs[i] if i < len(outputs) else [])
            name = Path(resources.get("unique_key", "notebook")).name
            (job / f"run-{name}.json").write_text(json.dumps(
                {k: run[k] for k in ("status", "detail", "time_s")}))
            shutil.rmtree(work, ignore_errors=True)
            return nb, resources

    return SandboxedExecute


def _verdict_outputs(verdict, run) -> list:
    """Outputs of a test cell from its signed verdict (None: the cell never finished)."""
    import nbformat
    if verdict is None or not verdict.get("passed"):
        message = (verdict or {}).get("message") or f"no verdict ({run['status']}: {run['detail']})"
        ename = message.split(":", 1)[0] if verdict else "GradingError"
        return [nbformat.v4.new_output("error", ename=ename, evalue=message, traceback=[message])]
    if isinstance(verdict.get("score"), (int, float)):
        return [nbformat.v4.new_output("execute_result", data={"text/plain": repr(verdict["score"])})]
    return []


def _valid_outputs(outputs) -> list:
    """Rebuild the harness's (untrusted) outputs as nbformat v4 outputs; drop anything else."""
    import nbformat
    new, kept = nbformat.v4.new_output, []
    strings = (lambda d: isinstance(d, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in d.items()))
    for out in outputs if isinstance(outputs, list) else []:
        kind = out.get("output_type") if isinstance(out, dict) else None
        if kind == "stream" and out.get("name") in ("stdout", "stderr") \
                and isinstance(out.get("text"), str):
            kept.append(new("stream", name=out["name"], text=out["text"]))
        elif kind in ("display_data", "execute_result") and strings(out.get("data")):
            kept.append(new(kind, data=out["data"]))
        elif kind == "error" and isinstance(out.get("ename"), str) and isinstance(
                out.get("evalue"), str) and isinstance(out.get("traceback"), list):
            kept.append(new("error", ename=out["ename"], evalue=out["evalue"],
                            traceback=[str(t) for t in out["traceback"]]))
    return kept


def _course_config(course: Path):
    """The course's nbgrader configuration (``nbgrader_config.py``), or an empty one."""
    from traitlets.config import Config, PyFileConfigLoader
    path = course / "nbgrader_config.py"
    return PyFileConfigLoader(str(path)).load_config() if path.is_file() else Config()


def _db_url(course: Path, config, db_url: str | None) -> str:
    if db_url:
        return db_url
    configured = config.get("CourseDirectory", {}).get("db_url")
    return configured if isinstance(configured, str) and configured else \
        f"sqlite:///{(course / 'gradebook.db').resolve()}"


def _dirs(config) -> dict:
    cd = config.get("CourseDirectory", {})
    get = (lambda key, default: cd[key] if key in cd and isinstance(cd[key], str) else default)
    return {"source": get("source_directory", "source"), "release": get("release_directory",
            "release"), "submitted": get("submitted_directory", "submitted"),
            "autograded": get("autograded_directory", "autograded"),
            "feedback": get("feedback_directory", "feedback")}


def grade_submission(course: str | Path, assignment: str, student: str, job_dir: str | Path,
                     template_db: str | Path, unsafe: bool = False,
                     limits: dict | None = None) -> dict:
    """Grade one submission in its own job folder; write and return ``<job_dir>/result.json``.

    The job autogrades with nbgrader's ``Autograde`` converter into a private copy of the
    gradebook (``template_db``), so it never writes the course's gradebook; its sandboxed
    execution is :func:`run_sandboxed` (via ``SandboxedExecute``).

    Returns:
        ``{"student", "status", "notes", "time_s", "score", "max_score", "notebooks": {name:
        {"grades": {grade_id: {"auto_score", "max_score", "needs_manual_grade"}},
        "comments": {grade_id: auto_comment}}}, "autograded": folder}``; scores in points.
    """
    from nbgrader.apps import NbGraderAPI  # noqa: F401 - imports nbgrader's config classes
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern,
                                        LimitOutput, SaveAutoGrades)
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    start = time.monotonic()
    course, job = Path(course).resolve(), Path(job_dir).resolve()
    shutil.rmtree(job, ignore_errors=True)
    root = job / "course"
    config = _course_config(course)
    dirs = _dirs(config)
    (root / dirs["source"]).mkdir(parents=True)
    os.symlink(course / dirs["source"] / assignment, root / dirs["source"] / assignment)
    shutil.copy(template_db, job / "gradebook.db")
    notes = repair_submission(course / dirs["submitted"] / student / assignment,
                              course / dirs["release"] / assignment,
                              root / dirs["submitted"] / student / assignment)
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{job / 'gradebook.db'}"
    config.CourseDirectory.assignment_id = assignment
    config.CourseDirectory.student_id = student
    config.OverwriteCells.add_missing_cells = True
    config.Autograde.create_student = True
    config.Autograde.autograde_preprocessors = [
        _sandboxed_execute_class(), IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
        SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    config.SandboxedExecute.job_dir = str(job)
    config.SandboxedExecute.unsafe = unsafe
    config.SandboxedExecute.limits = dict(limits or {})
    status, error = "graded", ""
    try:
        converter = Autograde(coursedir=CourseDirectory(config=config), config=config)
        converter.start()
    except Exception as err:  # noqa: BLE001 - one broken submission never stops the others
        status, error = "error", f"{type(err).__name__}: {str(err)[:200]}"
    result = _read_job_gradebook(job, assignment, student)
    written = {p.stem for p in (root / dirs["submitted"] / student / assignment).glob("*.ipynb")}
    for name, notebook in result["notebooks"].items():
        if name not in written:  # missing or rejected: zero, nothing left to grade by hand
            for grade in notebook["grades"].values():
                grade.update(auto_score=0.0, needs_manual_grade=False)
    result["score"] = sum(g["auto_score"] or 0.0 for nb in result["notebooks"].values()
                          for g in nb["grades"].values())
    runs = [json.loads(p.read_text()) for p in sorted(job.glob("run-*.json"))]
    statuses = [r["status"] for r in runs if r["status"] != "ok"]
    details = [f"{r['status']}: {r['detail']}" for r in runs if r["status"] != "ok"]
    if any(n.startswith(("missing", "rejected")) for n in notes):
        status = "rejected" if any(n.startswith("rejected") for n in notes) else "missing"
    if statuses:
        status = "tampered" if "tampered" in statuses else statuses[0]
    elif status == "graded" and notes:
        status = "repaired"
    result.update({"student": student, "status": status,
                   "notes": notes + details + ([error] if error else []),
                   "time_s": time.monotonic() - start,
                   "autograded": str(root / dirs["autograded"] / student / assignment)})
    (job / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _read_job_gradebook(job: Path, assignment: str, student: str) -> dict:
    """Scores and comments of one student from the job's private gradebook."""
    from nbgrader.api import Gradebook, MissingEntry
    notebooks, score, max_score, timestamp = {}, 0.0, 0.0, None
    with Gradebook(f"sqlite:///{job / 'gradebook.db'}") as gb:
        for notebook in gb.find_assignment(assignment).notebooks:
            grades, comments = {}, {}
            try:
                submission = gb.find_submission_notebook(notebook.name, assignment, student)
            except MissingEntry:
                submission = None
            for cell in notebook.grade_cells:
                grade = None
                if submission is not None:
                    grade = gb.find_grade(cell.name, notebook.name, assignment, student)
                auto = grade.auto_score if grade is not None else 0.0
                grades[cell.name] = {"auto_score": auto, "max_score": cell.max_score,
                                     "needs_manual_grade": bool(grade.needs_manual_grade)
                                     if grade is not None else False}
                score += auto or 0.0
                max_score += cell.max_score
            if submission is not None:
                timestamp = submission.assignment.timestamp
                for comment in submission.comments:
                    comments[comment.name] = comment.auto_comment
                late = submission.late_submission_penalty
            notebooks[notebook.name] = {"grades": grades, "comments": comments,
                                        "late_penalty": late if submission else None}
    return {"notebooks": notebooks, "score": score, "max_score": max_score,
            "timestamp": timestamp.isoformat() if timestamp else None}


def _valid_score(value, max_score: float):
    """A score nbgrader may store: None (manual) or a finite number in [0, max_score]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or not 0 <= value <= max_score:
        raise ValueError(f"score {value!r} is outside [0, {max_score}]")
    return float(value)


def merge_results(course: str | Path, assignment: str, results: list,
                  db_url: str | None = None) -> None:
    """Write job results into the gradebook and the autograded folder (instructor side only).

    Every score is validated against the cell's points in the gradebook; an invalid score
    is stored as 0 and the result's status becomes ``"invalid-score"``.

    Raises:
        ValueError: if a result names a cell or notebook the gradebook does not know.
    """
    import datetime
    from nbgrader.api import Gradebook
    course = Path(course).resolve()
    config = _course_config(course)
    autograded = course / _dirs(config)["autograded"]
    with Gradebook(_db_url(course, config, db_url)) as gb:
        for result in results:
            student = result["student"]
            gb.update_or_create_student(student)
            stamp = result.get("timestamp")
            gb.update_or_create_submission(assignment, student, **(
                {"timestamp": datetime.datetime.fromisoformat(stamp)} if stamp else {}))
            for name, notebook in result["notebooks"].items():
                for grade_id, entry in notebook["grades"].items():
                    grade = gb.find_grade(grade_id, name, assignment, student)
                    try:
                        grade.auto_score = _valid_score(entry["auto_score"], grade.max_score)
                    except ValueError as err:
                        grade.auto_score = 0.0
                        result["status"] = "invalid-score"
                        result["notes"].append(f"{grade_id}: {err}")
                    grade.needs_manual_grade = bool(entry["needs_manual_grade"])
                for grade_id, text in notebook["comments"].items():
                    gb.find_comment(grade_id, name, assignment, student).auto_comment = text
                if notebook.get("late_penalty") is not None:
                    gb.find_submission_notebook(name, assignment, student) \
                        .late_submission_penalty = notebook["late_penalty"]
            gb.db.commit()
            source = result.get("autograded")
            if source and Path(source).is_dir():
                target = autograded / student / assignment
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target)


def _template_gradebook(course: Path, assignment: str, db_url: str, work: Path) -> Path:
    """A private SQLite gradebook holding the assignment, copied by every job."""
    template = work / "template.db"
    if db_url.startswith("sqlite:///") and Path(db_url[len("sqlite:///"):]).is_file():
        shutil.copy(db_url[len("sqlite:///"):], template)
        return template
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory
    config = _course_config(course)
    dirs = _dirs(config)
    root = work / "template"
    (root / dirs["source"]).mkdir(parents=True)
    os.symlink(course / dirs["source"] / assignment, root / dirs["source"] / assignment)
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{template}"
    config.CourseDirectory.assignment_id = assignment
    GenerateAssignment(coursedir=CourseDirectory(config=config), config=config).start()
    return template


def grade(course: str | Path, assignment: str, students: list | None = None,
          jobs: int | None = None, db_url: str | None = None, unsafe: bool = False,
          limits: dict | None = None, progress: bool = True) -> list:
    """Grade submissions in parallel jobs, then merge them into the gradebook.

    Args:
        course: course root (holds ``nbgrader_config.py``, ``submitted/``, the gradebook).
        assignment: assignment name, e.g. ``"a1_vae"``.
        students: student ids; default every student with a submission of ``assignment``.
        jobs: parallel jobs (default: number of CPU cores).
        db_url: gradebook URL (default: the course's ``gradebook.db``).
        unsafe: grade without bubblewrap (rlimits only).
        limits: overrides of :data:`DEFAULT_LIMITS`.
        progress: show a tqdm progress bar.

    Returns:
        One result dict per student (see :func:`grade_submission`), sorted by student.

    Raises:
        RuntimeError: bubblewrap missing and ``unsafe`` False.
        ValueError: ``jobs`` < 1, or a student without a submission folder.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from tqdm.auto import tqdm
    course = Path(course).resolve()
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if not unsafe and not bwrap_available():
        raise RuntimeError("bubblewrap (bwrap) is not available: refusing to grade without "
                           "isolation. Install it (apt-get install bubblewrap) or pass --unsafe.")
    config = _course_config(course)
    submitted = course / _dirs(config)["submitted"]
    if students is None:
        students = sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir()) \
            if submitted.is_dir() else []
    missing = [s for s in students if not (submitted / s / assignment).is_dir()]
    if missing:
        raise ValueError(f"students {missing} have no folder {submitted}/<student>/{assignment}")
    url = _db_url(course, config, db_url)
    work = Path(tempfile.mkdtemp(prefix=f"dgmcourse-grade-{assignment}-"))
    try:
        template = _template_gradebook(course, assignment, url, work)
        results = []
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(grade_submission, course, assignment, s, work / s, template,
                                   unsafe, limits): s for s in students}
            bar = tqdm(total=len(futures), desc=f"grading {assignment}", disable=not progress)
            for future in as_completed(futures):
                student = futures[future]
                try:
                    results.append(future.result())
                except Exception as err:  # noqa: BLE001 - a crashed job is one student's status
                    results.append({"student": student, "status": "error", "notebooks": {},
                                    "notes": [f"{type(err).__name__}: {err}"], "score": 0.0,
                                    "max_score": 0.0, "time_s": 0.0})
                bar.set_postfix_str(f"{student}: {results[-1]['status']}")
                bar.update()
            bar.close()
        results.sort(key=lambda r: r["student"])
        merge_results(course, assignment, results, url)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def format_table(results: list) -> str:
    """Per-student table: student, score, max, status, time and the first note."""
    rows = [("student", "score", "max", "status", "time", "notes")]
    for r in results:
        rows.append((r["student"], f"{r['score']:g}", f"{r['max_score']:g}", r["status"],
                     f"{r['time_s']:.1f}s", "; ".join(r["notes"])[:70]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def generate_feedback(course: str | Path, assignment: str, students: list | None = None,
                      db_url: str | None = None) -> None:
    """nbgrader's ``GenerateFeedback`` with hidden tests and mark schemes removed from the feedback.

    Writes ``feedback/STUDENT/ASSIGNMENT/*.html`` for each of ``students`` (default: every
    autograded student).

    Raises:
        ValueError: a student in ``students`` has no autograded submission of ``assignment``.
        nbgrader.converters.base.NbGraderException: nothing of ``assignment`` is autograded, or
            a notebook fails to convert.
    """
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme, GetGrades
    course = Path(course).resolve()
    config = _course_config(course)
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = _db_url(course, config, db_url)
    config.CourseDirectory.assignment_id = assignment
    config.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, ClearMarkScheme,
                                             CSSHTMLHeaderPreprocessor]
    coursedir = CourseDirectory(config=config)
    missing = [s for s in students or [] if not Path(coursedir.format_path(
        coursedir.autograded_directory, s, assignment)).is_dir()]
    if missing:
        raise ValueError(f"students: no autograded submission of {assignment} for {', '.join(missing)}")
    for student in students or ["*"]:
        config.CourseDirectory.student_id = student
        GenerateFeedback(coursedir=CourseDirectory(config=config), config=config).start()


if __name__ == "__main__" and WORKER_FLAG in sys.argv:
    _worker_main()
