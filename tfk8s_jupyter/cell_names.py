"""Which names a block of Python source reads before binding them, and which modules it imports.

Pure analysis of source text (:func:`free_names`): :mod:`.capture` uses it to find what a training cell
needs from the notebook, and again for every function and class it ships.
"""

from __future__ import annotations

import ast


class _Names(ast.NodeVisitor):
    """Free names of a module-level block: loads anywhere, minus what the block binds before use."""

    def __init__(self) -> None:
        self.loads: dict[str, tuple[int, int]] = {}
        self.top_binds: dict[str, tuple[int, int]] = {}
        self.imports: list[tuple[str, int]] = []  # (module name, level)
        self._depth = 0
        self._locals: list[set[str]] = []

    _bind_at: tuple[int, int] | None = None

    def _bind(self, name: str, node: ast.AST) -> None:
        if self._depth == 0:
            pos = self._bind_at or (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
            self.top_binds.setdefault(name, pos)

    def visit_Assign(self, node: ast.Assign | ast.AnnAssign) -> None:
        # The value is evaluated before the targets are bound: `x = x + 1` reads the notebook's `x`.
        if node.value is not None:
            self.visit(node.value)
        if isinstance(node, ast.AnnAssign):
            self.visit(node.annotation)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        self._bind_at = (node.end_lineno or 0, node.end_col_offset or 0)
        try:
            for t in targets:
                self.visit(t)
        finally:
            self._bind_at = None

    visit_AnnAssign = visit_Assign

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.loads.setdefault(node.target.id, (node.lineno, node.col_offset))
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if any(node.id in scope for scope in self._locals):
                return
            self.loads.setdefault(node.id, (node.lineno, node.col_offset))
        else:
            self._bind(node.id, node)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.imports.append((a.name, 0))
            self._bind(a.asname or a.name.split(".")[0], node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        self.imports.append((mod, node.level))
        for a in node.names:
            if node.level == 0 and mod:
                self.imports.append((f"{mod}.{a.name}", 0))
            self._bind(a.asname or a.name, node)

    def _scope(self, node: ast.AST, name: str | None) -> None:
        if name:
            self._bind(name, node)
        for d in getattr(node, "decorator_list", []):
            self.visit(d)
        for b in getattr(node, "bases", []):
            self.visit(b)
        for k in getattr(node, "keywords", []):
            self.visit(k)
        args = getattr(node, "args", None)
        if isinstance(args, ast.arguments):
            for d in [*args.defaults, *args.kw_defaults]:
                if d is not None:
                    self.visit(d)
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None and a.annotation is not None:
                    self.visit(a.annotation)
        if getattr(node, "returns", None) is not None:
            self.visit(node.returns)
        self._depth += 1
        body = node.body if isinstance(node.body, list) else [node.body]
        self._locals.append(_local_names(node) if not isinstance(node, ast.ClassDef) else set())
        for stmt in body:
            self.visit(stmt)
        self._locals.pop()
        self._depth -= 1

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scope(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scope(node, node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scope(node, None)

    def _comprehension(self, node) -> None:
        self._depth += 1
        self._locals.append(
            {n.id for g in node.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        )
        self.generic_visit(node)
        self._locals.pop()
        self._depth -= 1

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


def _local_names(node: ast.AST) -> set[str]:
    """Parameters and names a function (or lambda) binds in its own body, unless declared global."""
    out: set[str] = set()
    args = getattr(node, "args", None)
    if isinstance(args, ast.arguments):
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if a is not None:
                out.add(a.arg)
    declared_global: set[str] = set()
    body = node.body if isinstance(node.body, list) else [node.body]
    stack = list(body)
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Global):
            declared_global.update(n.names)
        elif isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            out.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
            stack.extend(n.decorator_list)
            continue  # its body is its own scope
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name.split(".")[0]) for a in n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        elif isinstance(n, ast.Lambda):
            continue
        stack.extend(ast.iter_child_nodes(n))
    return out - declared_global


def free_names(source: str) -> tuple[set[str], list[tuple[str, int]]]:
    """Names ``source`` reads that it does not bind first, and the modules it imports.

    Parameters and local variables of functions defined in ``source`` are not reported.
    """
    tree = ast.parse(source)
    v = _Names()
    v.visit(tree)
    names = set()
    for name, pos in v.loads.items():
        bound = v.top_binds.get(name)
        if bound is None or pos < bound:
            names.add(name)
    return names, v.imports
