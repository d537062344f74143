"""Mean, spread, harmonic mean and paired differences over seeds and datasets: one implementation for the
tables, the suite and the sweep."""
import math
import statistics
from dataclasses import dataclass


@dataclass
class Stat:
    """A mean over seeds (or a published number): ``seeds`` are the seeds it is computed from."""

    mean: float = None
    std: float = None
    seeds: tuple = ()
    complete: bool = True
    published: bool = False


def harmonic_mean(a, b):
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def paired_difference(a, b, confidence=0.95):
    """The paired difference ``a[i] - b[i]`` of two methods measured on the same cells (e.g. seed x dataset):
    ``{"mean", "low", "high", "n"}``, with the two-sided Student t interval of the mean difference at
    ``confidence`` (``low`` and ``high`` are None below two cells)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same cells; got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    if not diffs:
        raise ValueError("no paired cells")
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


def mean_std(values):
    """``(mean, standard deviation)`` of the values, population form (numpy's default, as Dassl's
    parse_test_res.py); ``None`` when there are none."""
    values = list(values)
    if not values:
        return None
    return statistics.fmean(values), statistics.pstdev(values)


def summarise(by_seed, expected):
    seeds = tuple(sorted(by_seed))
    spread = mean_std(by_seed[seed] for seed in seeds)
    if spread is None:
        return Stat(seeds=(), complete=False)
    return Stat(*spread, seeds, set(expected) <= set(seeds))


def average_over(per_part, stats, expected):
    """The mean of several parts' means (datasets), with its spread over the seeds for which every part has a run:
    ``(Stat, {seed: average of that seed})``. ``per_part``: part -> seed -> value; ``stats``: part -> Stat. A part
    with no run at all leaves the mean over the parts present, marked incomplete, and no spread."""
    parts = list(per_part)
    present = [stats[part].mean for part in parts if stats[part].mean is not None]
    if len(present) < len(parts) or not parts:
        return Stat(statistics.fmean(present) if present else None, None, (), False), {}
    full_seeds = [seed for seed in expected if all(seed in per_part[part] for part in parts)]
    per_seed = {seed: statistics.fmean(per_part[part][seed] for part in parts) for seed in full_seeds}
    spread = statistics.pstdev(per_seed.values()) if per_seed else None
    complete = all(stats[part].complete for part in parts)
    return Stat(statistics.fmean(present), spread, tuple(full_seeds), complete), per_seed


def harmonic_stat(base, new, base_by_seed, new_by_seed):
    """HM of the mean Base and the mean New (as the papers), with the spread of the per-seed HMs."""
    both = [seed for seed in base_by_seed if seed in new_by_seed]
    values = [harmonic_mean(base_by_seed[seed], new_by_seed[seed]) for seed in both]
    mean = None if base.mean is None or new.mean is None else harmonic_mean(base.mean, new.mean)
    return Stat(mean, statistics.pstdev(values) if values else None, tuple(both), base.complete and new.complete)
