"""Meta-tests on the documentation of ctopt's public API (python-control's docstrings_test and
kwargs_test are the model):

- every public function has a docstring with a runnable ``>>>`` example, and every public class a
  docstring;
- every keyword a docstring mentions (its ``Args:`` entries, and the keywords of calls of the
  function in its own examples) is a real parameter of the function;
- the Python blocks of every docs page run (a block that cannot, on a CPU in one process, says
  so in its first line: ``# not run: <why>``);
- functions taking ``**values`` refuse a misspelt keyword instead of ignoring it.

The examples themselves run as doctests in the default test run (``--doctest-modules``).
"""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ctopt

# modules that need an optional extra to import; they are checked when the extra is installed
_OPTIONAL = {"ctopt.explore": "ipywidgets", "ctopt.analysis.iqc": "cvxpy"}


def _module_names() -> list[str]:
    names = ["ctopt"]
    for info in pkgutil.walk_packages(ctopt.__path__, "ctopt."):
        if info.name.rsplit(".", 1)[-1].startswith("_") and not info.ispkg:
            continue
        names.append(info.name)
    return sorted(names)


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if name in _OPTIONAL and exc.name == _OPTIONAL[name]:
            pytest.skip(f"{name} needs {exc.name}")
        raise


def _public(module) -> list[tuple[str, object]]:
    """(qualified name, object) of every public function and class the module defines."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    out = []
    for n in names:
        try:
            obj = getattr(module, n, None)
        except ImportError:  # a lazy name whose module is missing: test_lazy_names_resolve
            continue
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not getattr(obj, "__module__", "").startswith("ctopt"):
            continue  # re-exported from elsewhere
        if obj.__module__ != module.__name__:
            continue  # checked where it is defined
        out.append((f"{obj.__module__}.{obj.__qualname__}", obj))
    return out


MODULES = _module_names()


def _all_public() -> dict[str, object]:
    found: dict[str, object] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for qual, obj in _public(module):
            found.setdefault(qual, obj)
    return found


PUBLIC = _all_public()
FUNCTIONS = {q: f for q, f in PUBLIC.items() if inspect.isfunction(f)}
CLASSES = {q: c for q, c in PUBLIC.items() if inspect.isclass(c)}


def test_the_public_api_is_found():
    # the walk must see the core, or the checks below would pass vacuously
    for expected in ("ctopt.zoo.registry.get", "ctopt.oracle.simulate", "ctopt.cli.main"):
        assert expected in FUNCTIONS


@pytest.mark.parametrize("name", sorted(ctopt.__all__))
def test_lazy_names_resolve(name):
    # every public name of ctopt exists (and so is covered by the checks below)
    try:
        getattr(ctopt, name)
    except ModuleNotFoundError as exc:
        if exc.name in _OPTIONAL.values():
            pytest.skip(f"ctopt.{name} needs {exc.name}")
        raise


@pytest.mark.parametrize("qualname", sorted(FUNCTIONS))
def test_public_function_has_a_runnable_example(qualname):
    doc = inspect.getdoc(FUNCTIONS[qualname])
    assert doc, f"{qualname} has no docstring"
    assert ">>>" in doc, f"{qualname}'s docstring has no runnable '>>>' example"


@pytest.mark.parametrize("qualname", sorted(CLASSES))
def test_public_class_is_documented(qualname):
    assert inspect.getdoc(CLASSES[qualname]), f"{qualname} has no docstring"


_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters|Keyword Args|Keyword Arguments):\s*$")
_ARG_LINE = re.compile(r"^\s{2,}\**([A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:")


def documented_keywords(func) -> set[str]:
    """Keywords the docstring of ``func`` documents as its own: the entries of its ``Args:``
    section, and the keywords passed to ``func`` itself in its examples."""
    doc = inspect.getdoc(func) or ""
    found: set[str] = set()
    in_args = False
    for line in doc.splitlines():
        if _ARGS_HEADER.match(line):
            in_args = True
        elif in_args and line and not line.startswith(" "):
            in_args = False
        elif in_args and (m := _ARG_LINE.match(line)):
            found.add(m.group(1))
    for example in doctest.DocTestParser().get_examples(doc):
        try:
            tree = ast.parse(example.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                callee = node.func
                name = getattr(callee, "attr", None) or getattr(callee, "id", "")
                if name == func.__name__:
                    found |= {kw.arg for kw in node.keywords if kw.arg is not None}
    return found


def _accepts(func, keyword: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return True
    if keyword in params:
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@pytest.mark.parametrize("qualname", sorted(FUNCTIONS))
def test_every_keyword_a_docstring_mentions_exists(qualname):
    func = FUNCTIONS[qualname]
    missing = sorted(k for k in documented_keywords(func) if not _accepts(func, k))
    assert not missing, f"{qualname}'s docstring mentions keyword(s) {missing} it does not accept"


def test_keyword_check_can_fail():
    def f(a, b=1):
        """Do it.

        Args:
            a: first.
            c: not a parameter.

        Example:
            >>> f(1, d=2)  # doctest: +SKIP
        """

    assert documented_keywords(f) == {"a", "c", "d"}  # Args entries and keywords of f(...)
    assert not _accepts(f, "c")


# ------------------------------------------------------------------------- the docs' code blocks
DOCS = Path(__file__).resolve().parent.parent / "docs"
_FENCE = re.compile(r"^(?P<indent> *)```python[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)
_NOT_RUN = re.compile(r"\A# not run: (?P<why>\S.*)")  # the first line of a block not run


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line, source, why it is not run or None) of every ```python block of a docs page. A block
    whose first line is ``# not run: <why>`` (it needs a GPU or several processes, or is an
    excerpt) is shown, not run."""
    blocks = []
    for m in _FENCE.finditer(text):
        indent = len(m["indent"])
        source = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
        skip = _NOT_RUN.match(source)
        blocks.append((text.count("\n", 0, m.start()) + 2, source, skip and skip["why"]))
    return blocks


def test_python_blocks_are_found():
    text = "Text\n\n```python\nx = 1\n```\n\n- item\n\n    ```python\n    # not run: a GPU\n" \
           "    y = 2\n    ```\n"
    assert python_blocks(text) == [(4, "x = 1\n", None), (10, "# not run: a GPU\ny = 2\n", "a GPU")]


DOCS_PAGES = {p.name: python_blocks(p.read_text()) for p in sorted(DOCS.glob("*.md"))}
CODE_PAGES = sorted(name for name, blocks in DOCS_PAGES.items() if blocks)

# Each page's blocks run in order in one namespace, in a fresh folder; the pages one after the
# other in one process (importing torch and sympy once), each reported on its own.
_RUNNER = """
import json, os, sys, time, traceback
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
pages = json.load(sys.stdin)
out = {}
for name, blocks in pages.items():
    os.makedirs(name, exist_ok=True)
    os.chdir(name)
    namespace, start, error = {"__name__": "__main__"}, time.perf_counter(), None
    for line, source in blocks:
        try:
            exec(compile(source, f"docs/{name}, block at line {line}", "exec"), namespace)
        except BaseException:
            error = traceback.format_exc(limit=-8)
            break
    out[name] = {"error": error, "seconds": round(time.perf_counter() - start, 2)}
    plt.close("all")
    os.chdir("..")
print("\\n@@" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def docs_runs(tmp_path_factory):
    import json

    pages = {name: [(line, src) for line, src, needs in DOCS_PAGES[name] if needs is None]
             for name in CODE_PAGES}
    run = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(pages),
                         cwd=tmp_path_factory.mktemp("docs_code"), capture_output=True,
                         text=True, timeout=500)
    assert "\n@@" in run.stdout, run.stderr[-3000:]
    return json.loads(run.stdout.rsplit("\n@@", 1)[1])


@pytest.mark.parametrize("page", CODE_PAGES)
def test_python_blocks_of_the_docs_run(page, docs_runs):
    assert docs_runs[page]["error"] is None, docs_runs[page]["error"]


def test_docs_code_counts(docs_runs, capsys):
    blocks = [b for name in CODE_PAGES for b in DOCS_PAGES[name]]
    shown = [needs for _, _, needs in blocks if needs]
    with capsys.disabled():
        print(f"\ndocs code: {len(blocks) - len(shown)} python blocks run on {len(CODE_PAGES)} "
              f"pages in {sum(r['seconds'] for r in docs_runs.values()):.1f} s; "
              f"{len(shown)} shown, not run ({'; '.join(sorted(set(shown)))})")
    assert 3 * len(shown) < len(blocks), "most of the docs' code runs"
    for guide in ("index.md", "quickstart.md", "concepts.md", "design_ir.md"):
        assert any(needs is None for _, _, needs in DOCS_PAGES[guide]), f"{guide} shows code"


# ------------------------------------------------------------------------- the docs' layout
_ITEM = re.compile(r"^(?P<indent> *)(?:[-*+]|\d+\.) ")


def layout_problems(text: str) -> list[str]:
    """Markdown that Python-Markdown renders wrongly: a nested list item indented by other than a
    multiple of 4 spaces (it is flattened), or a list that starts right under a paragraph line
    (it is merged into the paragraph)."""
    problems, fence, previous, in_list = [], False, "", False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```") or line.strip() in ("\\[", "\\]", "$$"):
            fence = not fence  # code and display math are not Markdown
        elif not fence and (item := _ITEM.match(line)):
            if len(item["indent"]) % 4:
                problems.append(f"line {number}: list item indented by {len(item['indent'])}")
            if previous.strip() and not in_list and not previous.lstrip().startswith(("#", "|")):
                problems.append(f"line {number}: list right under a paragraph line")
            in_list = True
        elif not fence and line.strip() and not line.startswith(" "):
            in_list = False
        previous = "" if fence else line
    return problems


def test_layout_check_can_fail():
    text = "Text\n- merged\n\n- top\n  - flattened\n    - nested\n\n```\n  - code\n```\n\\[\n  + x\n\\]\n"
    assert layout_problems(text) == ["line 2: list right under a paragraph line",
                                     "line 5: list item indented by 2"]


@pytest.mark.parametrize("page", sorted(DOCS_PAGES))
def test_docs_page_layout(page):
    assert not layout_problems((DOCS / page).read_text())


@pytest.mark.parametrize("page", sorted(DOCS_PAGES))
def test_docs_page_names_no_file_outside_the_docs(page):
    # a page stands alone: it cites papers, not notes kept elsewhere (a "notes.md §8")
    prose = re.sub(r"```.*?```|`[^`]*`", "", (DOCS / page).read_text(), flags=re.S)
    mentioned = set(re.findall(r"\b([\w-]+\.md)\b", prose))
    assert mentioned <= set(DOCS_PAGES) | {"README.md"}, sorted(mentioned - set(DOCS_PAGES))


# ------------------------------------------------------------------ the API page's list of names
_API_ROW = re.compile(r"^\| \[`ctopt\.(?P<name>\w+)`\]\(#(?P<anchor>[\w.]+)\) \| [^|]+ \| `(?P<example>[^`]+)` \|$",
                      re.M)


def api_names() -> list[tuple[str, str, str]]:
    """(name, anchor, example) of every row of the API page's table of top-level names."""
    return [(m["name"], m["anchor"], m["example"])
            for m in _API_ROW.finditer((DOCS / "api.md").read_text())]


def test_the_api_page_lists_every_public_name():
    rows = api_names()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names)), "each name once"
    assert sorted(names) == sorted(ctopt.__all__), "the API page lists exactly ctopt.__all__"
    documented = re.findall(r"^::: ([\w.]+)$", (DOCS / "api.md").read_text(), re.M)
    for name, anchor, example in rows:
        assert re.search(rf"\bctopt\.{name}\b", example), f"the example of ctopt.{name} uses it"
        assert anchor in ("analysis",) or any(anchor == d or anchor.startswith(d + ".")
                                              for d in documented), \
            f"ctopt.{name} links to #{anchor}, which no ::: entry of the page documents"


def test_the_api_page_examples_run(tmp_path):
    script = "import matplotlib\nmatplotlib.use('Agg')\nimport numpy as np, sympy as sp, torch, ctopt\n"
    script += "".join(f"exec(compile({ex.replace('; ', chr(10))!r}, 'api.md: ctopt.{name}', 'exec'))\n"
                      for name, _, ex in api_names())
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


# --------------------------------------------------------------------------- unknown keywords
def _kwargs_cases():
    """Public functions that take ``**values``/``**fixed``, each called with one misspelt
    keyword (python-control's kwargs_test does the same for its ``**kwargs`` functions)."""
    import numpy as np

    import ctopt.plot
    from ctopt import dynamics
    from ctopt.report import analyze

    adam, hb, sgd = (ctopt.zoo.get(n) for n in ("adam", "heavy_ball", "sgd"))
    grid = ("lr", [0.1, 0.2]), ("momentum", [0.1, 0.2])
    return {
        "simulate": lambda: ctopt.simulate(adam, lambda x: x, np.ones(2), 2, betaa=0.1),
        "transfer_function": lambda: ctopt.transfer_function(adam, output="v", betaa=0.1),
        "closed_loop": lambda: ctopt.closed_loop(hb, betaa=0.1),
        "filter_validity": lambda: ctopt.filter_validity(adam, betaa=0.1),
        "plot.bode": lambda: ctopt.plot.bode(adam, output="v", betaa=0.1),
        "plot.pole_zero": lambda: ctopt.plot.pole_zero(adam, output="v", betaa=0.1),
        "plot.step_response": lambda: ctopt.plot.step_response(adam, output="v", betaa=0.1),
        "plot.impulse": lambda: ctopt.plot.impulse(adam, output="v", betaa=0.1),
        "plot.root_locus": lambda: ctopt.plot.root_locus(hb, betaa=0.1),
        "plot.region": lambda: ctopt.plot.region(hb, *grid, h=1.0, betaa=0.1),
        "plot.trajectories": lambda: ctopt.plot.trajectories(hb, steps=2, betaa=0.1),
        "worst_case_rate": lambda: ctopt.worst_case_rate(hb, 1, 10, betaa=0.1),
        "tune": lambda: ctopt.tune(sgd, 1, 10, betaa=0.1),
        "dynamics.run": lambda: dynamics.run(adam, dynamics.quadratic(), 2, betaa=0.1),
        "Design.check_values": lambda: adam.check_values(betaa=0.1),
        "report.analyze": lambda: analyze(adam, {"betaa": 0.1}),
    }


KWARGS_CASES = sorted(_kwargs_cases())


@pytest.mark.parametrize("name", KWARGS_CASES)
def test_unknown_keywords_are_refused(name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with pytest.raises((ctopt.CtoptError, TypeError), match="betaa"):
        _kwargs_cases()[name]()
    plt.close("all")
