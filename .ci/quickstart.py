"""Print the README's quick-start commands, one per line: the first ``bash`` block under
``## Quick start``. CI runs exactly these lines, so the README and CI cannot drift apart."""

import re
import sys


def quickstart_commands(text: str) -> list:
    section = re.search(r"^## Quick start\s*$(.*?)(?=^## )", text, re.S | re.M)
    if not section:
        raise SystemExit("README.md has no '## Quick start' section")
    block = re.search(r"^```bash[ \t]*\n(.*?)^```", section.group(1), re.S | re.M)
    if not block:
        raise SystemExit("README.md's quick start has no ```bash block")
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "README.md", encoding="utf-8") as f:
        print("\n".join(quickstart_commands(f.read())))
