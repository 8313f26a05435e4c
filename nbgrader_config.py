"""nbgrader configuration of the dgmcourse course directory (the repository root).

Instructors: `make release` regenerates assignments/ from solutions/; `make autograde` grades
submitted/<student>/<assignment>/ (see the README and docs/instructors.md).
"""

import os

c = get_config()  # noqa: F821 -- injected by traitlets when nbgrader loads this file

c.CourseDirectory.course_id = "dgmcourse"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"   # nbgrader source notebooks (full solutions, hidden tests)
c.CourseDirectory.release_directory = "assignments"  # what students get; committed, kept in sync by tests
# The gradebook lives next to this file and is ignored by git (.gitignore: gradebook.db).
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")

# Every route to a grade repairs the submission's cells against the release first (a copied test
# cell, metadata from another nbgrader version, edited points) ...
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "dgmcourse.grading.preprocessors.RepairCells",
    "nbgrader.preprocessors.OverwriteCells",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# ... and runs student code in the grading sandbox (bubblewrap, limits, signed
# verdicts): plain `nbgrader autograde` and the formgrader's Autograde button too, not only
# `dgmcourse grade`. SandboxedExecute takes the place of nbgrader's Execute; without bubblewrap
# it refuses to run (set c.SandboxedExecute.unsafe = True only on a machine you trust).
c.Autograde.autograde_preprocessors = [
    "dgmcourse.grading.preprocessors.SandboxedExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]
# Training cells need more than nbgrader's default 30 s per cell.
c.SandboxedExecute.timeout = 600
c.SandboxedExecute.cell_timeout = 300

# A local exchange (`make exchange`), so that the Assignments tab of `make lab` fetches and submits on
# a single machine. On JupyterHub, point it at the shared exchange instead (docs/instructors.md).
c.Exchange.root = os.path.join(c.CourseDirectory.root, "exchange")

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Feedback must not reveal hidden tests or the graders' mark schemes (rubrics of the written
# questions): nbgrader's default feedback would show both, since autograding restores them.
# RenderMath turns the TeX of markdown cells and grader comments into MathML, so feedback reads
# offline (nbgrader's feedback would load MathJax from a CDN).
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbgrader.preprocessors.ClearMarkScheme",
    "dgmcourse.grading.feedback.RenderMath",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
