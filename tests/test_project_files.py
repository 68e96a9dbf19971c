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


def test_every_environment_variable_is_documented():
    code = "\n".join(p.read_text() for p in (ROOT / "ragft_helpers").glob("*.py"))
    variables = set(re.findall(r"RAGFT_[A-Z_]+", code))
    readme = (ROOT / "README.md").read_text()
    assert variables, "no RAGFT_* variables found: the pattern is wrong"
    assert not [v for v in variables if v not in readme]


def test_no_remote_code_is_trusted():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    files = [ROOT / f for f in tracked.stdout.split() if f.endswith((".py", ".ipynb"))]
    files = files or list(ROOT.glob("ragft_helpers/*.py"))
    needle = "trust_remote_code" + "=True"
    assert not [f for f in files if needle in f.read_text()]
