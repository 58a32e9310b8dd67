"""The docs site as a reader sees it: built with mkdocs, served on 127.0.0.1 and opened page by
page in headless Chromium (driven by playwright, with the system's Chromium: no browser download).

Every page in the sitemap is checked for:

- formulas typeset by the MathJax that ships with the site (every ``arithmatex`` element holds a
  MathJax container, none is a TeX error, every glyph is drawn, every font loads) and no raw
  ``\\(`` / ``\\[`` left in the visible text;
- figures loaded (every ``img`` has ``naturalWidth > 0``);
- no request to any host but the local server, no failed local request, no script error;
- internal links and their anchors resolved (the target file exists, the ``#id`` is on it);
- layout: no table or code block wider than the page, no list item merged into a paragraph.

Without a Chromium (or without playwright) the checks skip, saying why. ``test_checks_can_fail``
shows on a page with a CDN script, raw TeX, a missing figure and broken links that every check
fires.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}  # a laptop screen: both sidebars and the page shown


def _chromium() -> str:
    """Path of a Chromium executable, or skip saying what is missing."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    candidates = [os.environ.get("CTOPT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    for name in filter(None, candidates):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium found (apt-get install chromium, or set CTOPT_CHROMIUM)")


# ------------------------------------------------------------------------------- serving a site
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def serve():
    """serve(directory) -> base URL of a local HTTP server on 127.0.0.1 for that directory."""
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless Chromium context with a fresh profile."""
    executable = _chromium()
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as p:
        try:
            context = p.chromium.launch_persistent_context(
                str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable,
                headless=True, args=FLAGS, viewport=VIEWPORT)
        except Error as exc:
            pytest.skip(f"Chromium at {executable} does not start: {str(exc).splitlines()[0]}")
        yield context
        context.close()


# ------------------------------------------------------------------------------------ the checks
_PAGE_FACTS = r"""async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await document.fonts.ready;
  const outside = el => el.closest('pre, code, script, style, mjx-container, textarea');
  const texts = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!outside(node.parentElement) && /\\[(\[]|\\begin\{/.test(node.textContent))
      texts.push(node.textContent.trim().slice(0, 80));
  }
  const math = [...document.querySelectorAll('.arithmatex')];
  const first = el => el.innerText.trim().split('\n')[0].slice(0, 70);
  return {
    raw_tex: texts,
    math: math.length,
    untypeset: math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80)),
    formulas: document.querySelectorAll('mjx-container').length,
    tex_errors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80)),
    blank_glyphs: [...document.querySelectorAll('mjx-c')].filter(c =>
                    ['none', ''].includes(getComputedStyle(c, '::before').content)).length,
    fonts_failed: [...document.fonts].filter(f => f.status === 'error').map(f => f.family),
    images: [...document.images].map(i => [i.currentSrc || i.src, i.complete && i.naturalWidth > 0]),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id)
           .concat([...document.querySelectorAll('a[name]')].map(a => a.name)),
    wide_tables: [...document.querySelectorAll('.md-typeset__scrollwrap')]
                   .filter(w => w.scrollWidth > w.clientWidth + 1).map(first),
    wide_code: [...document.querySelectorAll('.md-typeset pre > code')]
                 .filter(c => c.scrollWidth > c.clientWidth + 1).map(first),
    merged_lists: [...document.querySelectorAll('.md-typeset p')]
                    .filter(p => !outside(p) && /\n\s*([-*+]|\d+\.)\s/.test(p.textContent))
                    .map(p => p.textContent.slice(0, 80)),
  };
}"""


@dataclass
class Report:
    pages: int = 0
    formulas: int = 0
    figures: int = 0
    links: int = 0
    anchors: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"docs in Chromium: {self.pages} pages, {self.formulas} formulas typeset, "
                f"{self.figures} figures loaded, {self.links} internal links resolved "
                f"({self.anchors} with an anchor), {len(self.problems)} problems")


def _local_file(site: Path, path: str) -> Path:
    target = site / unquote(path).lstrip("/")
    return target / "index.html" if path.endswith("/") or target.is_dir() else target


def check_site(context, base: str, site: Path, paths: list[str]) -> Report:
    """Open every page of ``paths`` (URL paths under ``base``) and collect what a reader would
    meet: untypeset or broken math, missing figures, outside requests, broken links."""
    report = Report()
    origin = base.rstrip("/")
    outside, failed, errors = [], [], []

    def route(r):
        if r.request.url.startswith(origin + "/"):
            r.continue_()
        else:  # offline: a request to another host is recorded and never made
            outside.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    ids: dict[Path, set[str]] = {}
    links: list[tuple[str, str]] = []
    for path in paths:
        outside.clear(), failed.clear(), errors.clear()
        page.goto(origin + path, wait_until="load")
        facts = page.evaluate(_PAGE_FACTS)
        report.pages += 1
        report.formulas += facts["formulas"]
        ids[_local_file(site, path)] = set(facts["ids"])
        where = f"{path}:"
        problems = [
            *(f"{where} raw TeX in the text: {t!r}" for t in facts["raw_tex"]),
            *(f"{where} formula not typeset: {t!r}" for t in facts["untypeset"]),
            *(f"{where} TeX error: {t!r}" for t in facts["tex_errors"]),
            *([f"{where} {facts['blank_glyphs']} formula glyphs drawn blank"]
              if facts["blank_glyphs"] else []),
            *(f"{where} font does not load: {f}" for f in facts["fonts_failed"]),
            *(f"{where} figure does not load: {src}" for src, ok in facts["images"] if not ok),
            *(f"{where} request to another host: {u}" for u in outside),
            *(f"{where} failed request: {u}" for u in failed),
            *(f"{where} script error: {e}" for e in errors),
            *(f"{where} table wider than the page: {t!r}" for t in facts["wide_tables"]),
            *(f"{where} code block wider than the page: {t!r}" for t in facts["wide_code"]),
            *(f"{where} list item merged into a paragraph: {t!r}" for t in facts["merged_lists"]),
        ]
        report.problems += problems
        report.figures += sum(ok for _, ok in facts["images"])
        links += [(path, href) for href in facts["links"] if href.startswith(origin + "/")]
    page.close()
    context.unroute("**/*")
    for source, href in links:
        url = urlsplit(href)
        target = _local_file(site, url.path)
        if not target.is_file():
            report.problems.append(f"{source}: link to a missing file: {href}")
            continue
        if url.fragment:
            if target not in ids:
                ids[target] = set(re.findall(r'\b(?:id|name)="([^"]+)"', target.read_text()))
            if unquote(url.fragment) not in ids[target]:
                report.problems.append(f"{source}: link to a missing anchor: {href}")
                continue
            report.anchors += 1
        report.links += 1
    return report


# ------------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The docs site, built strictly into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = {k: v for k, v in os.environ.items() if k != "CTOPT_SITE_URL"}
    env["NO_MKDOCS_2_WARNING"] = "1"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                            "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    return out


def _sitemap_paths(site: Path) -> list[str]:
    tree = ET.parse(site / "sitemap.xml")
    return [urlsplit(loc.text).path for loc in tree.iter() if loc.tag.endswith("loc")]


class _Loads(HTMLParser):
    """What a page makes the browser fetch: scripts, styles, icons, fonts, images, frames."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "link" and a.get("rel") not in ("canonical", "alternate", "prev", "next"):
            self.urls.append(a.get("href") or "")
        elif tag in ("script", "img", "source", "iframe", "audio", "video", "embed"):
            self.urls.append(a.get("src") or "")


def outside_loads(site: Path) -> list[str]:
    """Every URL on another host that a page or a style sheet of the built site loads."""
    found = []
    for page in site.rglob("*.html"):
        parser = _Loads()
        parser.feed(page.read_text())
        found += [f"{page.relative_to(site)}: {u}" for u in parser.urls if "//" in u]
    for css in site.rglob("*.css"):
        found += [f"{css.relative_to(site)}: {u}"
                  for u in re.findall(r"(?:url\(|@import\s+)['\"]?([^'\")\s]*//[^'\")\s]+)",
                                      css.read_text())]
    return found


def test_the_built_site_loads_nothing_from_another_host(site, tmp_path):
    # without a browser too: the HTML and CSS name no outside script, style, font or image
    assert not outside_loads(site)
    paths = _sitemap_paths(site)
    pages = sorted("/" + p.parent.relative_to(site).as_posix().strip(".") for p in
                   site.rglob("index.html") if p.parent.name != "search")
    assert sorted(p.rstrip("/") or "/" for p in paths) == sorted(p.rstrip("/") or "/"
                                                                 for p in pages), \
        "the sitemap lists every page"
    (tmp_path / "index.html").write_text(BAD_PAGE)
    (tmp_path / "style.css").write_text("@import url('https://fonts.example.org/x.css');")
    assert len(outside_loads(tmp_path)) == 2  # the check sees a CDN script and a font host


def test_every_page_reads_offline(site, browser, serve, capsys):
    paths = _sitemap_paths(site)
    report = check_site(browser, serve(site), site, paths)
    with capsys.disabled():
        print(f"\n{report.summary()}")
    assert report.pages == len(paths) > 20
    assert report.formulas > 40 and report.figures > 5 and report.links > 1000
    assert not report.problems, "\n".join(report.problems[:60])


BAD_PAGE = r"""<!doctype html><html><head>
<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>
<script src="missing.js"></script></head><body><article class="md-typeset">
<p>Adam: <span class="arithmatex">\(m_k = \beta_1 m_{k-1}\)</span></p>
<p>Blank: <mjx-container><mjx-c class="mjx-c1D45A"></mjx-c></mjx-container></p>
<img src="no-such-figure.png" alt="figure">
<a href="/good/">fine</a> <a href="/good/#no-such-anchor">bad anchor</a>
<a href="/nowhere/">bad link</a> <a href="/good/#here">good anchor</a>
<p>Items:
- one
- two</p>
<script>undefined_function()</script>
</article></body></html>"""


def test_checks_can_fail(tmp_path, browser, serve):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.html").write_text(BAD_PAGE)
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "index.html").write_text('<p id="here">a page</p>')
    report = check_site(browser, serve(tmp_path), tmp_path, ["/bad/", "/good/"])
    found = "\n".join(report.problems)
    for expected in ("raw TeX in the text", "formula not typeset", "figure does not load",
                     "request to another host: https://cdn.jsdelivr.net", "failed request: 404",
                     "script error", "link to a missing anchor: http", "link to a missing file",
                     "list item merged into a paragraph", "1 formula glyphs drawn blank"):
        assert expected in found, f"{expected!r} not detected in:\n{found}"
    assert report.links == 2 and report.anchors == 1  # /good/ and /good/#here
