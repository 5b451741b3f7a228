#!/usr/bin/env python3
"""Sums up the suites run by run-tests.sh into one closing line: "fasttier: N passed, N failed, N skipped".

Arguments: the cargo test log, the Gradle JUnit XML results directory, the pytest JUnit XML file, and
optionally the JUnit XML results directory of the Testcontainers tests (tests/scripts/docker.sh). A suite
whose results are missing counts as one failure (a suite that did not run must not look green).
"""
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def cargo(log: Path):
    if not log.is_file():
        return None
    p = f = s = 0
    text = log.read_text(errors="replace")
    for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored", text):
        p, f, s = p + int(m[1]), f + int(m[2]), s + int(m[3])
    return (p, f, s) if p + f + s else None


def junit(files):
    p = f = s = 0
    seen = False
    for path in files:
        seen = True
        root = ET.parse(path).getroot()
        suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
        for suite in suites:
            tests = int(suite.get("tests", 0))
            fails = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skips = int(suite.get("skipped", 0))
            p, f, s = p + tests - fails - skips, f + fails, s + skips
    return (p, f, s) if seen else None


def main() -> int:
    cargo_log, gradle_dir, pytest_xml = map(Path, sys.argv[1:4])
    results = {
        "rust": cargo(cargo_log),
        "java": junit(sorted(gradle_dir.rglob("*.xml"))) if gradle_dir.is_dir() else None,
        "e2e": junit([pytest_xml]) if pytest_xml.is_file() else None,
    }
    if len(sys.argv) > 4:
        tc_dir = Path(sys.argv[4])
        tc_files = sorted(tc_dir.glob("*.xml")) if tc_dir.is_dir() else []
        results["testcontainers"] = junit(tc_files) if tc_files else None
    total = [0, 0, 0]
    for name, r in results.items():
        if r is None:
            print(f"{name}: no results (suite did not run)")
            r = (0, 1, 0)
        else:
            print(f"{name}: {r[0]} passed, {r[1]} failed, {r[2]} skipped")
        total = [a + b for a, b in zip(total, r)]
    print(f"fasttier: {total[0]} passed, {total[1]} failed, {total[2]} skipped")
    return 1 if total[1] else 0


if __name__ == "__main__":
    sys.exit(main())
