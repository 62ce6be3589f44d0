"""Rewrite the glass/ code dependencies of every stage in dvc.yaml to exactly the modules that
stage's entry point imports (what tests/test_dvc_graph.py checks), then copy dvc.yaml to
configs/cpu/dvc.yaml (the CPU configuration's identical graph; a real file, not a symlink, because
DVC reads a committed symlink as a broken dvc.yaml when it loads metrics, plots or experiments
from git revisions). Run from the repo root:

    python tools/sync_stage_deps.py
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

CPU_GRAPH = "configs/cpu/dvc.yaml"

LIST_IMPORTED = """
import importlib.util, json, sys
from pathlib import Path
repo = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(repo))
spec = importlib.util.spec_from_file_location("stage_under_test", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
files = set()
for name, mod in list(sys.modules.items()):
    path = getattr(mod, "__file__", None)
    if (name == "glass" or name.startswith("glass.")) and path:
        files.add(Path(path).resolve().relative_to(repo).as_posix())
print(json.dumps(sorted(files)))
"""


def imported_glass_files(script: str, cwd: str | Path = ".") -> list[str]:
    """The glass/ files (relative to the repo) that importing ``script`` loads, in a fresh
    interpreter so nothing imported earlier counts."""
    out = subprocess.run([sys.executable, "-c", LIST_IMPORTED, ".", script], capture_output=True,
                         text=True, check=True, cwd=cwd).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    path = Path("dvc.yaml")
    text = path.read_text()
    for name, stage in yaml.safe_load(text)["stages"].items():
        script = next(d for d in stage["deps"] if d.startswith("stages/"))
        files = imported_glass_files(script)
        start = text.index(f"\n  {name}:\n")
        following = re.search(r"\n  [a-z_0-9]+:\n", text[start + 5:])
        end = start + 5 + following.start() if following else len(text)
        lines = [line for line in text[start:end].split("\n") if not line.strip().startswith("- glass/")]
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {script}") + 1
        lines[at:at] = [f"      - {f}" for f in files]
        text = text[:start] + "\n".join(lines) + text[end:]
    path.write_text(text)
    Path(CPU_GRAPH).unlink(missing_ok=True)
    Path(CPU_GRAPH).write_text(text)


if __name__ == "__main__":
    main()
