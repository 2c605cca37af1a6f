"""Every dependency's license expression must be satisfiable with the
permissive licenses below (`A OR B` needs one side, `A AND B` both, `/` is
the old spelling of OR). Reads `cargo metadata` on stdin; exits 1 naming
each package that does not pass, or that declares no license."""

import json
import re
import sys

ALLOWED = {
    "MIT", "MIT-0", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC",
    "Unicode-3.0", "Unlicense", "Zlib", "CC0-1.0", "BSL-1.0",
    "CDLA-Permissive-2.0",
}


def ok(expr):
    tokens = re.findall(r"\(|\)|[^\s()/]+|/", expr)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom():
        if peek() == "(":
            take()
            v = disj()
            if take() != ")":
                raise ValueError(expr)
            return v
        lic = take()
        if peek() == "WITH":
            take()
            take()  # an exception only widens what the license allows
        return lic in ALLOWED

    def conj():
        v = atom()
        while peek() == "AND":
            take()
            v = atom() and v
        return v

    def disj():
        v = conj()
        while peek() in ("OR", "/"):
            take()
            v = conj() or v
        return v

    v = disj()
    if pos != len(tokens):
        raise ValueError(expr)
    return v


bad = []
for p in json.load(sys.stdin)["packages"]:
    if p["source"] is None:
        continue  # this workspace's own crates
    lic = p.get("license")
    try:
        if not lic or not ok(lic):
            bad.append(f"{p['name']} {p['version']}: {lic!r}")
    except (ValueError, IndexError):
        bad.append(f"{p['name']} {p['version']}: unreadable license {lic!r}")
if bad:
    print("licenses outside the allowed set (.ci/licenses.py):", *bad, sep="\n  ")
    sys.exit(1)
print("licenses: every dependency is under an allowed license")
