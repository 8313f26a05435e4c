"""nbgrader configuration of the dgmcourse course directory (the repository root).

Instructors: `make release` regenerates assignments/ from solutions/; `make autograde` grades
submitted/<student>/<assignment>/ (see the README and docs/instructors.md).
"""

import os

from dgmcourse.grading import pipeline

c = get_config()  # noqa: F821 -- injected by traitlets when nbgrader loads this file

c.CourseDirectory.course_id = "dgmcourse"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.source_directory = "solutions"   # nbgrader source notebooks (full solutions, hidden tests)
c.CourseDirectory.release_directory = "assignments"  # what students get; committed, kept in sync by tests
# The gradebook lives next to this file and is ignored by git (.gitignore: gradebook.db).
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(c.CourseDirectory.root, "gradebook.db")

# The grading pipeline, the same for every route -- `dgmcourse grade`, plain `nbgrader autograde`, the
# formgrader's buttons, `dgmcourse feedback` and `nbgrader generate_feedback` (the lists and why:
# dgmcourse/grading/pipeline.py). Autograding repairs the submission's cells against the release first
# (RepairCells), then runs student code in the grading sandbox: SandboxedExecute takes the place of
# nbgrader's Execute. Feedback shows no hidden tests and no mark schemes, and renders its math to MathML.
c.Autograde.sanitize_preprocessors = pipeline.SANITIZE
c.Autograde.autograde_preprocessors = pipeline.AUTOGRADE
c.GenerateFeedback.preprocessors = pipeline.FEEDBACK

# The sandbox's limits hold on every route; set one here to change it, e.g.
#   c.SandboxedExecute.memory_mb = 8192      # private memory (RLIMIT_DATA), MiB
# Settings: timeout (wall time of one notebook, s), cell_timeout (s), memory_mb, fsize_mb (largest file,
# MiB), nofile (open files), nproc_extra, processes, output_chars, unsafe (no bubblewrap: only on a machine
# you trust). `dgmcourse grade --help` shows each one's value here and where it comes from; flags of
# `dgmcourse grade` (e.g. --memory-mb) override them for one run.

# A local exchange (`make exchange`), so that the Assignments tab of `make lab` fetches and submits on
# a single machine. On JupyterHub, point it at the shared exchange instead (docs/instructors.md).
c.Exchange.root = os.path.join(c.CourseDirectory.root, "exchange")

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
