"""Sandboxed, parallel, tamper-resistant autograding on top of nbgrader.

Every route to a grade runs student code in the same sandbox, with the same limits and the
same tamper-proof scoring: ``nbgrader_config.py`` registers the pipeline of
:mod:`~dgmcourse.grading.pipeline` -- :class:`RepairCells` among nbgrader's sanitize steps and
:class:`SandboxedExecute` in place of its ``Execute`` -- and sets the sandbox's limits
(``c.SandboxedExecute.memory_mb = 8192``), so plain ``nbgrader autograde`` and the formgrader's
*Autograde* button are repaired and sandboxed, and ``dgmcourse grade ASSIGNMENT`` (the fast,
parallel front door) runs nbgrader's ``Autograde`` with that same configuration
(:func:`course_config`, :func:`course_policy`; command-line flags override a limit only when
given) in one job per submission::

    submitted/<student>/<assignment>/*.ipynb
        -> repair_submission()  renamed, invalid or edited notebooks repaired or rejected (submissions)
        -> nbgrader Autograde   ClearOutput, DeduplicateIds, RepairCells, OverwriteCells, ..., its Execute
                                step replaced by SandboxedExecute (preprocessors)
        -> run_sandboxed()      bubblewrap, rlimits, signed verdicts (sandbox, harness)
        -> <job>/result.json    scores validated against the cells' points (runner)
    merge_results()             one step writes every result into the gradebook (runner)
    generate_feedback()         feedback without hidden tests or mark schemes (feedback)

Modules: :mod:`~dgmcourse.grading.harness` (runs inside the sandbox, standard library and
IPython only), :mod:`~dgmcourse.grading.sandbox` (:class:`Policy`, :class:`Status`,
:func:`run_sandboxed`), :mod:`~dgmcourse.grading.pipeline` (the preprocessor lists, the course's
configuration and limits), :mod:`~dgmcourse.grading.preprocessors` (nbgrader preprocessors),
:mod:`~dgmcourse.grading.submissions` (discovery and repair), :mod:`~dgmcourse.grading.runner`
(parallel jobs and the gradebook merge), :mod:`~dgmcourse.grading.feedback`.

Unforgeable verdicts
    A test cell scores only through a *signed verdict*: the sandboxed harness runs each test
    cell itself (not through IPython), after restoring the builtins, ``sys.modules`` and the
    dictionaries of every library module and class loaded before student code ran, and the
    names instructor cells bound to library objects. Inside test cells, comparisons and
    ``assert`` conditions refuse objects whose type was not loaded from the Python installation
    or the course library (``__eq__``-always-true objects, tensor subclasses). Any library
    attribute changed while a test cell runs voids that cell. The verdict is HMAC-signed by a
    Python audit hook whose key never appears in any object that student code can reach; the
    same hook blocks ``ctypes``, ``gc`` introspection, trace and profile hooks, ``__code__``
    replacement, new audit hooks, and frame introspection while a test cell runs. Saved outputs
    of test cells are rebuilt from the signed verdicts, so student stderr never costs points and
    forged outputs never earn any.

Names are loaded on first use, so the harness process (which imports this package) stays lean.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Policy": "sandbox", "Status": "sandbox", "run_sandboxed": "sandbox",
    "bwrap_available": "sandbox", "sandbox_argv": "sandbox", "trusted_roots": "sandbox",
    "library_root": "sandbox", "course_config": "pipeline", "course_policy": "pipeline",
    "repair_submission": "submissions", "repair_cells": "submissions",
    "RepairCells": "preprocessors", "SandboxedExecute": "preprocessors",
    "Result": "runner", "grade": "runner", "grade_submission": "runner", "merge_results": "runner",
    "format_table": "runner",
    "generate_feedback": "feedback", "RenderMath": "feedback",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dgmcourse.grading' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dgmcourse.grading.{_EXPORTS[name]}"), name)
