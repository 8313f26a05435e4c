"""The course website, built as `make site SMOKE=1` builds it, read in a real browser.

Headless Chromium from the OS packages (`apt-get install chromium`; `.ci/run` installs it), driven by
Playwright with `executable_path`, reads every page served on loopback:
* no console error and no failed request (the site works offline: no CDN, no external font or script);
* no raw TeX left unrendered, every image decoded (naturalWidth > 0);
* every internal link resolves, fragments included; each page with its images weighs at most 3 MB;
* the site search finds lecture 04 for "Wasserstein";
* no solution code and no hidden test of solutions/ appears anywhere in the site.
Screenshots of every page go to _build/test-artifacts/site/ (not committed).
"""

import functools
import html
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "_build" / "test-artifacts" / "site"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MAX_PAGE_BYTES = 3_000_000

# the build is one session fixture (conftest.py): keep on one xdist worker
pytestmark = [pytest.mark.site, pytest.mark.xdist_group("site")]


@pytest.fixture(scope="module")
def site(smoke_site) -> Path:
    """The smoke-mode site (conftest.py builds it once per run, as `make site SMOKE=1` does)."""
    return smoke_site


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian/Ubuntu: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox"] if os.geteuid() == 0 else [])
        yield chromium
        chromium.close()


def _new_page(browser):
    """A browser tab that records its problems: console errors, script errors, failed requests, HTTP errors."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.problems = []
    page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: page.problems.append(f"script error: {e}"))
    page.on("requestfailed", lambda r: page.problems.append(f"failed request: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and page.problems.append(f"HTTP {r.status}: {r.url}"))
    return page


def _open(browser, url: str):
    """A page loaded and typeset, its problems recorded."""
    page = _new_page(browser)
    page.goto(url, wait_until="load")
    # MathJax 2 typesets after load: wait for its queue to drain
    page.evaluate("() => new Promise(done => window.MathJax && MathJax.Hub ? MathJax.Hub.Queue(done) : done())")
    return page


# Text outside code (pre, code, scripts) that still holds TeX delimiters means math was not rendered.
RAW_TEX = r"""() => {
    if (!document.body) return [];
    const body = document.body.cloneNode(true);
    body.querySelectorAll('pre, code, script, style, .highlight').forEach(e => e.remove());
    const text = body.innerText;
    return ['$$', '\\begin{', '\\(', '\\[', '$\\'].filter(s => text.includes(s));
}"""
BROKEN_IMAGES = ("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                 ".map(i => i.src.slice(0, 80))")


def test_every_page_loads_offline_with_math_and_images(site, server, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages = [p for p in _pages(site) if p != site / "index.html"]           # the root only redirects (below)
    assert {"docs/index.html", "lectures/04_wasserstein.html", "docs/glossary.html",
            "assignments/a1_vae/a1_vae.html"} <= {p.relative_to(site).as_posix() for p in pages}
    failures = {}
    for path in pages:
        rel = path.relative_to(site).as_posix()
        page = _open(browser, server + rel)
        problems = page.problems + [f"raw TeX {s!r}" for s in page.evaluate(RAW_TEX)]
        problems += [f"image not decoded: {src}" for src in page.evaluate(BROKEN_IMAGES)]
        page.screenshot(path=str(ARTIFACTS / (rel.replace("/", "__") + ".png")))
        page.close()
        if problems:
            failures[rel] = problems
    assert not failures, failures


def test_site_root_opens_the_home_page(site, server, browser):
    page = _new_page(browser)
    page.goto(server)
    page.wait_for_url("**/docs/index.html")
    page.wait_for_load_state("load")
    problems = [p for p in page.problems if "net::ERR_ABORTED" not in p]   # requests the redirect cut short
    assert "Course map" in page.inner_text("main") and not problems, problems
    page.close()


def test_lecture_pages_carry_executed_figures_launch_links_and_the_widget_still(site, server, browser):
    page = _open(browser, server + "lectures/01_vae.html")
    assert page.locator("div.cell_output img").count() >= 5, "lecture 01 shows fewer than 5 figures"
    assert page.locator("figure.dgmcourse-widget-still img").count() == 1, "the latent explorer's still is missing"
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    assert any(h.startswith("https://mybinder.org/v2/gh/") and "lectures/01_vae.ipynb" in h for h in hrefs)
    assert any(h.startswith("https://colab.research.google.com/github/") and h.endswith("lectures/01_vae.ipynb")
               for h in hrefs)
    page.close()


def test_site_search_finds_the_wasserstein_lecture(site, server, browser):
    page = _open(browser, server + "search.html?q=Wasserstein")
    page.wait_for_selector("#search-results ul.search li a", timeout=30_000)
    hits = page.eval_on_selector_all("#search-results ul.search li a", "links => links.map(a => a.href)")
    page.screenshot(path=str(ARTIFACTS / "search-wasserstein.png"))
    page.close()
    assert any(h.split("#")[0].endswith("lectures/04_wasserstein.html") for h in hits), hits


def test_internal_links_resolve_and_pages_are_small(site):
    ids = {}
    problems = []
    for path in _pages(site):
        text = path.read_text(encoding="utf-8")
        ids[path] = set(re.findall(r'\bid="([^"]+)"', text))
    for path in _pages(site):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(site).as_posix()
        weight = path.stat().st_size
        for src in re.findall(r'<img[^>]*\ssrc="([^"]+)"', text):
            if not src.startswith("data:"):
                weight += (path.parent / unquote(src)).stat().st_size
        if weight > MAX_PAGE_BYTES:
            problems.append(f"{rel}: {weight / 1e6:.1f} MB with its images")
        for href in re.findall(r'<a[^>]*\shref="([^"]+)"', text):
            href = html.unescape(href)
            if urlsplit(href).scheme or href.startswith("//"):
                continue                                                   # external (launch buttons, papers)
            target = urlsplit(urljoin(f"http://site/{rel}", href))
            file = site / unquote(target.path.lstrip("/"))
            if file.is_dir():
                file = file / "index.html"
            if not file.is_file():
                problems.append(f"{rel}: link {href} -> missing {file.relative_to(site)}")
            elif target.fragment and file.suffix == ".html" and unquote(target.fragment) not in ids.get(file, set()):
                problems.append(f"{rel}: link {href} -> no id {target.fragment!r} in {file.relative_to(site)}")
    assert not problems, problems


def _marked_lines(source: str, begin: str, end: str) -> set[str]:
    lines, inside = set(), False
    for line in source.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside and len(line.strip()) >= 20:
            lines.add(line.strip())
    return lines


def test_no_solution_code_or_hidden_test_is_published(site):
    assert not (site / "solutions").exists()
    published = "\n".join(html.unescape(re.sub(r"<[^>]+>", "", p.read_text(encoding="utf-8"))) for p in _pages(site))
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in published
    # lines the lectures or the student release also contain are the course's, not the solution's
    shared = "\n".join(c.source for p in [*ROOT.glob("lectures/*.ipynb"), *ROOT.glob("assignments/*/*.ipynb")]
                       for c in nbformat.read(p, as_version=4).cells)
    secret = set()
    for source in ROOT.glob("solutions/*/*.ipynb"):
        cells = nbformat.read(source, as_version=4).cells
        text = "\n".join(c.source for c in cells)
        secret |= _marked_lines(text, "### BEGIN SOLUTION", "### END SOLUTION")
        secret |= _marked_lines(text, "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
    secret = {line for line in secret if line not in shared}
    assert len(secret) > 100                                               # the check has something to find
    leaked = sorted(line for line in secret if line in published)
    assert not leaked, leaked[:10]
