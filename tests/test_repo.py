"""The README's commands are the ones CI and a newcomer run."""

import re

from tests.helpers import REPO


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text(), re.S)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    assert test_command in (REPO / ".ci" / "run").read_text()


def test_readme_main_command_sets_up_runs_the_demo_and_ends_with_the_report():
    main = readme_commands()[0]
    assert main.startswith("bash .ci/setup && ")
    assert "snakemake --cores 2" in main and "report.html" in main.split("&&")[-1]
