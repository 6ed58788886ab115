"""Print requirements from pyproject.toml, the one list of deephash's dependencies, one per line.

    python .ci/requirements.py build                  # [build-system] requires
    python .ci/requirements.py runtime test embed     # [project] dependencies and the named extras
    python .ci/requirements.py --without torch build  # leave out packages pinned elsewhere

The Makefile and .ci/run install with it what `pip install -e .[EXTRA]` cannot: the build
requirements, which must be in the environment before a `--no-build-isolation` build (the
extension compiles against the torch installed there), and the dependencies of an environment
that uses a compiled library without installing the package.
"""
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors a TOML reader
    from pip._vendor import tomli as tomllib


def name_of(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def main(argv: list[str]) -> int:
    without = set()
    sections = []
    args = iter(argv)
    for a in args:
        if a == "--without":
            without.add(next(args, "").lower())
        else:
            sections.append(a)
    if not sections:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    extras = pyproject["project"].get("optional-dependencies", {})
    out = []
    for s in sections:
        if s == "build":
            reqs = pyproject["build-system"]["requires"]
        elif s == "runtime":
            reqs = pyproject["project"]["dependencies"]
        elif s in extras:
            reqs = extras[s]
        else:
            print(f"requirements.py: no section {s!r} in pyproject.toml (build, runtime, "
                  f"or an extra: {', '.join(extras)})", file=sys.stderr)
            return 2
        out += [r for r in reqs if name_of(r) not in without and r not in out]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
