"""nbgrader preprocessors that repair submissions and run student code in the sandbox.

``nbgrader_config.py`` puts :class:`RepairCells` in ``Autograde.sanitize_preprocessors`` and
:class:`SandboxedExecute` in place of nbgrader's ``Execute`` in
``Autograde.autograde_preprocessors`` (the lists of :mod:`~dgmcourse.grading.pipeline`), so every
route to a grade -- ``dgmcourse grade``, plain ``nbgrader autograde`` and the formgrader's
*Autograde* button -- repairs cells the same way and executes submissions in the same sandbox with
the same limits (``c.SandboxedExecute.<setting>``, :data:`POLICY_TRAITS`) and the same tamper-proof
scoring (shaped like nbgrader's own ``OverwriteCells`` and ``Execute`` in ``nbgrader/preprocessors/``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import nbformat
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Float, Integer, TraitError, Unicode, validate

from dgmcourse.grading.sandbox import Policy, Status, run_sandboxed
from dgmcourse.grading.submissions import repair_cells

_DEFAULT = Policy()
# The settings of SandboxedExecute that make up a Policy: {setting: Policy field}.
POLICY_TRAITS = {"timeout": "wall_s", "cell_timeout": "cell_s", "memory_mb": "memory_mb",
                 "fsize_mb": "fsize_mb", "nofile": "nofile", "nproc_extra": "nproc_extra",
                 "processes": "processes", "output_chars": "output_chars", "unsafe": "unsafe"}


def cell_kind(cell) -> str:
    """``"test"`` (autograder tests), ``"instructor"`` (other locked cells) or ``"student"``."""
    meta = cell.metadata.get("nbgrader", {})
    if meta.get("grade") and not meta.get("solution"):
        return "test"
    if meta.get("locked") and not meta.get("solution"):
        return "instructor"
    return "student"


class RepairCells(NbGraderPreprocessor):
    """Give a submission's cells the release's nbgrader metadata (:func:`repair_cells`).

    Runs before nbgrader's ``OverwriteCells`` in ``Autograde.sanitize_preprocessors``: a copied
    test cell (a repeated ``grade_id``), metadata from a future nbgrader, edited points or a test
    cell turned into markdown would otherwise make nbgrader reject the whole notebook or grade
    it with the student's metadata. The release notebook is
    ``<release_directory>/<assignment>/<notebook>.ipynb`` of the course directory; when it is
    absent only nbgrader's own checks run, and a warning says so.
    """

    def preprocess(self, nb, resources):
        from nbgrader.coursedir import CourseDirectory
        ids = resources.get("nbgrader", {})
        coursedir = CourseDirectory(config=self.config)
        release = Path(coursedir.format_path(coursedir.release_directory, ".", ids.get("assignment", ""))) \
            / f"{ids.get('notebook', '')}.ipynb"
        if not release.is_file():
            self.log.warning("RepairCells: no release notebook %s; cells are not repaired", release)
            return nb, resources
        for note in repair_cells(nb, nbformat.read(release, as_version=4)):
            self.log.warning("%s/%s: %s", ids.get("student"), ids.get("notebook"), note)
        return nb, resources


class SandboxedExecute(NbGraderPreprocessor):
    """Execute a notebook with :func:`dgmcourse.grading.sandbox.run_sandboxed`.

    Replaces nbgrader's ``Execute`` in ``Autograde.autograde_preprocessors``. Student and
    instructor cells get the outputs the harness recorded (untrusted, capped); test cells get
    outputs rebuilt from the signed verdicts only, so nbgrader's ``SaveAutoGrades`` scores
    exactly what the verdicts say. The run's status is written to ``<job_dir>/run-<name>.json``
    and its log kept next to it; without ``job_dir`` (plain ``nbgrader autograde``) a temporary
    folder is used and a run that did not end normally is logged as a warning.

    The limits (:data:`POLICY_TRAITS`) are configurable like any nbgrader setting
    (``c.SandboxedExecute.memory_mb = 8192`` in ``nbgrader_config.py``); their defaults are
    those of :class:`~dgmcourse.grading.sandbox.Policy`.

    Raises:
        RuntimeError: bubblewrap is unavailable and ``unsafe`` is False.
        traitlets.TraitError: a limit set to something other than a positive number.
    """

    job_dir = Unicode("", help="Folder for this submission's sandbox and its log "
                               "(default: a temporary folder)").tag(config=True)
    unsafe = Bool(_DEFAULT.unsafe, help="Run student code WITHOUT bubblewrap (rlimits only)").tag(config=True)
    timeout = Float(_DEFAULT.wall_s, help="Wall-time limit of one notebook, seconds (the sandbox is "
                                          "killed)").tag(config=True)
    cell_timeout = Float(_DEFAULT.cell_s, help="Time limit of one cell, seconds (the cell fails, the "
                                               "notebook goes on)").tag(config=True)
    memory_mb = Integer(_DEFAULT.memory_mb, help="Private memory limit (RLIMIT_DATA), MiB").tag(config=True)
    fsize_mb = Integer(_DEFAULT.fsize_mb, help="Largest file student code may write, MiB").tag(config=True)
    nofile = Integer(_DEFAULT.nofile, help="Open files").tag(config=True)
    nproc_extra = Integer(_DEFAULT.nproc_extra, help="Tasks the sandbox's user may start beyond "
                                                     "those running (RLIMIT_NPROC)").tag(config=True)
    processes = Integer(_DEFAULT.processes, help="Processes in the sandbox before it is killed").tag(config=True)
    output_chars = Integer(_DEFAULT.output_chars, help="Characters kept of each output").tag(config=True)

    @validate(*(name for name in POLICY_TRAITS if name != "unsafe"))
    def _positive(self, proposal):
        if not proposal.value > 0:
            raise TraitError(f"SandboxedExecute.{proposal.trait.name} must be a positive number, "
                             f"got {proposal.value!r}")
        return proposal.value

    @property
    def policy(self) -> Policy:
        """The limits these settings give (the cell limit at most the notebook's)."""
        fields = {field: getattr(self, name) for name, field in POLICY_TRAITS.items()}
        return Policy(**{**fields, "cell_s": min(self.cell_timeout, self.timeout)})

    def preprocess(self, nb, resources):
        job = Path(self.job_dir) if self.job_dir else Path(tempfile.mkdtemp(prefix="dgmcourse-sandbox-"))
        source_dir = Path(resources.get("metadata", {}).get("path") or ".").resolve()
        name = Path(resources.get("unique_key", "notebook")).name
        work = job / "sandbox"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(source_dir, work, ignore=shutil.ignore_patterns("*.ipynb"), symlinks=False)
        code = [c for c in nb.cells if c.cell_type == "code"]
        cells = [{"kind": cell_kind(c), "source": c.source,
                  "grade_id": c.metadata.get("nbgrader", {}).get("grade_id")} for c in code]
        run = run_sandboxed(cells, work, self.policy)
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
        log = job / f"sandbox-{name}.log"
        if (job / "sandbox.log").is_file():
            (job / "sandbox.log").replace(log)
        library = [f"{gid}: {v['message'].split(': ', 1)[-1]}" for gid, v in run["verdicts"].items()
                   if str(v.get("message", "")).startswith("LibraryAnswer")]
        (job / f"run-{name}.json").write_text(json.dumps(
            {"status": run["status"], "detail": run["detail"], "time_s": run["time_s"],
             "log": str(log), "library_answers": library}))
        for note in library:
            self.log.warning("%s: %s", name, note)
        if run["status"] != Status.OK:
            self.log.warning("sandbox: %s: %s: %s (log: %s)", name, run["status"], run["detail"], log)
        shutil.rmtree(work, ignore_errors=True)
        return nb, resources


def _verdict_outputs(verdict, run) -> list:
    """Outputs of a test cell from its signed verdict (None: the cell never finished)."""
    if verdict is None or not verdict.get("passed"):
        message = (verdict or {}).get("message") or f"no verdict ({run['status']}: {run['detail']})"
        ename = message.split(":", 1)[0] if verdict else "GradingError"
        return [nbformat.v4.new_output("error", ename=ename, evalue=message, traceback=[message])]
    if isinstance(verdict.get("score"), (int, float)):
        return [nbformat.v4.new_output("execute_result", data={"text/plain": repr(verdict["score"])})]
    return []


def _valid_outputs(outputs) -> list:
    """Rebuild the harness's (untrusted) outputs as nbformat v4 outputs; drop anything else."""
    new, kept = nbformat.v4.new_output, []

    def strings(d) -> bool:
        return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in d.items())

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
