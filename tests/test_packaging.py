"""Packaging for the Comfy registry (https://docs.comfy.org/registry/specifications) and for pip: the name, no
torch dependency, [tool.comfy], the node archive's .comfyignore, fixes that work when copied, the bench's options."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TESTED_COMFYUI = "0.3.64"  # the ComfyUI the nodes are tested against (README)


def dependencies() -> list[str]:
    """The install's requirements: [project] dependencies, or the files they are read from when dynamic."""
    project = PYPROJECT["project"]
    if "dependencies" not in project.get("dynamic", []):
        return list(project.get("dependencies", []))
    files = PYPROJECT["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
    lines = [line.split("#")[0].strip() for name in files for line in (ROOT / name).read_text().splitlines()]
    return [line for line in lines if line]


def test_no_torch_in_the_package_dependencies():
    names = {Requirement(dep).name.lower() for dep in dependencies()}
    assert names and not names & {"torch", "torchvision", "torchaudio"}


def test_project_name_is_a_registry_node_id_without_comfyui():
    name = PYPROJECT["project"]["name"]
    assert "comfyui" not in name.lower()
    # The registry's rules: under 100 characters; letters, digits, '-', '_', '.'; starts with a letter; no two
    # special characters in a row.
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", name)
    assert re.fullmatch(r"\d+\.\d+\.\d+", PYPROJECT["project"]["version"])


def test_icon_is_a_raw_url_of_a_committed_image_in_this_repository():
    comfy = PYPROJECT["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    repository = PYPROJECT["project"]["urls"]["Repository"]
    owner_repo = repository.removeprefix("https://github.com/").strip("/")
    match = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(owner_repo)}/[^/]+/(.+)", comfy["Icon"])
    assert match, comfy["Icon"]
    path = ROOT / match.group(1)
    assert path.is_file(), path
    with Image.open(path) as icon:  # the registry takes SVG, PNG, JPG or GIF up to 800 x 400
        assert icon.format in {"PNG", "JPEG", "GIF"} and icon.width <= 800 and icon.height <= 400
        assert icon.width == icon.height
    if (ROOT / ".git").exists():  # raw.githubusercontent.com serves committed files only
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", match.group(1)], cwd=ROOT,
                                 capture_output=True)
        assert tracked.returncode == 0, f"{match.group(1)} is not committed"


def test_requires_comfyui_covers_the_tested_comfyui():
    spec = PYPROJECT["tool"]["comfy"]["requires-comfyui"]
    # comfy-cli's rule: comma-separated [operator]major.minor.patch; anything else is dropped with a warning.
    for part in spec.split(","):
        assert re.fullmatch(r"\s*(==|>=|<=|!=|~=|>|<)?\s*\d+\.\d+\.\d+\s*", part), spec
    assert TESTED_COMFYUI in SpecifierSet(spec)


def test_tool_comfy_has_no_web_field():
    # ComfyUI registers [tool.comfy] web under the project's name besides WEB_DIRECTORY under the folder's, so
    # the frontend extension would load twice.
    assert "web" not in PYPROJECT["tool"]["comfy"]


# --- .comfyignore ---------------------------------------------------------------------------------------------

def ignore_patterns() -> list[str]:
    lines = (ROOT / ".comfyignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> tuple[re.Pattern, bool]:
    """gitignore ("gitwildmatch", as comfy-cli reads .comfyignore) pattern -> (regex over a path, directory only)."""
    directory_only = pattern.endswith("/")
    pattern = pattern.rstrip("/")
    anchored = "/" in pattern
    pattern = pattern.lstrip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(("" if anchored else "(?:.*/)?") + out), directory_only


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a file (path relative to the root, '/'-separated) is left out of the archive."""
    parts = path.split("/")
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex, directory_only = _pattern_regex(pattern[1:] if negate else pattern)
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        candidates = prefixes[:-1] if directory_only else prefixes  # a file's parents are directories
        if any(regex.fullmatch(p) for p in candidates):
            result = not negate
    return result


def test_ignore_matcher_follows_gitignore_rules():
    assert ignored("tests/a/b.py", ["/tests/"]) and not ignored("x/tests.py", ["/tests/"])
    assert ignored("a/b/c.pyc", ["*.pyc"]) and ignored("a/__pycache__/c.py", ["__pycache__/"])
    assert not ignored("a/keep.pyc", ["*.pyc", "!keep.pyc"])
    assert ignored("docs/images/x.png", ["docs/**/*.png"]) and not ignored("web/docs/x.md", ["/docs/"])


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imports(path: Path, package: str) -> set[str]:
    """Every module an import statement in the file names, module level or inside functions (lazy imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # `from package import module`
    return found


def node_modules() -> dict[str, Path]:
    """The pack's own modules that ComfyUI loads: __init__.py, nodes/, and all they import, transitively."""
    own = ("nodes", "portraittalk_core")
    files = {"": ROOT / "__init__.py"}
    todo = ["nodes", *(f"nodes.{p.stem}" for p in (ROOT / "nodes").glob("*.py") if p.stem != "__init__")]
    todo += [m for m in _imports(ROOT / "__init__.py", "") if m.split(".")[0] in own]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in files or path is None:
            continue
        files[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:n]) for n in range(1, len(parts))]  # parent packages run first
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo += [m for m in _imports(path, package) if m.split(".")[0] in own]
    return files


def test_node_import_closure_is_found():
    modules = node_modules()
    assert {"nodes.loader", "portraittalk_core.comfyui.sampling", "portraittalk_core.generation.loop",
            "portraittalk_core.models.animate_net", "portraittalk_core.assets", "portraittalk_core.weights"} <= set(modules)
    # The command's code (training, dataset generation, evaluation, bench) and the diffusers host: never imported.
    command = ("training", "synth", "data", "evaluation", "cli", "bench", "smoke", "pipeline")
    assert [m for m in modules if m.split(".")[:2] in [["portraittalk_core", c] for c in command]] == []


def test_comfyignore_keeps_everything_the_nodes_need():
    patterns = ignore_patterns()
    needed = [path.relative_to(ROOT).as_posix() for path in node_modules().values()]
    needed += ["__init__.py", "pyproject.toml", "requirements.txt", "README.md",
               "portraittalk_core/assets/portraittalk_demo.safetensors", "portraittalk_core/assets/demo_face.png",
               "portraittalk_core/assets/reference.jpg", "portraittalk_core/assets/speech.flac"]
    needed += [p.relative_to(ROOT).as_posix() for folder in ("web", "workflows") for p in (ROOT / folder).rglob("*")
               if p.is_file()]
    assert [path for path in needed if ignored(path, patterns)] == []


def test_comfyignore_leaves_development_and_training_files_out():
    patterns = ignore_patterns()
    for path in ("tests/test_packaging.py", "tests/conftest.py", "tools/build_workflows.py", "docs/images/icon.png",
                 ".ci/run", "setup.sh", "portraittalk_core/training/trainer.py", "portraittalk_core/synth/render.py",
                 "portraittalk_core/evaluation/adfd.py", "portraittalk_core/cli.py", "portraittalk_core/bench.py"):
        assert ignored(path, patterns), path


# --- fixes that work when copied, and no torch --------------------------------------------------------------

def test_no_message_or_doc_offers_an_unpublished_package():
    # Neither comfyui-portraittalk nor portraittalk is on PyPI: `pip install "<name>[extra]"` cannot work.
    files = [ROOT / "README.md", ROOT / "setup.sh", *(ROOT / "portraittalk_core").rglob("*.py"),
             *(ROOT / "nodes").rglob("*.py"), *(ROOT / "web").rglob("*.md")]
    offenders = [str(f.relative_to(ROOT)) for f in files
                 if re.search(r"pip install [\"']?comfyui-portraittalk", f.read_text())]
    assert offenders == []


def test_train_without_accelerate_offers_a_fix_that_works(monkeypatch):
    from portraittalk_core import cli
    from portraittalk_core.errors import InputError

    monkeypatch.setitem(sys.modules, "accelerate", None)  # `import accelerate` raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "portraittalk_core.training.trainer", raising=False)
    with pytest.raises(InputError) as err:
        cli.main_train(argparse.Namespace())
    assert str(err.value).endswith("Fix: pip install accelerate")


def test_command_without_torch_ends_in_one_error_line():
    code = ("import sys; sys.modules['torch'] = None\n"  # as if torch were not installed
            "from portraittalk_core.cli import main\n"
            "sys.exit(main(['demo']))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: PyTorch is not installed") and "Fix: pip install torch" in last
    assert "Traceback" not in run.stderr


# --- bench ----------------------------------------------------------------------------------------------------

def _bench_parser() -> argparse.ArgumentParser:
    from portraittalk_core.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["bench"]


def test_bench_accepts_the_demo_config():
    args = _bench_parser().parse_args(["--config", "demo", "--frames", "4", "--steps", "1", "--no-baseline"])
    assert args.config == "demo"
    from portraittalk_core.config import PRESETS

    config = next(a for a in _bench_parser()._actions if a.dest == "config")
    assert set(config.choices) == set(PRESETS)


def test_every_bench_option_has_help():
    missing = [a.option_strings for a in _bench_parser()._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert missing == []
