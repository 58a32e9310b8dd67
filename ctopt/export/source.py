"""Python source of an exported optimizer: the generated class, and the standalone module.

:func:`class_source` prints one design as a subclass of the runtime's ``GeneratedOptimizer``
(hyperparameter table, state names, and the generated ``_scalars``, ``_elementwise``,
``_forloop``, ``_foreach``, ``_fused`` and ``_reduce_*`` functions). :func:`module_source` writes
a standalone module: it bundles verbatim copies of the runtime modules (:data:`RUNTIME_MODULES`,
torch only), loads them as a package of real modules, and defines the class beside them, so the
result runs without ctopt. Nothing here imports torch.

Example:
    >>> import ctopt
    >>> text = class_source(ctopt.zoo.get("sgd"))
    >>> text.splitlines()[0]
    'class Sgd(GeneratedOptimizer):'
"""

from __future__ import annotations

import ast
import builtins
import functools
import hashlib
import keyword
import weakref
from pathlib import Path

import sympy as sp

from .. import ops
from ..design import Design
from ..errors import DesignError
from .codegen import Program, build_program, code_name, code_symbols, rename, state_symbol
from .inplace import inplace_lines
from .printers import python_name, scalar_code, tensor_code

__all__ = ["RUNTIME_MODULES", "class_name", "class_source", "module_source", "runtime_modules"]

#: The runtime: the modules of :mod:`ctopt.export` that exported optimizers run on, in ctopt and
#: (as bundled copies) in standalone exports. Each imports only torch, the standard library and
#: its siblings (relatively); ``runtime`` names what generated code sees as globals.
RUNTIME_MODULES = ("errors", "scalars", "values", "pages", "layout", "master", "capture", "warm",
                   "stored", "direct", "eager", "compiled", "checkpoint", "groups", "reductions",
                   "scaling", "backends", "listened", "usual", "optimizer", "runtime")

_INDENT = "        "


@functools.cache
def module_names() -> frozenset[str]:
    """Names a generated class must not take: the standalone module's globals (the runtime's
    classes, functions and imports), Python's builtins and keywords.

    Example:
        >>> {"GeneratedOptimizer", "Exception", "None"} <= module_names()
        True
    """
    names = set(_HEADER_NAMES) | set(dir(builtins)) | set(keyword.kwlist)
    for name in RUNTIME_MODULES:
        names |= _top_level_names(_runtime_text(name))
    return frozenset(names)


def _top_level_names(text: str) -> set[str]:
    names = set()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def class_name(design: Design) -> str:
    """CamelCase class name of a design (``heavy_ball`` -> ``HeavyBall``); ``Optimizer`` is
    appended when that would be a name the module already uses (``hyper`` -> ``HyperOptimizer``).

    Example:
        >>> import ctopt
        >>> class_name(ctopt.zoo.get("heavy_ball"))
        'HeavyBall'
    """
    name = "".join(part[:1].upper() + part[1:] for part in design.name.split("_"))
    return name if name not in module_names() else f"{name}Optimizer"


def _checked_class_name(name: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or name in module_names():
        raise DesignError(f"class name {name!r} must be a Python identifier that is not a "
                          "keyword, a builtin or a name of the runtime module")
    return name


def _doc_text(text: str) -> str:
    """``text`` safe inside a triple-quoted docstring: backslashes and quotes escaped,
    unprintable characters written as escapes."""
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def beta_names(design: Design) -> tuple[str, ...]:
    """``beta1, beta2, ...`` when the design has them consecutively from ``beta1`` (these are
    the entries of torch's ``betas`` tuple).

    Example:
        >>> import ctopt
        >>> beta_names(ctopt.zoo.get("adan")), beta_names(ctopt.zoo.get("sgd"))
        (('beta1', 'beta2', 'beta3'), ())
    """
    names = [h.name for h in design.hyper]
    out = []
    while f"beta{len(out) + 1}" in names:
        out.append(f"beta{len(out) + 1}")
    return tuple(out) if len(out) >= 1 else ()


def _hyper_row(h) -> str:
    d = h.domain
    return (f"Hyper({h.name!r}, {float(h.default)!r}, {d.lower if d.lower is None else float(d.lower)!r}, "
            f"{d.upper if d.upper is None else float(d.upper)!r}, {d.lower_closed}, "
            f"{d.upper_closed}, {h.doc!r}),")


def _bindings(exprs, design: Design, with_reductions: bool) -> tuple[list[str], dict[str, str]]:
    """Lines binding the hyperparameters ``exprs`` use (``h_lr = h['lr']``) and, with
    reductions, the printed form of each reduction (``red('norm')``)."""
    used = {s.name for e in exprs for s in sp.sympify(e).free_symbols}
    lines = [f"{python_name(code_name('hyper', h.name))} = h[{h.name!r}]" for h in design.hyper
             if code_name("hyper", h.name) in used]
    names = {}
    if with_reductions:
        names = {code_name("reduction", r.name): f"red({r.name!r})" for r in design.reductions}
    return lines, names


def _scalars_function(p: Program) -> list[str]:
    exprs = [e for _, e in p.scalars]
    lines, names = _bindings(exprs, p.design, True)
    for name, expr in p.scalars:
        lines.append(f"{python_name(name)} = {scalar_code(expr, names)}")
    lines.append("return (" + "".join(f"{python_name(c)}, " for c in p.coefficients) + ")")
    return lines


def _elementwise_lines(p: Program) -> list[str]:
    elem = {"theta", "g"} | {state_symbol(s.name).name for s in p.design.states}
    lines = []
    for name, expr in p.elementwise:
        lines.append(f"{python_name(name)} = {tensor_code(expr, elem)}")
        elem.add(python_name(name))
    return lines


def _detached_outputs(p: Program) -> list[str]:
    """Lines that copy each new value that is another input's tensor itself (``prev <- theta``;
    two states swapped): the caller writes the outputs into theta and the states one after the
    other, and a later write must not read what an earlier one overwrote (by
    :func:`.scalars._copy_of`, which survives Inductor).

    Example:
        >>> from ctopt.design import DesignBuilder, POSITIVE, g, theta
        >>> b = DesignBuilder("lookback")
        >>> lr = b.hyper("lr", 0.1, POSITIVE)
        >>> prev = b.state("prev", 0)
        >>> b.assign(prev, theta)
        >>> b.update(theta - lr * g)
        >>> from ctopt.export.codegen import build_program
        >>> _detached_outputs(build_program(b.build()))
        ['n_prev = _copy_of(n_prev)']
    """
    lines = dict(p.elementwise)
    targets = [("theta", p.theta_out)]
    targets += [(state_symbol(st.name).name, out)
                for st, out in zip(p.design.states, p.state_out, strict=True)]
    inputs = {target for target, _ in targets}
    out = []
    for target, name in targets:
        expr = lines.get(name)
        while expr is not None and expr.is_Symbol and expr.name in lines:
            expr = lines[expr.name]
        if expr is not None and expr.is_Symbol and expr.name in inputs and expr.name != target:
            out.append(f"{python_name(name)} = _copy_of({python_name(name)})")
    return out


def _reduction_functions(p: Program) -> list[str]:
    out = []
    for name, expr in p.reductions:
        binds, _ = _bindings([expr], p.design, False)
        body = binds + [f"return {tensor_code(expr, {'theta', 'g'})}"]
        out += ["", "    @staticmethod", f"    def _reduce_{name}(theta, g, h, gsign):"]
        out += [_INDENT + line for line in body]
    return out


def class_source(design: Design, name: str | None = None) -> str:
    """The generated optimizer class for ``design`` as Python source (needs the runtime).

    Example:
        >>> import ctopt
        >>> "def _foreach(" in class_source(ctopt.zoo.get("adam"))
        True
    """
    cls = _checked_class_name(name or class_name(design))
    texts = _SOURCES.setdefault(design, {})
    if cls not in texts:
        texts[cls] = _class_source(design, cls)
    return texts[cls]


#: design -> class name -> source (a design is immutable; the text is deterministic)
_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _class_source(design: Design, cls: str) -> str:
    p = build_program(design)
    states = [state_symbol(s.name).name for s in design.states]
    coefs = [python_name(c) for c in p.coefficients]
    # per-step conditions reach the compiled kernel as numbers in ``coef``: made bools again
    logic = (sp.core.relational.Relational, sp.logic.boolalg.BooleanFunction,
             sp.logic.boolalg.BooleanAtom)
    conditions = {name for name, expr in p.scalars if isinstance(expr, logic)}
    # the scalar part runs on the device as it is (see .capture) unless it reads reductions or
    # takes a logical operation (Python's and/or/not, which read a tensor back)
    on_device = not design.reductions and not any(expr.has(*ops.LOGIC) for _, expr in p.scalars)
    betas = beta_names(design)
    # the constructor's keywords are the design's names (its API); its body reads only them,
    # the underscore names and __class__ (the design refuses names that clash with the options)
    hyper_args = ", ".join(f"{python_name(h.name)}={float(h.default)!r}" for h in design.hyper)
    hyper_dict = ", ".join(f"{h.name!r}: {python_name(h.name)}" for h in design.hyper)
    doc = (design.doc or design.name).strip().splitlines()[0]
    eqs = [f"    {a.target} <- {a.expr}" for a in design.assignments]
    fixed = code_symbols(design)
    inits = [rename(s.init, fixed) for s in design.states]
    init_binds, _ = _bindings(inits, design, False)
    init_values = "".join(f"{scalar_code(init)}, " for init in inits)
    docstring = [
        doc,
        "",
        f"Generated by ctopt from the design {design.name!r}; for k = 1, 2, ...:",
        "",
        *eqs,
        "",
        f"Hyperparameters: {', '.join(h.name for h in design.hyper)}"
        + (f" (or betas=({', '.join(betas)}))" if betas else "") + ".",
        f"State (torch names): {', '.join(s.key for s in design.states) or 'none'}.",
    ]
    out = [
        f"class {cls}(GeneratedOptimizer):",
        *[(f'    """{_doc_text(line)}' if i == 0 else f"    {_doc_text(line)}".rstrip())
          for i, line in enumerate(docstring)],
        '    """',
        "",
        f"    design_name = {design.name!r}",
        "    hyperparameters = (",
        *[f"        {_hyper_row(h)}" for h in design.hyper],
        "    )",
        f"    beta_names = {betas!r}",
        f"    state_names = {tuple(s.name for s in design.states)!r}",
        f"    state_keys = {tuple(s.key for s in design.states)!r}",
        f"    reduction_names = {tuple(r.name for r in design.reductions)!r}",
        f"    scalars_on_device = {on_device!r}",
        "",
        f"    def __init__(_self, params, {hyper_args}, *, betas=None, maximize=False,",
        '                 backend="auto", nonfinite="propagate", reduction_group=None,',
        '                 master_weights=False, capturable=False):',
        f"        __class__.__mro__[1].__init__(_self, params, {{{hyper_dict}}}, betas=betas,",
        "                                      maximize=maximize, backend=backend,",
        "                                      nonfinite=nonfinite, reduction_group=reduction_group,",
        "                                      master_weights=master_weights, capturable=capturable)",
        "",
        "    @staticmethod",
        "    def _state_init(h):",
        *[_INDENT + line for line in init_binds],
        f"        return ({init_values})",
        "",
        "    @staticmethod",
        "    def _scalars(h, k, gsign, red):",
        '        """The per-step scalar part (float64), once per step."""',
        *[_INDENT + line for line in _scalars_function(p)],
        "",
        "    @staticmethod",
        f"    def _elementwise({', '.join(['theta', 'g', *states, *coefs])}):",
        '        """The elementwise part with torch operators; returns (theta, *states)."""',
        *[_INDENT + line for line in _elementwise_lines(p) + _detached_outputs(p)],
        f"        return ({', '.join(python_name(n) for n in (p.theta_out, *p.state_out))},)",
        "",
        "    @staticmethod",
        f"    def _fused({', '.join(['theta', 'g', *states, 'coef'])}):",
        '        """The compiled path\'s kernel: reads coefficients from coef, writes in place."""',
        *[f"        {c} = coef[{i}]" + (" != 0" if c in conditions else "")
          for i, c in enumerate(coefs)],
        *[_INDENT + line for line in _elementwise_lines(p) + _detached_outputs(p)],
        f"        theta.copy_({python_name(p.theta_out)})",
        *[f"        {s}.copy_({python_name(o)})" for s, o in zip(states, p.state_out, strict=False)],
        "",
        "    @staticmethod",
        f"    def _forloop({', '.join(['theta', 'g', *states, *coefs])}):",
        '        """The for-loop path on one tensor; updates theta and states in place."""',
        *[_INDENT + line for line in inplace_lines(p, per_tensor=True)],
        "",
        "    @staticmethod",
        f"    def _foreach({', '.join(['theta', 'g', *states, *coefs])}):",
        '        """The foreach path over lists of tensors; updates theta and states in place."""',
        *[_INDENT + line for line in inplace_lines(p)],
        *_reduction_functions(p),
    ]
    return "\n".join(out) + "\n"


@functools.cache
def _runtime_text(name: str) -> str:
    return (Path(__file__).parent / f"{name}.py").read_text()


def runtime_modules() -> dict[str, str]:
    """The runtime modules' source texts, verbatim, in an order that loads each module after the
    siblings it imports.

    Example:
        >>> order = list(runtime_modules())
        >>> order.index("errors") < order.index("values") < order.index("optimizer")
        True
    """
    return {name: _runtime_text(name) for name in _load_order()}


@functools.cache
def _load_order() -> tuple[str, ...]:
    """The runtime modules in an order that loads each after the siblings it imports."""
    needs = {}
    for name in RUNTIME_MODULES:
        tree = ast.parse(_runtime_text(name))
        needs[name] = {node.module for node in ast.walk(tree)
                       if isinstance(node, ast.ImportFrom) and node.level == 1}
        unknown = needs[name] - set(RUNTIME_MODULES)
        if unknown:
            raise AssertionError(f"runtime module {name!r} imports {sorted(unknown)}, which are "
                                 "not runtime modules")
    order: list[str] = []
    while len(order) < len(needs):
        ready = [n for n in RUNTIME_MODULES if n not in order and needs[n] <= set(order)]
        if not ready:
            raise AssertionError(f"the runtime modules import each other in a circle: {needs}")
        order.append(ready[0])
    return tuple(order)


def _runtime_all() -> list[str]:
    """``__all__`` of the ``runtime`` module: the names generated code and users read."""
    for node in ast.parse(_runtime_text("runtime")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("the runtime module has no __all__")


def _literal(text: str) -> str:
    """``text`` as a Python string literal: a raw triple-quoted block where that is exact."""
    if "'''" not in text and not text.endswith(("\\", "'")) and "\r" not in text:
        return "r'''" + text + "'''"
    return repr(text)


_LOADER = '''

def _load_runtime(package: str, sources: dict) -> types.ModuleType:
    """Load the bundled runtime modules as the package ``package`` (once per process)."""
    if package not in sys.modules:
        root = types.ModuleType(package)
        root.__path__ = []
        loaded = {package: root}
        sys.modules[package] = root
        try:
            for name, text in sources.items():
                module = loaded[f"{package}.{name}"] = types.ModuleType(f"{package}.{name}")
                module.__package__ = package
                filename = f"<{package}.{name}>"
                linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
                sys.modules[module.__name__] = module
                setattr(root, name, module)
                exec(compile(text, filename, "exec"), module.__dict__)
        except BaseException:
            for key in loaded:  # a failed load leaves nothing half-made behind
                sys.modules.pop(key, None)
            raise
    return sys.modules[f"{package}.runtime"]
'''
#: the standalone module's own globals (beside the runtime's names)
_HEADER_NAMES = ("annotations", "linecache", "sys", "types", "_RUNTIME", "_PACKAGE",
                 "_load_runtime", "_runtime")


def module_source(design: Design, name: str | None = None) -> str:
    """A standalone module: the bundled runtime + the generated class; imports only torch (and
    the standard library).

    Example:
        >>> import ctopt
        >>> text = module_source(ctopt.zoo.get("adam"))
        >>> "import ctopt" in text, "class Adam(GeneratedOptimizer)" in text
        (False, True)
    """
    cls = _checked_class_name(name or class_name(design))
    sources = runtime_modules()
    digest = hashlib.sha256("\0".join(f"{n}\0{t}" for n, t in sources.items()).encode())
    header = (
        f'"""{cls}: an optimizer generated by ctopt from the design {design.name!r}.\n\n'
        "Standalone: needs torch only. Usage::\n\n"
        f"    opt = {cls}(model.parameters(), lr=...)\n"
        f'    # backend="auto"|"forloop"|"foreach"|"compiled", nonfinite="propagate"|"skip"|"raise",\n'
        "    # master_weights=False|True (float32 master copies of bf16/fp16 parameters),\n"
        "    # capturable=False|True (step counts and per-step numbers on the device)\n\n"
        "The runtime it runs on (the modules of ctopt.export listed in _RUNTIME, verbatim) is "
        "bundled\nbelow and loaded as a package of real modules.\n"
        '"""\n\n'
        "from __future__ import annotations\n\n"
        "import linecache\nimport sys\nimport types\n"
    )
    bundle = ["", "# ---- runtime (verbatim copies) ----", "_RUNTIME = {"]
    bundle += [f"    {n!r}: {_literal(t)}," for n, t in sources.items()]
    bundle += ["}", f"_PACKAGE = {'_ctopt_runtime_' + digest.hexdigest()[:16]!r}"]
    names = _runtime_all()
    binding = ["", "_runtime = _load_runtime(_PACKAGE, _RUNTIME)"]
    binding += [f"{n} = _runtime.{n}" for n in names]
    public = [cls, "flat_parameters", "GeneratedOptimizer", "CtoptError", "HyperparameterError",
              "UnsupportedError", "NonFiniteGradientError", "StateDictError"]
    return (header + _LOADER + "\n".join(bundle) + "\n" + "\n".join(binding)
            + "\n\n# ---- generated ----\n\n" + class_source(design, cls)
            + f"\n__all__ = {public!r}\n")
