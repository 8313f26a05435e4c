"""The grading harness: runs inside the sandbox, imports only the standard library and IPython.

``python -I .../dgmcourse/grading/harness.py`` reads one job on stdin (the cells, a fresh HMAC
key, the limits, the folder of the ``dgmcourse`` package the grader imported, which it imports
from there), runs instructor and student cells in an IPython shell, runs each test
cell itself in a restored, hardened namespace, and writes one HMAC-signed verdict per test cell
to file descriptor 3 (:data:`VERDICT_FD`). Outputs go to ``outputs.json`` (untrusted). See
:mod:`dgmcourse.grading` for the protections and :func:`dgmcourse.grading.sandbox.run_sandboxed`
for the side that starts it and checks the signatures.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import os
import re
import signal
import sys

VERDICT_FD = 3
# A test cell may name the course library's own implementation of the task it grades:
#   # Not an answer: dgmcourse.vae.elbo
# A student function that calls it (directly, through an alias, importlib or a copied function
# object: the code object is what counts) fails that test cell.
NOT_AN_ANSWER = re.compile(r"^# Not an answer: (.+)$", re.M)
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals",
                          "f_locals", "gi_code", "cr_code"})
_ALWAYS_BLOCKED = ("ctypes.", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                   "sys.settrace", "sys.setprofile", "sys.addaudithook", "sys._current_frames",
                   "cffi.")
_TEST_FILENAME = "<dgmcourse-test>"
# Forward-mode autodiff in a cell (student, instructor or test), or dgmcourse.geometry, which uses it
FORWARD_AD = re.compile(r"jvp|jacfwd|hessian|forward_ad|forward-mode|linearize|geometry")


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
    library module, which may load shared libraries). Frame objects are refused to student code
    (``sys._getframe``, ``tb_frame``, ``gi_frame``... requested by student code or a library
    function it called directly, or by anything while student code runs inside a test cell): from a
    frame, ``f_back`` leads to the harness.
    """
    import _thread
    getframe, write, main_ident = sys._getframe, os.write, _thread.get_ident()
    getpid, main_pid = os.getpid, os.getpid()
    get_ident, digest_fn, dumps = _thread.get_ident, hmac.digest, json.dumps
    trusted = trusted_roots + ("<frozen ",)
    state = {"next": 0, "busy": False, "tampered": False, "library": ""}

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
            if event == "dgmcourse.library":
                state["library"] = state["library"] or str(args[0])
            elif event == "dgmcourse.verdict":
                index, grade_id, digest, passed, score, message = args
                if state["library"]:
                    passed, message = False, (f"LibraryAnswer: the answer calls {state['library']}, "
                                              "the course library's own implementation of this "
                                              "task: not an answer, no points")
                    state["library"] = ""
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
        namespace = cls.__dict__
        for key, value in items:
            if namespace.get(key, _restore) is not value:
                try:
                    setattr(cls, key, value)
                    changed.append(f"{cls.__qualname__}.{key}")
                except (TypeError, AttributeError):
                    pass
        if len(namespace) == len(items):  # every original key is back: nothing was added
            continue
        original = dict(items)
        for key in [k for k in list(namespace) if k not in original and k.startswith("__")]:
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

def reference_names(source: str) -> list[str]:
    """Qualified names a test cell's ``# Not an answer:`` lines give, e.g. ``dgmcourse.vae.elbo``."""
    return [name.strip() for line in NOT_AN_ANSWER.findall(source) for name in line.split(",")
            if name.strip()]


def _unwrapped(value) -> list:
    """``value`` and the functions it wraps through ``__wrapped__`` (``functools.wraps``, e.g.
    ``@torch.no_grad()``), outermost first; only plain functions are followed."""
    import types
    chain = [value]
    while type(chain[-1]) is types.FunctionType and len(chain) < 16 and \
            type(chain[-1].__dict__.get("__wrapped__")) is types.FunctionType:
        chain.append(chain[-1].__dict__["__wrapped__"])
    return chain


def _reference_codes(source: str) -> tuple[dict, frozenset]:
    """``({code object: name}, wrapper codes)`` of the library functions the test cell names
    (see NOT_AN_ANSWER). The codes are those of the undecorated functions: a decorator's code
    (``torch.no_grad``'s ``decorate_context``) is shared with every function it decorates,
    students' own included, so it is only skipped when looking for the caller."""
    codes, wrappers = {}, set()
    for name in reference_names(source):
        try:
            value = _resolve(name)
        except (ImportError, AttributeError):
            continue
        # a class stands for the methods it defines (e.g. a layer's forward and inverse)
        members = [(f"{name}.{key}", member) for key, member in vars(value).items()] \
            if isinstance(value, type) else [(name, value)]
        for label, member in members:
            chain = _unwrapped(member)
            code = getattr(chain[-1], "__code__", None)
            if code is not None:
                codes[code] = label
                wrappers.update(f.__code__ for f in chain[:-1])
        module_class = getattr(sys.modules.get("torch.nn"), "Module", None)
        if isinstance(value, type) and module_class is not None and issubclass(value, module_class):
            # layer(x) reaches forward through nn.Module's call machinery: look past it for the caller
            wrappers.update(f.__code__ for f in (module_class._call_impl, module_class._wrapped_call_impl))
    return codes, frozenset(wrappers)


def _resolve(name: str):
    """The object a qualified name gives: the longest importable module prefix, then attributes
    (``dgmcourse.vae.elbo``, ``dgmcourse.flows.AffineCoupling.forward``)."""
    import importlib
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            value = getattr(value, attr)
        return value
    raise ImportError(f"no module in {name}")


def _aliases(tree, namespace: dict, bindings: dict, codes: dict) -> list:
    """Names the test reads that the student bound to a library answer (an alias, a copied
    function object or a ``functools.partial`` of one): calls of those come from the test
    cell itself, so the profiler alone would not see them."""
    import functools
    import types
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in namespace and node.id not in bindings:
            value = namespace[node.id]
            if type(value) is functools.partial:
                value = value.func
            if type(value) is types.MethodType:  # a bound method of a library class
                value = value.__func__
            value = _unwrapped(value)[-1]
            if type(value) is types.FunctionType and value.__code__ in codes:
                found.append(codes[value.__code__])
    return found


def _library_profiler(codes: dict, wrappers: frozenset, trusted: tuple, audit):
    """Profile function reporting (audit event ``dgmcourse.library``) a call of one of ``codes``
    whose caller, past the decorators' ``wrappers`` frames, is student code; the guard then
    fails the test cell's verdict."""
    def profiler(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            caller = frame.f_back
            while caller is not None and caller.f_code in wrappers:
                caller = caller.f_back
            name = caller.f_code.co_filename if caller is not None else "<dgmcourse-test>"
            if name != "<dgmcourse-test>" and not name.startswith(trusted):  # _TEST_FILENAME
                audit("dgmcourse.library", codes[frame.f_code])
    return profiler


def _run_test_cell(index, grade_id, source, shell, snapshot, restore, bindings, checks,
                   transform, trusted):
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
        codes, wrappers = _reference_codes(source)
        for name in _aliases(tree, namespace, bindings, codes):
            sys.audit("dgmcourse.library", name)
        profiler = _library_profiler(codes, wrappers, trusted, sys.audit) if codes else None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.setprofile(profiler)
            try:
                exec(compile(tree, _TEST_FILENAME, "exec", dont_inherit=True, optimize=0), namespace)
                if last is not None:
                    expr = ast.fix_missing_locations(ast.Expression(_HardenTests().visit(last.value)))
                    value = eval(compile(expr, _TEST_FILENAME, "eval", dont_inherit=True), namespace)
                    if type(value) in (int, float) and value == value:
                        score = float(value)
            finally:
                intact = sys.getprofile() is profiler and (profiler is None or all(
                    cell.cell_contents is {"codes": codes, "wrappers": wrappers, "trusted": trusted,
                                          "audit": sys.audit}[name]
                    for name, cell in zip(profiler.__code__.co_freevars, profiler.__closure__)))
                sys.setprofile(None)
        if not intact:
            raise Tampering("the check for library answers was tampered with")
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

def _import_library(root: str) -> None:
    """Import ``dgmcourse`` and ``dgmcourse.grading`` from ``root``, the folder the grader imported
    the package from, without putting ``root`` on ``sys.path``: in the sandbox that folder may lie
    in the writable ``/tmp``, where student code could otherwise shadow modules imported later.

    Raises:
        ModuleNotFoundError: ``root`` holds no ``dgmcourse``; whatever the package raises on import.
    """
    import importlib.machinery
    import importlib.util
    spec = importlib.machinery.PathFinder.find_spec("dgmcourse", [root])
    if spec is None:
        raise ModuleNotFoundError(f"No module named 'dgmcourse' in {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dgmcourse"] = module
    spec.loader.exec_module(module)
    import dgmcourse.grading  # noqa: F401 - this harness's package, as `-m` imported it before

def main() -> None:
    """Harness inside the sandbox: read the job on stdin, run cells, sign test verdicts.

    Input (stdin, JSON): ``{"key": hex, "cells": [{"kind": "student"|"instructor"|"test",
    "source": str, "grade_id": str|None}], "preimport": [module names], "cell_s": float,
    "output_chars": int, "trusted_roots": [str], "library_root": str}``. Outputs of every cell go
    to ``outputs.json`` in the working directory (untrusted); signed verdicts to fd 3. When
    ``dgmcourse`` cannot be imported from ``library_root``, no cell runs: a signed
    ``{"kind": "failed", "detail": "sandbox could not import dgmcourse: ..."}`` is the only line.
    """
    job = json.loads(sys.stdin.read())
    os.close(0)
    key = bytes.fromhex(job.pop("key"))
    roots = tuple(job["trusted_roots"])
    try:
        _import_library(job["library_root"])
    except Exception as err:  # noqa: BLE001 - any failure means no notebook can run here
        payload = {"kind": "failed", "detail": " ".join(
            f"sandbox could not import dgmcourse: {type(err).__name__}: {err}".split())}
        line = json.dumps(payload, sort_keys=True)
        mac = hmac.digest(key, line.encode(), "sha256").hex()
        os.write(VERDICT_FD, (json.dumps({"payload": payload, "mac": mac}) + "\n").encode())
        os._exit(1)
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
    _warm_up_torch(forward_ad=any(FORWARD_AD.search(c["source"]) for c in job["cells"]))
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
    setitimer, set_handler, audit, dump, getpid, exit_, streams = (
        signal.setitimer, signal.signal, sys.audit, json.dump, os.getpid, os._exit,
        (sys.stdout, sys.stderr))
    _install_guard(key, VERDICT_FD, tests, roots, run_test.__code__, main.__code__)
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
                                   restore, bindings, checks, transform, roots + ("<frozen ",))
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
    # Skip interpreter shutdown (about 1 s with torch loaded, and atexit handlers student code
    # may have registered): everything the grader reads is written.
    for stream in streams:
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or replaced stream changes nothing here
            pass
    exit_(0)

def _warm_up_torch(forward_ad: bool = True) -> None:
    """Run once, before student code, what torch sets up lazily.

    Each optimiser class wraps its ``step`` on first construction: done inside a test cell, the
    check that no library object changed while the test ran would take it for tampering. On
    first use ``torch.func`` (``vmap``, ``jacrev``, ``jacfwd``) and the vectorised
    ``torch.autograd.functional.jacobian`` register operator libraries through
    ``torch.library.Library``, which reads ``sys._getframe``. Inside a test cell, with student
    code on the stack, the guard refuses frame requests, so a correct answer built on them
    would fail; done here, the registration is over before any student code runs. Forward mode
    (``jvp``, ``jacfwd``) first compiles its decompositions with ``torch.jit.script`` (0.3 s):
    done only when ``forward_ad`` (a cell's source names forward mode, see :data:`FORWARD_AD`).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    parameter = torch.nn.Parameter(torch.zeros(1))
    for name in dir(torch.optim):  # an optimiser class installs its step hook on first use
        kind = getattr(torch.optim, name)
        if isinstance(kind, type) and issubclass(kind, torch.optim.Optimizer) and kind is not torch.optim.Optimizer:
            try:
                kind([parameter], lr=1e-3)
            except (TypeError, ValueError, RuntimeError):
                pass
    x = torch.zeros(2, dtype=torch.float64)
    torch.func.vmap(torch.func.jacrev(torch.sin))(x[:, None])
    if forward_ad:
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


if __name__ == "__main__":
    main()
