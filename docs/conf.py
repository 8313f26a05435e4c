"""Sphinx configuration of the course website (`make site`; see the README).

Sphinx + myst-nb + the book theme, chosen over Jupyter Book 2 because its whole tool chain is Python
packages from PyPI: the build needs no Node tool chain and no theme download, so it works offline, and
myst-nb executes the lectures through jupyter-cache (each lecture runs once; a rebuild re-runs only the
notebooks that changed). The source directory is the repository root; only the pages named in
``include_patterns`` are read (never ``solutions/``).
"""

import os
import shutil
import tomllib
from pathlib import Path

import jupyter_server_mathjax
from sphinx.util.fileutil import copy_asset

from dgmcourse.assessment import lecture_cache

ROOT = Path(__file__).resolve().parents[1]
SMOKE = bool(os.environ.get("DGMCOURSE_SMOKE"))
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]

project = "dgmcourse"
author = "the dgmcourse authors"
copyright = "2026, the dgmcourse authors (MIT licence)"
root_doc = "docs/index"
include_patterns = ["docs/*.md", "lectures/*.ipynb", "assignments/*/*.ipynb"]

extensions = ["myst_nb"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "html_image"]
myst_heading_anchors = 3
# references.md links to its own <span id> anchors, which MyST does not index (the browser tests check them)
suppress_warnings = ["myst.header", "myst.xref_missing", "mystnb.unknown_mime_type"]

# Execution: lectures only (the student releases raise NotImplementedError), cached per mode.
nb_execution_mode = "cache"
# The kernels inherit this environment: progress bars (widgets) would show as text on a static page, and a
# non-interactive MPLBACKEND (Agg, as pytest sets it) would keep the figures out of the outputs.
os.environ["TQDM_DISABLE"] = "1"
os.environ.pop("MPLBACKEND", None)
# One cache folder per digest of the library code the lectures reach (dgmcourse.assessment.lecture_cache):
# `make test`'s lecture tests read the executions from it, so each lecture runs once per test run.
nb_execution_cache_path = str(lecture_cache(SMOKE, ROOT))
for _stale in Path(nb_execution_cache_path).parent.glob("*"):
    if _stale.is_dir() and _stale.name != Path(nb_execution_cache_path).name:
        shutil.rmtree(_stale)
nb_execution_excludepatterns = ["assignments/*/*.ipynb"]
nb_execution_timeout = 1800
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# Markdown outputs (the model-zoo table of docs/model_zoo.md and lecture 9) are GitHub-flavoured: tables
nb_render_markdown_format = "gfm"
# Widgets: the page shows the still image each widget carries (dgmcourse.widgets), not a live widget,
# whose JavaScript would come from a CDN.
nb_ipywidgets_js = {}
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None),
                              ("html", "application/vnd.jupyter.widget-state+json", None)]

# Math: MathJax 2 from the jupyter-server-mathjax package (Jupyter's own copy), copied into the site (no CDN).
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# myst-nb marks notebook pages tex2jax_ignore and their math spans "math": process those only.
mathjax2_config = {"tex2jax": {"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]],
                               "processEscapes": True, "ignoreClass": "tex2jax_ignore|mathjax_ignore",
                               "processClass": "tex2jax_process|mathjax_process|math|output_area"},
                   "showMathMenu": False, "messageStyle": "none",
                   # HTML-CSS output with the STIX-Web fonts the package ships (as the classic Jupyter
                   # notebook does); no hidden MathML copy, whose styles ask for TeX fonts it lacks
                   "jax": ["input/TeX", "output/HTML-CSS"], "menuSettings": {"assistiveMML": False},
                   # (and its font-loading probe names a local font instead of fetching about:blank)
                   "HTML-CSS": {"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web",
                                "imageFont": None,
                                "styles": {"@font-face": {"font-family": "MathJax_Blank",
                                                          "src": "local('MathJax_Blank')"}}}}

html_theme = "sphinx_book_theme"
html_title = "dgmcourse: deep generative models"
html_favicon = "_static/favicon.svg"
html_static_path = ["_static"]
html_extra_path = ["_extra"]          # index.html: the site root opens docs/index.html
html_show_sourcelink = False
html_context = {"default_mode": "light"}
html_theme_options = {
    "repository_url": REPOSITORY,
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "launch_buttons": {"binderhub_url": "https://mybinder.org", "colab_url": "https://colab.research.google.com",
                       "notebook_interface": "jupyterlab"},
    "navigation_with_keys": False,
    "show_toc_level": 2,
}


def _copy_mathjax(app, exception):
    if exception is None:
        source = Path(jupyter_server_mathjax.__file__).parent / "static"
        copy_asset(str(source), str(Path(app.outdir) / "_static" / "mathjax"))


def setup(app):
    app.connect("build-finished", _copy_mathjax)
