"""The package layout of docs/design.md (issue 19): the root holds only the command line, every other module
lives in a package, and no package imports one downstream of it."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "classseg"
ORDER = ("utils", "data", "delivery", "models", "evaluation", "reporting", "training", "pipeline", "workflows",
         "commands")
LAZY_EXCEPTIONS = {"utils/guards.py"}  # leakage and output checks read data and cards inside functions
IMPORT = re.compile(r"^(\s*)(?:from|import) classseg\.(\w+)")


def test_the_package_root_holds_only_the_command_line():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py", "cli.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")) == sorted(ORDER)


def test_no_package_imports_one_downstream_of_it():
    rank = {name: i for i, name in enumerate(ORDER)}
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = IMPORT.match(line)
            if not m or m.group(2) not in rank or rank[m.group(2)] <= rank[rel.parts[0]]:
                continue
            if m.group(1) and rel.as_posix() in LAZY_EXCEPTIONS:
                continue  # an indented (lazy) import in a listed exception
            wrong.append(f"{rel}:{n}: {line.strip()}")
    assert wrong == []
