"""Fail unless every direct dependency in pyproject.toml is installed at exactly its declared floor.

Run by scripts/test-lowest with the interpreter of the lowest-versions venv, after
`uv pip install --resolution lowest-direct`: a resolver may lift a direct dependency above its
floor when another requirement forces it to, and then the floor would be declared but never
tested. Each dependency must declare a floor (`>=X`). torch is installed by pip as the CPU build
CI uses (PINNED below, which must equal its floor), so the CUDA build is never downloaded.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

PINNED = {"torch": "2.13.0"}
EXTRAS = ("test", "serve")


def direct_requirements(pyproject: Path) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = list(project["dependencies"])
    for extra in EXTRAS:
        specs += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(s) for s in specs]


def floor(req: Requirement) -> Version | None:
    lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    return max(lows) if lows else None


def problems(reqs: list[Requirement]) -> list[str]:
    out = []
    for req in reqs:
        try:
            installed = Version(version(req.name))
        except PackageNotFoundError:
            out.append(f"{req.name}: not installed")
            continue
        want = Version(PINNED[req.name]) if req.name in PINNED else floor(req)
        if want is None:
            out.append(f"{req.name}: pyproject.toml declares no lower bound ({req})")
        elif Version(installed.base_version) != want:  # 2.13.0+cpu counts as 2.13.0
            out.append(f"{req.name}: installed {installed}, but pyproject.toml's floor is {want} ({req}); "
                       "the floor is never tested: raise it to the version the resolver picked")
    return out


def main() -> int:
    reqs = direct_requirements(Path(__file__).resolve().parent.parent / "pyproject.toml")
    bad = problems(reqs)
    for line in bad:
        print(f"check_floors: {line}", file=sys.stderr)
    if not bad:
        print(f"check_floors: all {len(reqs)} direct dependencies installed at their declared floors")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
