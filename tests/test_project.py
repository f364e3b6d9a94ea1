"""Project wiring: CI runs the README's test command; packaging never pulls torch through requirements."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_opens_with_setup_and_test_commands():
    setup, tests = readme_commands()
    assert setup.startswith("bash setup.sh") and "portraittalk demo" in setup
    assert "--random-weights" not in setup                     # the embedded demo model, a real face video
    assert tests.startswith("bash setup.sh") and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_requirements_do_not_pull_torch():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=\[ ]", line)[0].lower() for line in lines if line}
    assert not names & {"torch", "torchvision", "torchaudio"}


def test_no_pickle_loading_anywhere():
    """Weights load from safetensors. The one exception is the explicit conversion of a third party's checkpoint
    (convert/), and only with torch.load(weights_only=True), which refuses anything but tensors."""
    for path in (ROOT / "portraittalk_core").rglob("*.py"):
        text = path.read_text()
        assert "pickle.load" not in text, path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert path.parent.name == "convert" and "weights_only=True" in call, (path, call)


# -- the import layout (CONTRIBUTING.md: layout) ------------------------------------------------------------------
def _own_imports() -> list[tuple[str, str, int, bool, str]]:
    """(importing module, imported module, line, inside a function?, the line's text) for every import of the
    project's own modules in portraittalk_core/ and nodes/, relative imports resolved."""
    import ast

    found = []
    for path in [*(ROOT / "portraittalk_core").rglob("*.py"), *(ROOT / "nodes").rglob("*.py")]:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts if parts[-1] == "__init__" else parts[:-1]
        package = [p for p in package if p != "__init__"]
        module = ".".join(p for p in parts if p != "__init__")
        tree = ast.parse(path.read_text())
        lines = path.read_text().splitlines()
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = package[:len(package) - node.level + 1]
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            # "from . import face" imports a module (or package) named in the list, not the package itself
            named = [f"{target}.{a.name}" for a in node.names
                     if (ROOT / f"{target}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                     or (ROOT / f"{target}.{a.name}".replace(".", "/") / "__init__.py").exists()]
            for imported in named or [target]:
                if imported.startswith(("portraittalk_core", "nodes")):
                    found.append((module, imported, node.lineno, id(node) in in_function, lines[node.lineno - 1]))
    return found


def test_no_function_level_imports_of_our_own_modules_without_a_reason():
    """An import inside a function hides a dependency (and cycles): allowed only where it defers an optional heavy
    dependency, with a comment saying so on the line or above its block of imports."""
    for module, target, line, inside, text in _own_imports():
        if not inside:
            continue
        path = ROOT / (module.replace(".", "/") + ("/__init__.py" if (ROOT / module.replace(".", "/")).is_dir()
                                                   else ".py"))
        lines = path.read_text().splitlines()[:line]
        block = []
        for above in reversed(lines):
            if not above.strip().startswith(("from ", "import ", "#")) and above is not lines[-1]:
                break
            block.append(above)
        assert any("deferred" in b for b in block), f"{module}:{line} imports {target} inside a function"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_files_or_packages():
    modules = {m for m, *_ in _own_imports()}
    files: dict[str, set[str]] = {}
    packages: dict[str, set[str]] = {}
    for module, target, *_ in _own_imports():
        files.setdefault(module, set()).add(target)
        a, b = module.split(".")[:2], target.split(".")[:2]
        if a != b and len(a) == 2 and len(b) == 2:
            packages.setdefault(".".join(a), set()).add(".".join(b))
    files = {m: {t for t in ts if t in modules and t != m} for m, ts in files.items()}
    assert not _cycles(files)
    assert not _cycles(packages)


def test_nodes_import_only_the_cores_public_modules():
    for module, target, line, *_ in _own_imports():
        if module.startswith("nodes") and target.startswith("portraittalk_core"):
            assert not any(part.startswith("_") for part in target.split(".")), f"{module}:{line} imports {target}"
