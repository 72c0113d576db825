"""README sections generated from the code (rules catalogue, settings).

``python -m tests.readme_sections`` rewrites them; tests/test_readme.py fails when they drift.
"""

from __future__ import annotations

import re
from pathlib import Path

from shared.core.output import render_rules
from shared.entrypoints.settings import DOCUMENTED

README = Path(__file__).resolve().parents[1] / "README.md"


def settings_table() -> str:
    lines = ["| setting | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {meaning} |" for name, meaning in DOCUMENTED.items()]
    return "\n".join(lines) + "\n"


def _cli(*args: str) -> str:
    import io

    from shared.entrypoints.cli import main

    out, err = io.StringIO(), io.StringIO()
    main(list(args), out, err)
    return out.getvalue()


def finding_example() -> str:
    """The bundled sample's VHD finding, as ``scan --format json`` prints it."""
    import json

    findings = json.loads(_cli("scan", "--estate", "sample", "--format", "json"))["findings"]
    (vhd,) = [f for f in findings if f["rule"] == "unmanaged-disk"]
    return "```json\n" + json.dumps(vhd, indent=2) + "\n```\n"


def replay_example() -> str:
    """What ``nsp-drift replay sample`` prints."""
    return "```\n$ nsp-drift replay sample\n" + _cli("replay", "sample") + "```\n"


SECTIONS = {
    "rules": render_rules("markdown"),
    "settings": settings_table(),
    "finding-example": finding_example(),
    "replay-example": replay_example(),
}


def section(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"README has no {name} markers"
    return match.group(1)


def rewrite() -> None:
    text = README.read_text(encoding="utf-8")
    for name, body in SECTIONS.items():
        text = re.sub(
            rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)",
            lambda m, body=body: m.group(1) + body + m.group(2),
            text,
            flags=re.S,
        )
    README.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    rewrite()
