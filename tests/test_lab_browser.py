"""JupyterLab as people use it, in a real browser (headless Chromium driven by Playwright).

The servers run on loopback like `make lab`: the student's view (JUPYTER_CONFIG_PATH=jupyter/student) on
a copy of the lectures and of the a1 release, in smoke mode; the instructor's view on the course itself.
* self-learner: lecture 01 opens unmodified, Run All finishes with no error, figures show, and the
  latent explorer's image changes when a slider moves;
* student: Validate on the untouched a1 release names a failing cell; after the solution cells are
  pasted in, Validate reports success;
* instructor: the formgrader lists every assignment.
Screenshots of each step go to _build/test-artifacts/lab/ (not committed).
"""

import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from test_grading_support import jupyter_server, solved

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "_build" / "test-artifacts" / "lab"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "dgmcourse-browser"
IDLE = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status='idle']"
ALL_RAN = """() => { const prompts = [...document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')];
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)); }"""

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("lab-browser")]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian/Ubuntu: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def student_lab(tmp_path_factory):
    """`make lab` as a student, on copies (JupyterLab autosaves: the committed notebooks stay untouched)."""
    root = tmp_path_factory.mktemp("student")
    shutil.copytree(ROOT / "lectures", root / "lectures")
    shutil.copytree(ROOT / "assignments" / "a1_vae", root / "a1_vae")
    home = root / ".home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # conftest's Agg would hide the figures
    env = {**env, "DGMCOURSE_SMOKE": "1", "HOME": str(home),
           "JUPYTER_CONFIG_PATH": str(ROOT / "jupyter" / "student"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with jupyter_server(root, env, TOKEN) as base:
        yield base, root


def _open_notebook(browser, base: str, path: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(f"{base}/lab/tree/{path}?reset&token={TOKEN}")
    page.wait_for_selector(IDLE, timeout=120_000)
    return page


def test_self_learner_runs_lecture_01_and_moves_the_explorer(browser, student_lab):
    base, root = student_lab
    page = _open_notebook(browser, base, "lectures/01_vae.ipynb")
    page.wait_for_timeout(3000)                       # the kernel's language_info arrives after it starts
    tab = page.eval_on_selector("li.lm-TabBar-tab.jp-mod-current", "tab => tab.className")
    page.screenshot(path=str(ARTIFACTS / "1-lecture01-opened.png"))
    assert "jp-mod-dirty" not in tab, "the notebook shows as modified as soon as it opens"

    page.click(".lm-MenuBar-item:has-text('Run')")
    page.click(".lm-Menu-item:has-text('Run All Cells')")
    page.wait_for_function(ALL_RAN, timeout=900_000, polling=1000)   # Run All stops at the first error
    page.wait_for_selector(IDLE, timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "2-lecture01-ran.png"))
    page.keyboard.press("Control+s")                 # save the copy: its outputs are what the reader saw
    page.wait_for_function("() => !document.querySelector('li.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
                           timeout=30_000)
    outputs = [o for c in nbformat.read(root / "lectures" / "01_vae.ipynb", as_version=4).cells
               if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5, "fewer than 5 figures"

    image = ".widget-output img"
    handle = page.locator(".jupyter-widgets .widget-slider .noUi-handle").first
    for _ in range(200):                              # the notebook renders cells near the view only
        if handle.count():
            break
        page.mouse.move(700, 500)
        page.mouse.wheel(0, -600)
        page.wait_for_timeout(100)
    handle.scroll_into_view_if_needed()
    before = page.eval_on_selector(image, "img => img.src")
    handle.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")             # z1 from 0 to 0.5
    page.wait_for_function("before => document.querySelector('.widget-output img')?.src !== before", arg=before,
                           timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "3-lecture01-slider-moved.png"))
    assert not page.errors, page.errors
    page.close()


def _validate(page) -> str:
    page.click(".jp-NotebookPanel:not(.lm-mod-hidden) [data-jp-item-name='runAll'] :text('Validate')")
    page.wait_for_selector(".jp-Dialog", timeout=900_000)
    return page.inner_text(".jp-Dialog")


def test_student_validates_a1_before_and_after_answering(browser, student_lab):
    base, root = student_lab
    page = _open_notebook(browser, base, "a1_vae/a1_vae.ipynb")
    failing = _validate(page)
    page.screenshot(path=str(ARTIFACTS / "4-a1-validate-untouched.png"))
    assert "The following cell failed" in failing and "NotImplementedError" in failing, failing[:500]
    page.click(".jp-Dialog button:has-text('OK')")

    # the student pastes the solution cells (written to the file, then reloaded from disk)
    nbformat.write(solved(ROOT, "a1_vae"), root / "a1_vae" / "a1_vae.ipynb")
    page.click(".lm-MenuBar-item:has-text('File')")
    page.click(".lm-Menu-item:has-text('Reload Notebook from Disk')")
    page.wait_for_function("() => ![...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
                           ".jp-CodeCell')].some(c => c.textContent.includes('YOUR CODE HERE'))", timeout=30_000)
    passing = _validate(page)
    page.screenshot(path=str(ARTIFACTS / "5-a1-validate-answered.png"))
    assert "Success! Your notebook passes all the tests." in passing, passing[:1000]
    page.close()


def test_instructor_formgrader_lists_every_assignment(browser):
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    names = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    with jupyter_server(ROOT, env, TOKEN) as base:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/formgrader?token={TOKEN}")
        for name in names:
            page.wait_for_selector(f"#main-table :text-is('{name}')", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "6-formgrader.png"))
        page.close()
    assert len(names) >= 6
