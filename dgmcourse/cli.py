"""``dgmcourse`` command line: sandboxed parallel grading on top of nbgrader.

    dgmcourse grade ASSIGNMENT [--student ID ...] [--jobs N] [--db URL] [--unsafe]
    dgmcourse feedback ASSIGNMENT [--student ID ...] [--db URL]

``grade`` prints a per-student table (score, max, status, time, notes). The exit status is 0
when grading ran (whatever the students' statuses) and 2 when it was refused (no bubblewrap
without ``--unsafe``) or the arguments were invalid. See docs/instructors.md.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list | None = None) -> int:
    """Entry point; returns the process exit status (0 ok, 2 refused or bad arguments)."""
    from dgmcourse import grading
    parser = argparse.ArgumentParser(prog="dgmcourse", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="autograde submissions in sandboxed parallel jobs")
    g.add_argument("assignment")
    g.add_argument("--student", action="append", help="grade only this student (repeatable)")
    g.add_argument("--jobs", type=int, default=None, help="parallel jobs (default: CPU cores)")
    g.add_argument("--db", default=None, help="gradebook URL (default: course gradebook.db)")
    g.add_argument("--course-dir", default=os.getcwd(), help="course root (default: cwd)")
    g.add_argument("--unsafe", action="store_true",
                   help="grade without bubblewrap isolation (rlimits only)")
    g.add_argument("--timeout", type=float, default=grading.DEFAULT_LIMITS["wall_s"],
                   help="wall-time limit per notebook in seconds")
    g.add_argument("--memory", type=int, default=grading.DEFAULT_LIMITS["memory_mb"],
                   help="address-space limit per submission in MiB")
    g.add_argument("--no-progress", action="store_true")
    f = sub.add_parser("feedback", help="generate feedback without revealing hidden tests")
    f.add_argument("assignment")
    f.add_argument("--student", action="append")
    f.add_argument("--db", default=None)
    f.add_argument("--course-dir", default=os.getcwd())
    args = parser.parse_args(argv)
    try:
        if args.command == "grade":
            if args.unsafe:
                print("WARNING: --unsafe: student code runs WITHOUT isolation", file=sys.stderr)
            limits = {"wall_s": args.timeout, "cell_s": min(args.timeout,
                                                            grading.DEFAULT_LIMITS["cell_s"]),
                      "memory_mb": args.memory}
            results = grading.grade(args.course_dir, args.assignment, args.student, args.jobs,
                                    args.db, args.unsafe, limits, not args.no_progress)
            print(grading.format_table(results))
        else:
            grading.generate_feedback(args.course_dir, args.assignment, args.student, args.db)
    except (RuntimeError, ValueError) as err:
        print(f"dgmcourse: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
