#!/usr/bin/env python3
"""Reference values for privagg-dp's accountant, computed with Google's dp_accounting.

Usage:  pip install dp-accounting==0.6.0
        python3 make_dp_accounting_reference.py > dp_accounting_reference.json

Conventions: add/remove adjacency, z = sigma / sensitivity, q = Poisson sampling rate
(q = 1 composes plain Gaussians), RdpAccountant with its default orders and improved
RDP -> (eps, delta) conversion. Analytic Gaussian: gaussian_mechanism.get_epsilon_gaussian.
The Rust tests read the JSON this prints; CI does not need Python.
"""
import json
import math

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as rdp

# (z, q, rounds, delta): the regimes of research/dp.md section 5.3, plus a few more.
RDP_CASES = [
    (1.0, 1.0, 1, 1e-5),
    (1.0, 0.01, 1000, 1e-5),
    (1.1, 0.01, 10000, 1e-5),
    (0.8, 0.001, 100000, 1e-6),
    (2.0, 0.05, 500, 1e-5),
    (5.0, 1.0, 100, 1e-5),
    (0.5, 0.1, 50, 1e-5),   # optimum at a small fractional order
    (1.3, 0.02, 3000, 1e-7),
    (0.7, 0.3, 20, 1e-5),
    (3.0, 0.5, 200, 1e-6),
    (10.0, 0.01, 100000, 1e-5),
    (1.0, 1.0, 1000, 1e-5),
]

# Full per-order curves for these (z, q): one release.
CURVE_CASES = [(1.0, 0.01), (0.5, 0.1), (2.0, 0.05), (0.8, 0.3)]

# (sigma / sensitivity, delta) for one analytic-Gaussian release.
# (0.5, 1e-5) doubles as z = 5 over T = 100 rounds at q = 1 (z / sqrt(T) = 0.5).
ANALYTIC_CASES = [(1.0, 1e-5), (2.0, 1e-6), (0.5, 1e-5), (10.0, 1e-3)]


def rdp_epsilon(z, q, rounds, delta):
    acc = dp_accounting.rdp.RdpAccountant()
    event = dp_event.GaussianDpEvent(z)
    if q < 1.0:
        event = dp_event.PoissonSampledDpEvent(q, event)
    acc.compose(event, rounds)
    eps, order = acc.get_epsilon_and_optimal_order(delta)
    return float(eps), float(order)


def main():
    out = {
        "dp_accounting_version": "0.6.0",
        "default_orders": [float(a) for a in rdp.DEFAULT_RDP_ORDERS],
        "rdp_epsilon": [],
        "rdp_curves": [],
        "analytic_gaussian": [],
    }
    for z, q, rounds, delta in RDP_CASES:
        eps, order = rdp_epsilon(z, q, rounds, delta)
        out["rdp_epsilon"].append(
            {"z": z, "q": q, "rounds": rounds, "delta": delta, "epsilon": eps, "order": order}
        )
    for z, q in CURVE_CASES:
        curve = rdp._compute_rdp_poisson_subsampled_gaussian(q, z, rdp.DEFAULT_RDP_ORDERS)
        # Orders dp_accounting excludes (series not converged) are infinite: JSON null.
        rdp_values = [float(r) if math.isfinite(r) else None for r in curve]
        out["rdp_curves"].append({"z": z, "q": q, "rdp": rdp_values})
    for sigma, delta in ANALYTIC_CASES:
        eps = dp_accounting.gaussian_mechanism.get_epsilon_gaussian(sigma, delta)
        out["analytic_gaussian"].append({"sigma": sigma, "delta": delta, "epsilon": float(eps)})
    print(json.dumps(out, indent=1, allow_nan=False))


if __name__ == "__main__":
    main()
