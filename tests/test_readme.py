"""README stays true: its two set-up commands, the rule catalogue and the settings it documents."""

from __future__ import annotations

import re
from pathlib import Path

from tests.readme_sections import README, SECTIONS, section

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def commands(block: str) -> list[str]:
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    text = README.read_text(encoding="utf-8")
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = [commands(b) for b in bash_blocks(setup)]
    assert [len(b) for b in blocks] == [1, 1]
    main_job, tests = blocks[0][0], blocks[1][0]
    assert "nsp-drift replay sample" in main_job
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines(), "the README test command must appear verbatim in .ci/run"


def test_generated_sections_match_the_code() -> None:
    text = README.read_text(encoding="utf-8")
    for name, body in SECTIONS.items():
        assert section(text, name) == body, f"README {name} section is stale: run python -m tests.readme_sections"
