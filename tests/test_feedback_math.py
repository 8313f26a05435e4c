"""Feedback renders math offline: RenderMath turns the TeX of markdown cells into MathML when
feedback is written (no MathJax, no network), leaves code and currency alone, and never crashes
on TeX that latex2mathml rejects."""

import html
import logging
import re
from pathlib import Path

import nbformat
import pytest
from nbconvert.filters.markdown_mistune import markdown2html_mistune
from traitlets.utils.importstring import import_item

from dgmcourse import grading
from dgmcourse.grading.feedback import RenderMath, render_math
from dgmcourse.grading.runner import course_config
from test_grading_support import visible_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("assignments/*/*.ipynb")) + sorted(ROOT.glob("lectures/*.ipynb"))
MATH = re.compile(r"<math\b[^>]*>.*?</math>", re.S)


def _markdown_cells(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


def _without_code(page: str) -> str:
    """An HTML page without its <code> and <pre> elements (code keeps its dollars)."""
    return re.sub(r"<(code|pre)\b.*?</\1>", "", page, flags=re.S)


# --- render_math on small markdown ---------------------------------------------------------------
def test_inline_and_display_math_become_mathml():
    out, failures = render_math(r"Half is $\frac{1}{2}$, and $$x_i^2 + \mathbb{E}_{q}[\log p(x|z)]$$ ends.")
    assert failures == []
    inline, display = MATH.findall(out)
    assert out.startswith("Half is <math") and out.endswith("</math> ends.") and "$" not in out
    assert 'display="inline"' in inline and 'display="block"' in display
    assert "<mfrac><mrow><mn>1</mn></mrow><mrow><mn>2</mn></mrow></mfrac>" in inline
    assert "<msubsup><mi>x</mi><mi>i</mi><mn>2</mn></msubsup>" in display
    assert "<mi>log</mi>" in display and "\U0001d53c" in display                    # 𝔼
    assert html.unescape(re.sub(r"<[^>]+>", "", display)) == "xi2+\U0001d53cq[logp(x|z)]"


def test_code_escaped_dollars_and_currency_are_left_alone():
    text = ("Call `f($x$)` or ``g(`$y$`)``.\n\n```python\nplt.title(r\"$\\mu$\")\n```\n\n"
            "~~~\n$z$\n~~~\nIt costs \\$5 per $\\alpha$; or $5 and $10, or 5 $ each.\n\n"
            "Paragraphs: $3.\n\nNo math across them, x$.\n")
    out, failures = render_math(text)
    assert failures == []
    assert len(MATH.findall(out)) == 1                                               # only $\alpha$
    assert out == text.replace("$\\alpha$", MATH.findall(out)[0])
    assert "<mi>\u03b1</mi>" in out


def test_rejected_tex_stays_as_tex_and_is_reported():
    text = r"Bad $x^$ and $\notacommand{y}$ and $\begin{aligned} a &= b\end{aligned}$ and good $y_1$."
    out, failures = render_math(text)
    assert [tex for tex, _ in failures] == ["$x^$", r"$\notacommand{y}$"]
    assert "MissingSuperScriptOrSubscriptError" in failures[0][1]
    assert r"\notacommand" in failures[1][1]
    assert out.startswith(r"Bad $x^$ and $\notacommand{y}$ and <math")               # aligned converts
    assert "<mtable" in out and "<msub><mi>y</mi><mn>1</mn></msub>" in out
    assert "&#38;" not in out                                                        # no stray &


def test_preprocessor_logs_a_warning_naming_the_expression(caplog):
    log = logging.getLogger("test_feedback_math")
    cell = nbformat.v4.new_markdown_cell(r"Fine $a$, broken $x^$.")
    cell.metadata["nbgrader"] = {"comment": r"See $\frac{1}{2}$."}
    code = nbformat.v4.new_code_cell("print('$x$')")
    with caplog.at_level(logging.WARNING, logger="test_feedback_math"):
        cell, _ = RenderMath(log=log).preprocess_cell(cell, {}, 3)
        code, _ = RenderMath(log=log).preprocess_cell(code, {}, 4)
    assert cell.source.startswith("Fine <math") and cell.source.endswith(", broken $x^$.")
    assert "<mfrac>" in cell.metadata.nbgrader.comment                              # grader comments too
    assert code.source == "print('$x$')"                                             # code cells untouched
    assert [r.getMessage() for r in caplog.records] == [
        "RenderMath: kept $x^$ as TeX in cell 3 (MissingSuperScriptOrSubscriptError)"]


def test_mistune_passes_the_mathml_through_as_markup_free_text():
    out, _ = render_math("Text $\\text{a_b*c*}$ and *em*,\n$$a * b * c \\quad \\text{<b>bold</b> & _x_}$$\nafter")
    page = markdown2html_mistune(out)
    assert "<em>em</em>" in page and page.count("<em>") == 1 and "<b>" not in page   # no markup inside
    assert len(MATH.findall(page)) == 2 and "$" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    text = visible_text(page)
    assert "a_b*c*" in text and "a*b*c" in text and "<b>bold</b>\xa0&\xa0_x_" in text


# --- the course's notebooks ------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_expression_of_the_course_converts(path):
    failures, converted = [], 0
    for source in _markdown_cells(path):
        out, bad = render_math(source)
        failures += bad
        converted += len(MATH.findall(out))
        # what a reader sees of the markdown, code aside, keeps no dollar: all math was found
        assert "$" not in visible_text(_without_code(markdown2html_mistune(out))), out
    assert failures == []
    assert converted >= 15


def test_feedback_html_of_a_released_notebook_reads_without_mathjax():
    """nbconvert's HTMLExporter with nbgrader's feedback template, as GenerateFeedback sets it up."""
    import os

    import nbgrader
    from nbconvert.exporters import HTMLExporter
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from traitlets.config import Config
    formgrader = Path(os.path.dirname(nbgrader.__file__)) / "server_extensions" / "formgrader"
    config = Config()
    config.HTMLExporter.template_name = "feedback"
    config.HTMLExporter.extra_template_basedirs = [str(formgrader / "templates")]
    config.HTMLExporter.extra_template_paths = [
        str(formgrader / "static" / "node_modules" / "bootstrap" / "dist" / "css")]
    notebook = ROOT / "assignments" / "a1_vae" / "a1_vae.ipynb"
    resources = {"nbgrader": {"notebook": "a1_vae", "score": 0, "max_score": 0, "late_penalty": 0}}
    expected = sum(len(MATH.findall(render_math(s)[0])) for s in _markdown_cells(notebook))

    def export(*preprocessors):
        exporter = HTMLExporter(config=config)
        for preprocessor in preprocessors:
            exporter.register_preprocessor(preprocessor, enabled=True)
        nb = nbformat.read(notebook, as_version=4)
        for cell in nb.cells:   # what GetGrades adds from the gradebook
            cell.metadata.get("nbgrader", {}).update(score=0, points=1)
        return exporter.from_notebook_node(nb, resources=dict(resources))[0]

    before = export(CSSHTMLHeaderPreprocessor)
    after = export(RenderMath, CSSHTMLHeaderPreprocessor)
    assert "<math" not in before and "$\\" in visible_text(before)                   # TeX for MathJax
    assert expected >= 15 and len(MATH.findall(after)) == expected
    assert "$\\" not in visible_text(after) and "$" not in visible_text(_without_code(after)
                                                                         .split("</head>")[1])
    assert "<strong>nats per sample</strong>" in after                               # markdown still rendered
    assert re.search(r'<mi mathvariant="bold">z</mi>', after)                        # p(\mathbf z)


# --- registration ----------------------------------------------------------------------------------
def test_every_feedback_route_renders_math(tmp_path):
    for course in (ROOT, tmp_path):              # nbgrader_config.py; a course without one (dgmcourse feedback)
        steps = list(course_config(course).GenerateFeedback.preprocessors)
        assert steps.index("dgmcourse.grading.feedback.RenderMath") == \
            steps.index("nbgrader.preprocessors.ClearMarkScheme") + 1
    assert import_item("dgmcourse.grading.feedback.RenderMath") is RenderMath is grading.RenderMath
