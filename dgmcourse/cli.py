"""``dgmcourse`` command line: sandboxed parallel grading on top of nbgrader.

    dgmcourse grade ASSIGNMENT [--student ID ...] [--jobs N] [--db URL] [--unsafe] [--verbose]
    dgmcourse feedback ASSIGNMENT [--student ID ...] [--db URL] [--allow-pending]

``grade`` prints a per-student table (score, max, status, time, notes) and writes
``grading-report-ASSIGNMENT.csv``/``.json`` and ``grading-logs/ASSIGNMENT/`` in the course;
``feedback`` prints the files it wrote. The exit status is 0 when grading ran (whatever the
students' statuses) and 2, with a one-line error, when it was refused (no bubblewrap without
``--unsafe``, written answers not yet graded) or the input was wrong (not a course directory, no
such assignment, not released, no submissions). See docs/instructors.md.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list | None = None) -> int:
    """Entry point; returns the process exit status (0 ok, 2 refused or bad arguments)."""
    from importlib.metadata import version

    from nbgrader.converters.base import NbGraderException

    from dgmcourse import grading
    defaults = grading.Policy()
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="dgmcourse", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"dgmcourse {version('dgmcourse')}")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="autograde submissions in sandboxed parallel jobs",
                       formatter_class=formatter)
    g.add_argument("assignment")
    g.add_argument("--student", action="append", help="grade only this student (repeatable)")
    g.add_argument("--jobs", type=int, default=None, help="parallel jobs (default: CPU cores)")
    g.add_argument("--db", default=None, help="gradebook URL (default: course gradebook.db)")
    g.add_argument("--course-dir", default=os.getcwd(), help="course root (default: cwd)")
    g.add_argument("--unsafe", action="store_true",
                   help="grade without bubblewrap isolation (rlimits only)")
    g.add_argument("--timeout", type=float, default=defaults.wall_s,
                   help="wall-time limit per notebook in seconds")
    g.add_argument("--memory", type=int, default=defaults.memory_mb,
                   help="private memory limit (RLIMIT_DATA) per submission in MiB")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--verbose", action="store_true", help="print every note in full")
    f = sub.add_parser("feedback", help="generate feedback without revealing hidden tests",
                       formatter_class=formatter)
    f.add_argument("assignment")
    f.add_argument("--student", action="append")
    f.add_argument("--db", default=None)
    f.add_argument("--course-dir", default=os.getcwd())
    f.add_argument("--allow-pending", action="store_true",
                   help="publish feedback although written answers still need manual grading")
    args = parser.parse_args(argv)
    try:
        if args.command == "grade":
            if args.unsafe:
                print("WARNING: --unsafe: student code runs WITHOUT isolation", file=sys.stderr)
            policy = grading.Policy(wall_s=args.timeout, cell_s=min(args.timeout, defaults.cell_s),
                                    memory_mb=args.memory, unsafe=args.unsafe)
            results = grading.grade(args.course_dir, args.assignment, args.student, args.jobs,
                                    args.db, policy, not args.no_progress)
            print(grading.format_table(results, verbose=args.verbose))
            print(f"report: grading-report-{args.assignment}.csv, sandbox logs: "
                  f"grading-logs/{args.assignment}/", file=sys.stderr)
        else:
            written = grading.generate_feedback(args.course_dir, args.assignment, args.student,
                                                args.db, args.allow_pending)
            for path in written:
                print(f"wrote {path}")
    except (RuntimeError, ValueError, NbGraderException) as err:
        print(f"dgmcourse: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
