"""The README's two opening commands and CI stay in step."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def fenced_commands(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_readme_opens_with_the_main_job_then_the_tests():
    with open(f"{ROOT}/README.md") as handle:
        commands = fenced_commands(handle.read())
    main_job, tests = commands[0], commands[1]
    assert main_job.startswith("python3 -m venv .venv") and "lit-untrac" in main_job
    assert tests.endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_exactly():
    with open(f"{ROOT}/README.md") as handle:
        readme_tests = fenced_commands(handle.read())[1]
    test_command = readme_tests.split(" && ")[-1]
    with open(f"{ROOT}/.ci/run") as handle:
        ci_lines = [
            line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")
        ]
    assert ci_lines[-1] == test_command
    # CI installs what the README installs, CPU torch first.
    installs = [line for line in ci_lines if "pip install" in line]
    assert "torch==2.13.0" in installs[-2] and '-e ".[dev,smollm]"' in installs[-1]
