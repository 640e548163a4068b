"""Reads Autobahn's index.json and fails unless every case of every agent ended OK,
NON-STRICT or INFORMATIONAL (both the case and its closing handshake) and each agent
ran at least the expected number of cases. wstest itself exits 0 even when cases
fail or when it could not connect at all (then index.json is `{}`).

usage: summary.py INDEX_JSON AGENT=EXPECTED_CASES...
"""
import collections
import json
import sys

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


def case_key(case):
    return [int(part) for part in case.split(".")]


def main():
    index_path, expectations = sys.argv[1], sys.argv[2:]
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (OSError, ValueError) as e:
        print("autobahn: FAILED: no readable report at %s (%s)" % (index_path, e))
        return 1
    ok = True
    for expectation in expectations:
        agent, expected = expectation.split("=")
        cases = index.get(agent, {})
        behaviors = collections.Counter(c["behavior"] for c in cases.values())
        closes = collections.Counter(c["behaviorClose"] for c in cases.values())
        print("autobahn: %-8s %3d cases (expected %s): %s; closing handshake: %s" % (
            agent, len(cases), expected,
            ", ".join("%s %d" % kv for kv in sorted(behaviors.items())) or "none",
            ", ".join("%s %d" % kv for kv in sorted(closes.items())) or "none"))
        if len(cases) < int(expected):
            print("autobahn: FAILED: %s ran %d cases, fewer than %s (could wstest connect?)"
                  % (agent, len(cases), expected))
            ok = False
        for case in sorted(cases, key=case_key):
            c = cases[case]
            if c["behavior"] not in PASSING or c["behaviorClose"] not in PASSING:
                print("autobahn: FAILED: %s case %s: %s, closing handshake %s"
                      % (agent, case, c["behavior"], c["behaviorClose"]))
                ok = False
    print("autobahn: %s" % ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
