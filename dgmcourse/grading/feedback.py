"""Feedback for students: nbgrader's ``GenerateFeedback`` without hidden tests or mark schemes,
with the math of markdown rendered to MathML (:class:`RenderMath`) so that it reads offline."""

from __future__ import annotations

import html
import re
from pathlib import Path
from xml.etree.ElementTree import tostring
from xml.sax.saxutils import unescape

from nbgrader.preprocessors import NbGraderPreprocessor

from dgmcourse.grading.pipeline import course_config
from dgmcourse.grading.runner import db_url_of

# What may hold TeX in markdown, and what holds a ``$`` that is not math. Code comes first, so
# that math inside it is left alone; nothing but a fenced block spans a blank line (a paragraph
# break). Inline math follows Pandoc: no space just inside the dollars, no digit just after the
# closing one, so "$5 and $10" is not math.
_MATH = re.compile(r"""
      ^[ \t]*(?P<fence>`{3,}|~{3,}).*?(?:^[ \t]*(?P=fence)[`~]*[ \t]*$|\Z)    # fenced code block
    | (?P<ticks>`+)(?:(?!\n[ \t]*\n).)+?(?<!`)(?P=ticks)(?!`)                 # code span
    | \\[\\$]                                                                 # \$ or \\ (escaped)
    | \$\$(?P<display>(?:(?!\n[ \t]*\n).)+?)\$\$                               # $$display math$$
    | \$(?P<inline>[^\s$](?:(?:(?!\n[ \t]*\n)[^$])*?[^\s$\\])?)\$(?!\d)        # $inline math$
    """, re.VERBOSE | re.DOTALL | re.MULTILINE)
_TEXT = re.compile(r">([^<]+)<")   # the text of a MathML element (ElementTree escapes < and >)
# TeX that latex2mathml 3.81 lacks, in the equivalent form it has.
_TEX_ALIASES = [(re.compile(r"\\(begin|end)\{aligned\}"), r"\\\1{split}"),
                (re.compile(r"\\arg(?![A-Za-z])"), r"\\operatorname{arg}")]


def render_math(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    """Replace the TeX math of a markdown text by MathML, which browsers render without MathJax.

    ``$$...$$`` becomes ``<math display="block">`` and ``$...$`` ``<math display="inline">``
    (:func:`mathml`). Fenced code blocks, code spans, ``\\$`` and currency-like dollars are left
    as they are. Returns the new markdown and ``[(tex, reason)]`` for each expression that
    latex2mathml rejects or renders only in part; those keep their TeX. Raises nothing for bad
    TeX. Source: Pandoc's ``tex_math_dollars`` rule for what counts as inline math.
    """
    failures = []

    def replace(match: re.Match) -> str:
        tex = match["display"] or match["inline"]
        if tex is None:   # code or an escaped dollar
            return match[0]
        try:
            return mathml(tex, "inline" if match["inline"] else "block")
        except Exception as error:   # latex2mathml raises many types; feedback must still be written
            failures.append((match[0], f"{type(error).__name__}: {error}".rstrip(": ")))
            return match[0]

    return _MATH.sub(replace, markdown), failures


def mathml(tex: str, display: str) -> str:
    """The MathML of TeX math (without its dollars), ``display`` ``"inline"`` or ``"block"``.

    ``latex2mathml.converter``, with ``aligned`` read as the equivalent ``split``, ``\\arg`` as an
    operator name, and sized delimiters (``\\big\\|``) given their character. Every character of
    the text but letters, digits and spaces is written as a character reference, so the markdown
    renderer (nbconvert's mistune) reads none of it as markup (``*``, ``_``, ``$``) and
    ``\\text{<b>}`` stays text. Source: https://github.com/roniemartinez/latex2mathml

    Raises:
        ValueError: a command or ``&`` that latex2mathml leaves unconverted; latex2mathml's
            own exceptions for TeX it cannot parse.
    """
    from latex2mathml.converter import convert_to_element
    from latex2mathml.symbols_parser import convert_symbol
    for pattern, alias in _TEX_ALIASES:
        tex = pattern.sub(alias, tex)
    tree = convert_to_element(tex, display=display)
    for element in tree.iter():
        text = element.text or ""
        if text.startswith("\\") and convert_symbol(text):
            element.text = text = chr(int(convert_symbol(text), 16))
        if text == "&" or "\\" in text:
            raise ValueError(f"latex2mathml leaves {text} unconverted")
    return _TEXT.sub(lambda text: ">" + "".join(
        c if c.isalnum() or c == " " else f"&#{ord(c)};"
        for c in html.unescape(unescape(text[1]))) + "<", tostring(tree, encoding="unicode"))


class RenderMath(NbGraderPreprocessor):
    """Render the TeX math of markdown cells and grader comments to MathML (:func:`render_math`).

    nbgrader's feedback loads MathJax from a CDN, so offline its math showed as raw TeX;
    MathML needs no script (browsers, and JupyterLab's HTML viewer, render it natively). TeX that
    latex2mathml cannot convert is kept as it is, with a warning naming it; MathJax, where it
    loads, still typesets it. Raises nothing.
    """

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "markdown":
            cell.source = self._render(cell.source, index)
        grading = cell.metadata.get("nbgrader", {})
        if isinstance(grading.get("comment"), str):   # set by GetGrades, rendered as markdown
            grading["comment"] = self._render(grading["comment"], index)
        return cell, resources

    def _render(self, markdown: str, index: int) -> str:
        markdown, failures = render_math(markdown)
        for tex, reason in failures:
            self.log.warning("RenderMath: kept %s as TeX in cell %d (%s)", tex, index, reason)
        return markdown


def generate_feedback(course: str | Path, assignment: str, students: list | None = None,
                      db_url: str | None = None, allow_pending: bool = False) -> list[Path]:
    """nbgrader's ``GenerateFeedback`` with hidden tests and mark schemes removed from the feedback.

    Writes ``feedback/STUDENT/ASSIGNMENT/*.html`` for each of ``students`` (default: every
    autograded student) and returns the paths written. The steps are the course's
    ``GenerateFeedback.preprocessors`` (:func:`~dgmcourse.grading.pipeline.course_config`: by
    default :data:`~dgmcourse.grading.pipeline.FEEDBACK`), as for plain ``nbgrader generate_feedback``.

    Raises:
        ValueError: the folder is not a course directory, or its ``nbgrader_config.py`` fails;
            nothing of ``assignment`` is autograded; a student in ``students`` has no autograded
            submission; or written answers are still waiting for manual grading (they would be
            published as 0 points) and ``allow_pending`` is False.
    """
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    course = Path(course).resolve()
    if not (course / "nbgrader_config.py").is_file():
        raise ValueError(f"course_dir: {course} is not a course directory (no nbgrader_config.py)")
    config = course_config(course)
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = db_url_of(course, config, db_url)
    config.CourseDirectory.assignment_id = assignment
    coursedir = CourseDirectory(config=config)
    autograded = sorted(p.parent.name for p in Path(coursedir.root, coursedir.autograded_directory)
                        .glob(f"*/{assignment}") if p.is_dir())
    if not autograded:
        raise ValueError(f"nothing of {assignment} is autograded in "
                         f"{Path(coursedir.root, coursedir.autograded_directory)}: run "
                         f"`dgmcourse grade {assignment}` first")
    missing = [s for s in students or [] if s not in autograded]
    if missing:
        raise ValueError(f"students: no autograded submission of {assignment} for {', '.join(missing)}")
    chosen = list(students or autograded)
    pending = _pending_manual_grades(config.CourseDirectory.db_url, assignment, chosen)
    if pending and not allow_pending:
        raise ValueError(f"{sum(pending.values())} written answer(s) of {len(pending)} student(s) "
                         f"({', '.join(sorted(pending))}) still need manual grading in the formgrader; "
                         "their feedback would show 0 points (pass --allow-pending to publish anyway)")
    for student in chosen:
        config.CourseDirectory.student_id = student
        GenerateFeedback(coursedir=CourseDirectory(config=config), config=config).start()
    return sorted(p for student in chosen for p in
                  Path(coursedir.root, coursedir.feedback_directory, student, assignment).glob("*.html"))


def _pending_manual_grades(db_url: str, assignment: str, students: list) -> dict:
    """``{student: number of grades still needing a manual grade}`` (students with none left out)."""
    from nbgrader.api import Gradebook, MissingEntry
    pending = {}
    with Gradebook(db_url) as gb:
        for student in students:
            try:
                submission = gb.find_submission(assignment, student)
            except MissingEntry:
                continue
            count = sum(grade.needs_manual_grade for notebook in submission.notebooks
                        for grade in notebook.grades)
            if count:
                pending[student] = count
    return pending
