"""The notebook's context travels with the cell: cell source + shell namespace -> :class:`Payload`.

A training cell usually relies on earlier cells (``model = build_model(LR)``). :func:`capture` finds every
name the cell reads that the notebook defined and ships it so the cell runs unchanged on every replica:

- imports the notebook ran (``import numpy as np``, ``from tensorflow import keras``) are replayed verbatim;
- functions and classes defined in the notebook travel by value (their source), with the names *they* use,
  transitively; literal constants (``LR = 0.01``) are written into the prelude as source;
- other small values are pickled (:attr:`Payload.values`);
- local ``.py`` modules and packages imported from the notebook's directory travel as files;
- input files the cell reads by a relative path are found at submission (:func:`find_inputs`): every
  string literal of the cell and of its shipped context that names an existing file, folder or glob in the
  notebook's folder, plus ``files=[...]`` (``--files``: files of any kind, folders, globs). They are listed
  in :attr:`Payload.inputs`; for Kubernetes their bytes travel too (:attr:`Payload.data`, at most
  :data:`MAX_SHIPPED_BYTES` in all); local replicas see the notebook's folder itself.

The runner executes ``files`` -> ``prelude`` -> ``values`` -> ``code``. Nothing here talks to a backend.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import linecache
import os
import pickle
import re
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .cell_inputs import find_inputs, human_size, inputs_summary, read_inputs
from .cell_names import free_names
from .local_modules import local_origin
from .payload import CaptureError, Payload

_LITERAL_TYPES = (int, float, complex, str, bytes, bool, type(None))
_MAX_LITERAL_REPR = 2000
# Namespace entries IPython itself puts there; never shipped.
_TF_MODULES = {"tensorflow", "keras", "tf_keras", "tensorflow_datasets"}
_ESCAPE_RE = re.compile(r"^\s*(?:[A-Za-z_][\w.,\s]*=\s*)?([!%])")
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# Input files that travel with a Kubernetes job, in all (in ConfigMaps of at most 1 MB each).


@dataclass
class Capture:
    """The result of :func:`capture`: the payload plus what went into it (for ``--dry-run``)."""

    payload: Payload
    imports: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)
    constants: list[str] = field(default_factory=list)
    values: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    inputs: dict[str, int] = field(default_factory=dict)
    backend: str = "local"

    def summary(self) -> str:
        """A few lines saying what travels with the cell."""

        def fmt(names):
            return ", ".join(names) if names else "-"

        lines = [
            f"payload: {human_size(self.payload.size)} (cell {len(self.payload.code.splitlines())} lines)",
            f"  imports:     {fmt(self.imports)}",
            f"  definitions: {fmt(self.definitions)}",
            f"  constants:   {fmt(self.constants)}",
            f"  values:      {fmt([f'{k} ({human_size(v)})' for k, v in self.values.items()])}",
            f"  files:       {fmt([f'{k} ({human_size(v)})' for k, v in self.files.items()])}",
        ]
        lines.extend(inputs_summary(self.inputs, self.backend))
        return "\n".join(lines)


# -- cell checks ----------------------------------------------------------------------------------
def check_cell(code: str) -> None:
    """Reject IPython magics and ``!`` shell escapes inside the trained cell.

    A cell that parses as Python has none (an escape is never valid Python), so only a cell that does
    not parse is searched for one.

    Raises:
        CaptureError: naming the line, telling the user to move it to another cell.
    """
    try:
        ast.parse(code)
        return
    except SyntaxError:
        pass
    for lineno, line in enumerate(code.splitlines(), 1):
        m = _ESCAPE_RE.match(line)
        if m is None:
            continue
        kind = "a shell escape ('!')" if m.group(1) == "!" else "an IPython magic ('%')"
        raise CaptureError(
            f"line {lineno} of the training cell is {kind}, {line.strip()[:60]!r}, which cannot run on the "
            "replicas; move it to a separate cell above, or write it in plain Python."
        )


# -- history: where did a name come from ----------------------------------------------------------
def _history_sources(shell) -> list[str]:
    """The source of every cell the shell compiled, oldest first.

    IPython registers each cell in ``linecache`` under the name its compiler chose, whether or not the
    cell was stored in the history; ``In`` is the fallback.
    """
    filenames = getattr(getattr(shell, "compile", None), "_filename_map", None)
    if isinstance(filenames, dict) and filenames:
        out = []
        for name in filenames:
            lines = linecache.cache.get(name)
            if lines and isinstance(lines[2], list):
                out.append("".join(lines[2]))
        if out:
            return out
    ns = getattr(shell, "user_ns", {}) or {}
    cells = ns.get("In")
    if not isinstance(cells, list):
        hm = getattr(shell, "history_manager", None)
        cells = list(getattr(hm, "input_hist_raw", []) or [])
    return [c for c in cells if c and isinstance(c, str)]


def _parse_cell(src: str, shell) -> ast.Module | None:
    try:
        if shell is not None and hasattr(shell, "transform_cell"):
            src = shell.transform_cell(src)
        return ast.parse(src)
    except (SyntaxError, ValueError, TypeError):
        return None
    except Exception:
        return None


def _import_index(shell) -> dict[str, str]:
    """name -> the last import statement (one alias, as source) that bound it in the notebook."""
    index: dict[str, str] = {}
    for src in _history_sources(shell):
        tree = _parse_cell(src, shell)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    stmt = ast.unparse(ast.Import(names=[a]))
                    index[a.asname or a.name.split(".")[0]] = stmt
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    if a.name == "*":
                        continue
                    stmt = ast.unparse(ast.ImportFrom(module=node.module, names=[a], level=0))
                    index[a.asname or a.name] = stmt
    return index


def _class_source(cls: type, shell) -> str | None:
    """The source of a class defined in a notebook cell (``inspect.getsource`` cannot find those)."""
    for member in cls.__dict__.values():
        fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
        if isinstance(fn, property):
            fn = fn.fget
        code = getattr(fn, "__code__", None)
        if code is None:
            continue
        lines = linecache.getlines(code.co_filename)
        if not lines:
            continue
        src = "".join(lines)
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ClassDef)
                and node.name == cls.__name__
                and node.lineno <= code.co_firstlineno <= (node.end_lineno or 0)
            ):
                return _with_decorators(src, node)
    # A class without methods: the last cell that defines it.
    for src in reversed(_history_sources(shell)):
        tree = _parse_cell(src, shell)
        if tree is None:
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
                if shell is not None and hasattr(shell, "transform_cell"):
                    src = shell.transform_cell(src)
                return _with_decorators(src, node)
    return None


def _with_decorators(src: str, node: ast.AST) -> str:
    lines = src.splitlines()
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    first = lines[start - 1]
    indent = len(first) - len(first.lstrip())
    return "\n".join(line[indent:] for line in lines[start - 1 : node.end_lineno])


def _function_source(fn: types.FunctionType, name: str) -> str | None:
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return None
    src = _dedent(src)
    if fn.__name__ == "<lambda>":
        try:
            tree = ast.parse(src)
        except SyntaxError:
            return None
        for node in ast.walk(tree):
            if isinstance(node, ast.Lambda):
                return f"{name} = {ast.get_source_segment(src, node)}"
        return None
    if fn.__name__ != name:
        return f"{src.rstrip()}\n{name} = {fn.__name__}"
    return src


def _dedent(src: str) -> str:
    import textwrap

    return textwrap.dedent(src)


def _is_literal(value, depth: int = 0) -> bool:
    if depth > 4:
        return False
    if isinstance(value, _LITERAL_TYPES):
        return not (isinstance(value, float) and value != value)
    if isinstance(value, (list, tuple, set, frozenset)) and type(value) in (list, tuple, set, frozenset):
        return all(_is_literal(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(_is_literal(k, depth + 1) and _is_literal(v, depth + 1) for k, v in value.items())
    return False


def _literal_source(name: str, value) -> str | None:
    if not _is_literal(value):
        return None
    text = repr(value)
    if len(text) > _MAX_LITERAL_REPR or "inf" in text:
        return None
    try:
        if ast.literal_eval(text) != value:
            return None
    except (ValueError, SyntaxError):
        return None
    return f"{name} = {text}"


def _describe(value) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


# -- the capture ------------------------------------------------------------------------------------
class _Collector:
    def __init__(self, shell, root: Path):
        self.shell = shell
        self.ns: Mapping = getattr(shell, "user_ns", {}) or {}
        hidden = getattr(shell, "user_ns_hidden", {}) or {}
        self.hidden = set(hidden) | _IPYTHON_NAMES
        self.root = root
        self.imports_index = _import_index(shell)
        self.import_lines: list[str] = []
        self.defs: list[str] = []
        self.def_names: list[str] = []
        self.constant_lines: list[str] = []
        self.constant_names: list[str] = []
        self.import_names: list[str] = []
        self.values: dict[str, bytes] = {}
        self.files: dict[str, str] = {}
        self.done: set[str] = set()
        self.visiting: set[str] = set()
        self.modules_done: set[str] = set()
        self.path_values: list = []

    # names ---------------------------------------------------------------
    def ship_names(self, names: Iterable[str], used_by: list[str]) -> None:
        for name in sorted(names):
            if name in self.done or name in self.visiting:
                continue
            if name in self.hidden or name not in self.ns:
                continue
            if name.startswith("_") and (name.strip("_") == "" or name[1:].lstrip("_i").isdigit()):
                continue  # IPython output/input history (_, __, _1, _i3)
            if hasattr(builtins, name) and self.ns[name] is getattr(builtins, name):
                continue
            self.visiting.add(name)
            try:
                self.ship(name, self.ns[name], used_by)
            finally:
                self.visiting.discard(name)
            self.done.add(name)

    def ship(self, name: str, value, used_by: list[str]) -> None:
        chain = [*used_by, name]
        if isinstance(value, types.ModuleType):
            stmt = self.imports_index.get(name)
            if stmt is None:
                modname = value.__name__
                stmt = f"import {modname}" if name == modname else f"import {modname} as {name}"
            self._add_import(name, stmt)
            self.ship_module_files(value.__name__)
            return
        stmt = self.imports_index.get(name)
        if stmt is not None and _import_gives(stmt, value):
            self._add_import(name, stmt)
            self.ship_module_files(stmt.split()[1])
            return
        inner = getattr(value, "python_function", None) or getattr(value, "__wrapped__", None)
        if isinstance(inner, types.FunctionType) and inner.__module__ == "__main__":
            # A decorated notebook function (`@tf.function`, a functools.wraps decorator): its source,
            # decorators included, rebuilds it.
            src = _function_source(inner, name)
            if src is not None:
                self._ship_source(name, src, chain)
                return
        if isinstance(value, types.FunctionType):
            if value.__module__ != "__main__" and value.__name__ != "<lambda>":
                if self._ship_by_reference(name, value):
                    return
            if value.__code__.co_freevars:
                raise self._unshippable(
                    chain,
                    value,
                    "a closure (a function defined inside another function)",
                    "define it at top level",
                )
            src = _function_source(value, name)
            if src is None:
                raise self._unshippable(
                    chain, value, "a function whose source cannot be found", "define it in a cell"
                )
            self._ship_source(name, src, chain)
            return
        if isinstance(value, type):
            if value.__module__ != "__main__":
                if self._ship_by_reference(name, value):
                    return
            src = _class_source(value, self.shell)
            if src is None:
                raise self._unshippable(
                    chain, value, "a class whose source cannot be found", "define it in a cell"
                )
            if value.__name__ != name:
                src = f"{src}\n{name} = {value.__name__}"
            self._ship_source(name, src, chain)
            return
        if (
            isinstance(value, (types.BuiltinFunctionType, types.MethodType))
            or callable(value)
            and hasattr(value, "__self__")
        ):
            if self._ship_by_reference(name, value):
                return
        lit = _literal_source(name, value)
        if lit is not None:
            self.constant_lines.append(lit)
            self.constant_names.append(name)
            return
        self._ship_value(name, value, chain)

    def _add_import(self, name: str, stmt: str) -> None:
        if stmt not in self.import_lines:
            self.import_lines.append(stmt)
        self.import_names.append(name)

    def _ship_by_reference(self, name: str, value) -> bool:
        module = getattr(value, "__module__", None)
        qual = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
        if not module or not qual or module == "__main__" or "<" in qual or "." in qual:
            return False
        mod = sys.modules.get(module)
        if mod is None or getattr(mod, qual, None) is not value:
            return False
        stmt = f"from {module} import {qual}" + (f" as {name}" if qual != name else "")
        self._add_import(name, stmt)
        self.ship_module_files(module)
        return True

    def _ship_source(self, name: str, src: str, chain: list[str]) -> None:
        try:
            names, imports = free_names(src)
        except SyntaxError:
            names, imports = set(), []
        names.discard(name)
        self.ship_names(names, chain)
        for modname, level in imports:
            if level == 0:
                self.ship_module_files(modname)
        self.defs.append(src.rstrip() + "\n")
        self.def_names.append(name)

    def _ship_value(self, name: str, value, chain: list[str]) -> None:
        top = type(value).__module__.split(".")[0]
        if top in _TF_MODULES:
            # Models, datasets, variables and optimizers must be built on the replicas, under the job's
            # strategy; one built in the kernel would train outside it.
            raise CaptureError(
                f"{_chain_text(chain)} a TensorFlow/Keras object ({_describe(value)}) built in the notebook, "
                "which must be created on the replicas under the job's strategy; build it inside the training "
                "cell, or in a function the cell calls."
            )
        try:
            data = pickle.dumps(value, protocol=4)
        except Exception as e:
            what = _unshippable_kind(value)
            raise CaptureError(
                f"{_chain_text(chain)} {what} ({_describe(value)}), which cannot be sent to the replicas "
                f"({type(e).__name__}: {str(e)[:80]}); create it inside the training cell, or in a function "
                "the cell calls, instead."
            ) from None
        cls = type(value)
        if cls.__module__ == "__main__" and cls.__qualname__ in self.ns:
            self.ship_names([cls.__qualname__], chain)
        if isinstance(value, os.PathLike):
            self.path_values.append(os.fspath(value))  # DATA = Path("data"): an input like a string
        self.values[name] = data

    def _unshippable(self, chain, value, what, fix) -> CaptureError:
        return CaptureError(
            f"{_chain_text(chain)} {what} ({_describe(value)}), which cannot be sent to the replicas; {fix}, "
            "or create it inside the training cell."
        )

    # files ---------------------------------------------------------------
    def ship_module_files(self, modname: str | None) -> None:
        if not modname:
            return
        top = modname.split(".")[0]
        if top in self.modules_done:
            return
        self.modules_done.add(top)
        origin = local_origin(top, self.root)
        if origin is None:
            return
        paths = sorted(origin.rglob("*.py")) if origin.is_dir() else [origin]
        for path in paths:
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(origin.parent).as_posix()
            text = path.read_text()
            self.files[rel] = text
            try:
                _, imports = free_names(text)
            except SyntaxError:
                continue
            for name, level in imports:
                if level == 0:
                    self.ship_module_files(name)


def _import_gives(stmt: str, value) -> bool:
    """Whether ``from m import n`` (as recorded in the history) still yields ``value``: a name the
    notebook imported and later rebound to something else travels as that value, not as the import."""
    try:
        node = ast.parse(stmt).body[0]
    except (SyntaxError, IndexError):
        return False
    if not isinstance(node, ast.ImportFrom) or not node.module:
        return False
    mod = sys.modules.get(node.module)
    return mod is not None and getattr(mod, node.names[0].name, _MISSING) is value


_MISSING = object()


def _chain_text(chain: list[str]) -> str:
    if len(chain) == 1:
        return f"the cell uses {chain[0]!r},"
    via = ", which uses ".join(repr(c) for c in chain)
    return f"the cell uses {via},"


def _unshippable_kind(value) -> str:
    import io
    import socket

    if isinstance(value, io.IOBase):
        return "an open file"
    if isinstance(value, socket.socket):
        return "a socket"
    if isinstance(value, types.GeneratorType):
        return "a generator"
    name = type(value).__name__.lower()
    if "session" in name or "connection" in name or "client" in name:
        return "a live session"
    if "lock" in name or "thread" in name:
        return "a thread object"
    return "an object"


def capture(
    code: str,
    shell=None,
    *,
    files: Iterable[str] = (),
    max_bytes: int | None = None,
    root: str | os.PathLike | None = None,
    backend: str | None = None,
) -> Capture:
    """Build the :class:`Payload` for ``code`` from the notebook ``shell``'s namespace.

    Args:
        code: the training cell's source (without the magic line).
        shell: the IPython shell (``get_ipython()``); ``None`` ships the cell alone.
        files: extra input files, folders or glob patterns relative to ``root`` (``--files``).
        max_bytes: the largest payload allowed (default: ``TFK8s.max_payload_bytes``).
        root: the notebook's directory (default: the current directory, where kernels start).
        backend: ``kubernetes`` reads the inputs' bytes into the payload (:func:`read_inputs`); other
            backends only list them, since their replicas see the notebook's folder.

    Raises:
        CaptureError: a magic or ``!`` line in the cell, a name that cannot be shipped (named), a
            payload over ``max_bytes``, or an input file problem (:func:`find_inputs`, :func:`read_inputs`).

    Example:
        >>> capture("model = build_model(LR)", get_ipython()).payload.prelude  # doctest: +SKIP
        'LR = 0.01\\ndef build_model(lr): ...'
    """
    check_cell(code)
    if max_bytes is None:
        from .config import current_config

        max_bytes = current_config().max_payload_bytes
    root_path = Path(root or os.getcwd()).resolve()
    c = _Collector(shell, root_path)
    try:
        names, imports = free_names(code)
    except SyntaxError:
        names, imports = set(), []
    for modname, level in imports:
        if level == 0:
            c.ship_module_files(modname)
    if shell is not None:
        c.ship_names(names, [])
    prelude_parts = []
    if c.import_lines:
        prelude_parts.append("\n".join(c.import_lines) + "\n")
    if c.constant_lines:
        prelude_parts.append("\n".join(c.constant_lines) + "\n")
    prelude_parts.extend(c.defs)
    prelude = "\n".join(prelude_parts)
    sources = [code, prelude, *(t for k, t in c.files.items() if k.endswith(".py"))]
    sources.append("\n".join(repr(p) for p in c.path_values if isinstance(p, str)))
    inputs = find_inputs(sources, root_path, files)
    for rel in c.files:
        inputs.pop(rel, None)  # a local module travels as code already
    data = read_inputs(inputs, root_path) if backend == "kubernetes" else {}
    payload = Payload(code=code, prelude=prelude, values=c.values, files=c.files, inputs=inputs, data=data)
    result = Capture(
        payload=payload,
        imports=c.import_names,
        definitions=c.def_names,
        constants=c.constant_names,
        values={k: len(v) for k, v in c.values.items()},
        files={k: len(v.encode()) for k, v in c.files.items()},
        inputs=inputs,
        backend=backend or "local",
    )
    size = payload.without_data().size
    if size > max_bytes:
        parts = [(k, v) for k, v in result.values.items()] + [(k, v) for k, v in result.files.items()]
        parts.sort(key=lambda kv: -kv[1])
        biggest = ", ".join(f"{k!r} ({human_size(v)})" for k, v in parts[:3]) or "the cell itself"
        raise CaptureError(
            f"the notebook context shipped with this cell is {human_size(size)}, over the "
            f"{human_size(max_bytes)} limit (largest: {biggest}); load the data inside the training cell "
            "(e.g. from a file or tf.data) instead of passing it from the notebook, or raise "
            "TFK8s.max_payload_bytes."
        )
    return result
