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
    for path in (ROOT / "portraittalk_core").rglob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "pickle.load" not in text, path
