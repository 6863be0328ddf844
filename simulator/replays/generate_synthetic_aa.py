#!/usr/bin/env python3
"""Writes simulator/replays/synthetic-aa.json: a SYNTHETIC A/A replay.

The repo has no recorded production replay. This one is generated, once,
by this script (seeded, standard library only, so the same on every
machine: `python3 simulator/replays/generate_synthetic_aa.py`), to give the
replay path of canaryd-sim per-interval rates with the dispersion of real
traffic rather than of independent requests. Nothing in it was measured.

What it models, per 1-minute interval over 2 days, for two arms recorded
separately (an A/A: the same version on two pools of 8 hosts each, half the
traffic each), with no difference between the arms in the long run:
- traffic: 200 req/s on average with a day/night swing of +-50%, and a
  minute-to-minute wobble of the total (Poisson, normal-approximated);
- per-host wobble: each host's error rate drifts as a mean-one lognormal
  AR(1) (log-sd 0.3 at equilibrium, about 20 minutes' memory); an arm's
  rate is its hosts' traffic-weighted mix, so each arm's rate wanders on
  its own;
- bursts: a shared incident (a dependency failing: both arms' errors x2
  for 3-10 minutes) about every 6 hours, and one host's errors x3 for 1-3
  minutes about every 4 hours per arm. Both are sized so that an arm's true
  error rate stays about under the 0.5% thresholds of the seed policies
  (printed when the file is written: at most 0.51%, above 0.5% in 2
  arm-minutes of 5,760); with x4 incidents
  the error-rate thresholds of product-example and recommender fired in
  about 2% of A/A runs, rightly: the rate was above 0.5% then;
- sessions: requests come in sessions of 20 whose error and click rates
  are drawn from a Beta around the arm's rate with intra-session
  correlation 0.05 (errors) and 0.05 (clicks);
- clicks: CTR 5% with a shared day/night swing of +-10% and a per-arm
  per-minute wobble of log-sd 0.1 (the users each arm happens to get);
- approvals: 30% of requests in two groups (`a` 60%, `b` 40% of
  requests), as `simulator/policies/product-example.yaml` reads them.
Impressions equal requests. No latency (the replay format has none).
Binomials and Poissons above a mean of 30 are drawn as rounded normals,
exactly below.
"""

import json
import math
import os
import random

SEED = 16
MINUTES = 2 * 24 * 60
RPS = 200.0
HOSTS = 8
SESSION = 20
RHO_ERR = 0.05
RHO_CLICK = 0.05
ERROR_RATE = 0.002
CTR = 0.05
APPROVAL = 0.3
GROUP_A = 0.6
HOST_SD = 0.3
HOST_PHI = 0.95

rng = random.Random(SEED)


def poisson(mean):
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    k, p, limit = 0, 1.0, math.exp(-mean)
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def binomial(n, p):
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    if n * min(p, 1 - p) > 30:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    return sum(1 for _ in range(n) if rng.random() < p)


def session_count(n, p, rho):
    """Events among n requests in sessions of SESSION, each session's rate
    from a Beta with mean p and intra-class correlation rho."""
    s = (1 - rho) / rho
    a, b = p * s, (1 - p) * s
    total = 0
    while n > 0:
        k = min(n, SESSION)
        total += binomial(k, rng.betavariate(a, b))
        n -= k
    return total


class Arm:
    def __init__(self):
        w = [rng.uniform(0.8, 1.2) for _ in range(HOSTS)]
        self.shares = [x / sum(w) for x in w]
        sd0 = HOST_SD
        self.drift = [rng.gauss(0, sd0) for _ in range(HOSTS)]
        self.host_burst = [0] * HOSTS  # minutes left

    def error_factor(self):
        innovation = HOST_SD * math.sqrt(1 - HOST_PHI**2)
        f = 0.0
        for h in range(HOSTS):
            self.drift[h] = HOST_PHI * self.drift[h] + rng.gauss(0, innovation)
            burst = 3.0 if self.host_burst[h] > 0 else 1.0
            self.host_burst[h] = max(0, self.host_burst[h] - 1)
            f += self.shares[h] * burst * math.exp(self.drift[h] - HOST_SD**2 / 2)
        if rng.random() < 1 / 240:
            self.host_burst[rng.randrange(HOSTS)] = rng.randint(1, 3)
        return f


def main():
    arms = {"baseline": Arm(), "canary": Arm()}
    shared_burst = 0
    intervals = []
    highest = 0.0
    above = 0
    for t in range(MINUTES):
        day = 2 * math.pi * t / 1440
        total = poisson(RPS * 60 * (1 + 0.5 * math.sin(day)))
        n_base = binomial(total, 0.5)
        if shared_burst == 0 and rng.random() < 1 / 360:
            shared_burst = rng.randint(3, 10)
        common_err = 2.0 if shared_burst > 0 else 1.0
        shared_burst = max(0, shared_burst - 1)
        ctr_t = CTR * (1 + 0.1 * math.sin(day + 1.0))
        rec = {}
        for name, n in (("baseline", n_base), ("canary", total - n_base)):
            arm = arms[name]
            p_err = min(0.5, ERROR_RATE * common_err * arm.error_factor())
            highest = max(highest, p_err)
            above += p_err > 0.005
            p_click = min(0.5, ctr_t * math.exp(rng.gauss(0, 0.1) - 0.005))
            n_a = binomial(n, GROUP_A)
            rec[name] = {
                "counters": {
                    "requests": n,
                    "impressions": n,
                    "errors": session_count(n, p_err, RHO_ERR),
                    "clicks": session_count(n, p_click, RHO_CLICK),
                    "approvals": 0,
                },
                "groups": {
                    "requests": {"a": n_a, "b": n - n_a},
                    "approvals": {
                        "a": binomial(n_a, APPROVAL),
                        "b": binomial(n - n_a, APPROVAL),
                    },
                },
            }
            g = rec[name]["groups"]["approvals"]
            rec[name]["counters"]["approvals"] = g["a"] + g["b"]
        intervals.append(rec)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic-aa.json")
    with open(out, "w") as f:
        f.write('{"name": "synthetic-aa (SYNTHETIC, not a recording: simulator/replays/generate_synthetic_aa.py, seed 16)",\n')
        f.write(' "interval": "1m",\n "intervals": [\n')
        f.write(",\n".join(json.dumps(r, sort_keys=True, separators=(",", ":")) for r in intervals))
        f.write("\n]}\n")
    print(f"wrote {out}: highest true error rate of an arm {highest:.4%}, above 0.5% in {above} arm-minutes of {2 * MINUTES}")


if __name__ == "__main__":
    main()
