"""Whether an imported module is the notebook's own code (a ``.py`` file or package beside it) rather
than something installed: :func:`local_origin`. Such modules travel with the cell as files."""

from __future__ import annotations

import functools
import importlib.util
import sys
import sysconfig
from pathlib import Path


def _site_roots() -> list[Path]:
    roots = set()
    for key in ("purelib", "platlib", "stdlib", "platstdlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            roots.add(p)
    roots.update(p for p in sys.path if p and p.rstrip("/").endswith(("site-packages", "dist-packages")))
    return [Path(r).resolve() for r in roots]


@functools.lru_cache(maxsize=1)
def _installed_top_levels() -> frozenset[str]:
    """Top-level module names that belong to an installed distribution."""
    try:
        from importlib.metadata import packages_distributions

        return frozenset(packages_distributions()) | {"tfk8s_jupyter"}
    except Exception:
        return frozenset({"tfk8s_jupyter"})


@functools.lru_cache(maxsize=1)
def _editable_roots() -> frozenset[Path]:
    """Directories that ``.pth`` files put on ``sys.path`` (where editable installs live)."""
    out = set()
    for site in _site_roots():
        for pth in site.glob("*.pth") if site.is_dir() else []:
            try:
                lines = pth.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if line and not line.startswith(("#", "import")) and Path(line).is_dir():
                    out.add(Path(line).resolve())
    return frozenset(out)


def local_origin(modname: str, root: Path) -> Path | None:
    """The file (or package directory) of ``modname`` when it is the notebook's own code: under ``root``,
    not in a site-packages directory, and not an installed distribution."""
    if not modname:
        return None
    top = modname.split(".")[0]
    if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
        return None
    mod = sys.modules.get(top)
    origin = getattr(mod, "__file__", None) if mod is not None else None
    if origin is None:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError, AttributeError):
            return None
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            return None
        origin = spec.origin
    path = Path(origin).resolve()
    try:
        path.relative_to(root)
    except ValueError:
        return None
    if any(part in ("site-packages", "dist-packages") for part in path.parts):
        return None
    if any(site == path or site in path.parents for site in _site_roots()):
        return None
    if top in _installed_top_levels():
        return None
    if path.name == "__init__.py":
        if path.parent.parent in _editable_roots():
            return None  # a package installed in editable mode
        return path.parent
    return path if path.suffix == ".py" else None
