#!/usr/bin/env python3
"""PLD reference values for privagg-dp's PLD accountant, computed with Google's dp_accounting.

Usage:  python3 -m venv /tmp/venv-dpacc && /tmp/venv-dpacc/bin/pip install dp-accounting==0.6.0
        /tmp/venv-dpacc/bin/python make_dp_accounting_pld_reference.py > dp_accounting_pld_reference.json

Sibling of make_dp_accounting_reference.py (the RDP table) with the same conventions:
add/remove adjacency, z = sigma / sensitivity, q = Poisson sampling rate. Each case runs
dp_accounting.pld.PLDAccountant(value_discretization_interval=h) (connect-the-dots,
pessimistic estimate: the defaults) on `rounds` compositions of GaussianDpEvent(z)
(q = 1) or PoissonSampledDpEvent(q, GaussianDpEvent(z)) (q < 1) and records
get_epsilon(delta). The interval h is recorded per case. The Rust tests read the JSON this
prints; CI does not need Python.
"""
import json
import time
import sys

import dp_accounting
from dp_accounting import dp_event

# (z, q, rounds, delta, value_discretization_interval). The first two are the issue's
# example (z = 0.8, 1000 rounds, delta = 1e-5, no sampling and q = 0.01); then the RDP
# table's spread (research/dp.md section 5.3) and a few short compositions.
PLD_CASES = [
    (0.8, 1.0, 1000, 1e-5, 1e-4),
    (0.8, 0.01, 1000, 1e-5, 1e-4),
    (1.0, 1.0, 1, 1e-5, 1e-4),
    (1.0, 0.01, 1000, 1e-5, 1e-4),
    (2.0, 0.05, 500, 1e-5, 1e-5),  # discretisation check: 1e-4 vs 1e-5
    (1.1, 0.01, 10000, 1e-5, 1e-4),
    (0.8, 0.001, 100000, 1e-6, 1e-4),
    (2.0, 0.05, 500, 1e-5, 1e-4),
    (5.0, 1.0, 100, 1e-5, 1e-4),
    (0.5, 0.1, 50, 1e-5, 1e-4),
    (1.3, 0.02, 3000, 1e-7, 1e-4),
    (0.7, 0.3, 20, 1e-5, 1e-4),
    (3.0, 0.5, 200, 1e-6, 1e-4),
    (10.0, 0.01, 100000, 1e-5, 1e-4),
    (1.0, 1.0, 1000, 1e-5, 1e-4),
    (0.8, 0.01, 1, 1e-5, 1e-4),
    (2.0, 0.2, 5, 1e-5, 1e-4),
    (1.5, 0.9, 10, 1e-5, 1e-4),
]


def pld_epsilon(z, q, rounds, delta, h):
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=h)
    event = dp_event.GaussianDpEvent(z)
    if q < 1.0:
        event = dp_event.PoissonSampledDpEvent(q, event)
    acc.compose(event, rounds)
    return float(acc.get_epsilon(delta))


def main():
    out = {"dp_accounting_version": "0.6.0", "pld_epsilon": []}
    for z, q, rounds, delta, h in PLD_CASES:
        start = time.time()
        eps = pld_epsilon(z, q, rounds, delta, h)
        print(f"z={z} q={q} T={rounds} delta={delta} h={h}: eps={eps} "
              f"({time.time() - start:.1f} s)", file=sys.stderr)
        out["pld_epsilon"].append({
            "z": z, "q": q, "rounds": rounds, "delta": delta,
            "value_discretization_interval": h, "epsilon": eps,
        })
    print(json.dumps(out, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
