"""Project files that must agree with each other."""
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_declares_the_pyproject_dependencies():
    project = _pyproject()["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {line for line in pip_section if not line.startswith("-e")}
    assert listed == declared, (f"only in environment.yml: {sorted(listed - declared)}; "
                                f"only in pyproject.toml: {sorted(declared - listed)}")


def test_constraints_pin_every_direct_dependency():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    project = _pyproject()["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0]
        assert re.sub(r"[-_.]+", "-", name).lower() in pins, f"{name} is not pinned"
    assert "+" not in pins["torch"], "pin torch without a local build tag (+cpu/+cu...)"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", readme, re.M)
    assert re.search(r"^make lab$", readme, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def _readme_and_linked_docs() -> str:
    """README.md and every docs/*.md page it links to."""
    readme = (ROOT / "README.md").read_text()
    linked = sorted(set(re.findall(r"\]\((docs/[\w.-]+\.md)", readme)))
    assert linked, "the README links no page in docs/"
    return "\n".join([readme, *((ROOT / page).read_text() for page in linked)])


def test_every_environment_variable_is_documented():
    code = "\n".join(p.read_text() for p in (ROOT / "ragft_helpers").glob("*.py"))
    variables = set(re.findall(r"RAGFT_[A-Z_]+", code))
    documented = _readme_and_linked_docs()
    assert variables, "no RAGFT_* variables found: the pattern is wrong"
    missing = sorted(v for v in variables if v not in documented)
    assert not missing, f"{missing}: add them to 'Environment variables' in docs/operations.md"


def test_every_command_and_profile_is_documented():
    from ragft_helpers.config import PROFILES

    documented = _readme_and_linked_docs()
    targets = re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M)
    assert not [t for t in targets if f"make {t}" not in documented]
    cli = (ROOT / "ragft_helpers" / "cli.py").read_text()
    commands = re.findall(r'add_parser\(\s*"([a-z-]+)"', cli)
    assert commands and not [c for c in commands if f"ragft {c}" not in documented]
    assert not [p for p in PROFILES if f"`{p}`" not in documented]


def test_no_remote_code_is_trusted():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    files = [ROOT / f for f in tracked.stdout.split() if f.endswith((".py", ".ipynb"))]
    files = files or list(ROOT.glob("ragft_helpers/*.py"))
    needle = "trust_remote_code" + "=True"
    assert not [f for f in files if needle in f.read_text()]
