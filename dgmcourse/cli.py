"""``dgmcourse`` command line: sandboxed parallel grading on top of nbgrader.

    dgmcourse grade ASSIGNMENT [--student ID ...] [--jobs N] [--db URL] [--LIMIT VALUE ...] [--verbose]
    dgmcourse feedback ASSIGNMENT [--student ID ...] [--db URL] [--allow-pending]

``grade`` prints a per-student table (score, max, status, time, notes) and writes
``grading-report-ASSIGNMENT.csv``/``.json`` and ``grading-logs/ASSIGNMENT/`` in the course;
``feedback`` prints the files it wrote. The sandbox's limits are the ``SandboxedExecute``
settings of the course's ``nbgrader_config.py`` (or their defaults); a limit flag (``--timeout``,
``--memory-mb``, ..., ``--unsafe``) overrides one for this run only, and ``dgmcourse grade --help``
shows each limit's value and where it comes from. The exit status is 0 when grading ran (whatever
the students' statuses) and 2, with a one-line error, when it was refused (no bubblewrap without
``--unsafe``, written answers not yet graded) or the input was wrong (a bad flag or limit, not a
course directory, no such assignment, not released, no submissions). See docs/instructors.md.
"""

from __future__ import annotations

import argparse
import os
import sys


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``dgmcourse grade: error: ...``, exit 2), without the usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(kind):
    """argparse type: a positive ``kind`` (int or float)."""
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names it in "invalid int value"
    return parse


def _course_dir(argv: list) -> str:
    """The ``--course-dir`` of ``argv`` (default: the working directory), read before the full parse."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--course-dir", default=os.getcwd())
    try:
        return pre.parse_known_args(argv)[0].course_dir
    except argparse.ArgumentError:  # e.g. --course-dir without a value: the full parse says so
        return os.getcwd()


def _add_limits(parser, limits: dict) -> None:
    """One flag per sandbox limit, default None ("not given"), its help showing the course's value."""
    from traitlets import Float

    from dgmcourse.grading.preprocessors import SandboxedExecute
    traits = SandboxedExecute.class_traits()
    for name, (value, source) in limits.items():
        now = f"{value:g}" if not isinstance(value, bool) else str(value)
        text = f"{traits[name].help}. Now {now}, from {source} (c.SandboxedExecute.{name})"
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            kind = float if isinstance(traits[name], Float) else int
            parser.add_argument(flag, type=_positive(kind), default=None, metavar=kind.__name__.upper(),
                                help=text)


def main(argv: list | None = None) -> int:
    """Entry point; returns the process exit status (0 ok, 2 refused or bad arguments)."""
    from importlib.metadata import version

    from nbgrader.converters.base import NbGraderException

    from dgmcourse import grading
    from dgmcourse.grading.preprocessors import POLICY_TRAITS
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _Parser(prog="dgmcourse", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"dgmcourse {version('dgmcourse')}")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grade", help="autograde submissions in sandboxed parallel jobs")
    g.add_argument("assignment")
    g.add_argument("--student", action="append", help="grade only this student (repeatable)")
    g.add_argument("--jobs", type=int, default=None, help="parallel jobs (default: CPU cores)")
    g.add_argument("--db", default=None, help="gradebook URL (default: the course's gradebook.db)")
    g.add_argument("--course-dir", default=os.getcwd(), help="course root (default: the working directory)")
    if argv[:1] == ["grade"]:  # the limits' help shows the course's values: read them only for `grade`
        try:
            _add_limits(g, grading.course_policy(_course_dir(argv))[1])
        except ValueError as err:
            print(f"dgmcourse: {err}", file=sys.stderr)
            return 2
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--verbose", action="store_true", help="print every note in full")
    f = sub.add_parser("feedback", help="generate feedback without revealing hidden tests")
    f.add_argument("assignment")
    f.add_argument("--student", action="append", help="only this student (repeatable)")
    f.add_argument("--db", default=None, help="gradebook URL (default: the course's gradebook.db)")
    f.add_argument("--course-dir", default=os.getcwd(), help="course root (default: the working directory)")
    f.add_argument("--allow-pending", action="store_true",
                   help="publish feedback although written answers still need manual grading")
    args = parser.parse_args(argv)
    try:
        if args.command == "grade":
            policy, limits = grading.course_policy(args.course_dir, {name: getattr(args, name)
                                                                     for name in POLICY_TRAITS})
            if policy.unsafe:
                print(f"WARNING: unsafe ({limits['unsafe'][1]}): student code runs WITHOUT isolation",
                      file=sys.stderr)
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
