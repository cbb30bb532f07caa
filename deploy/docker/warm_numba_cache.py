"""Compiles every cached numba kernel of the installed mesh into NUMBA_CACHE_DIR, then proves that
a fresh process loads them all from that cache without compiling anything.

Run at image build (deploy/docker/Dockerfile) with NUMBA_CACHE_DIR and NUMBA_CPU_NAME set as at
runtime, and by ``make`` after every change to a kernel's source (then without NUMBA_CACHE_DIR:
numba's default, the ``__pycache__`` beside each module), so neither a test nor a service's first
call pays the compilation (about 15 s on a quiet machine). Why both variables matter (numba
0.68, numba/core/caching.py and codegen.py):

- A cache entry is keyed by the source file's directory, its content hash, the signature and the
  codegen's CPU name and features. With the host CPU (the default) a cache built on one machine
  misses on a node with another CPU; NUMBA_CPU_NAME=generic makes the key, and the code, the same
  on every machine of the architecture (the kernel is branchy scalar code: measured no slower).
- numba only uses a cache directory it can write to (it creates a temporary file there when a
  kernel module is imported), even when every entry is present. A read-only NUMBA_CACHE_DIR is
  skipped, and with no other writable location the import fails. So the image keeps this warmed
  copy read-only and each pod copies it into a writable emptyDir first (an initContainer).

Exits non-zero, naming the kernel, when a cached kernel is not compiled by the workload below or
when the fresh process had to compile one: the image would then start cold.

    NUMBA_CACHE_DIR=/opt/qtmesh/numba-cache NUMBA_CPU_NAME=generic python warm_numba_cache.py
    python deploy/docker/warm_numba_cache.py         # the source tree's own cache
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import numba
from numba.core.caching import NullCache
from numba.core.dispatcher import Dispatcher

DISTRIBUTION = "qtmesh"


def workload() -> None:
    """Runs every cached kernel with the argument types the services pass: an evaluation of each
    strategy family (every indicator, walk-forward folds), a live backtest (no folds) and a
    regime model's fit."""
    import numpy as np

    from backtest.evaluation import Evaluator
    from backtest.indicators import BarData
    from market.synthetic import SyntheticMarketSpec, generate
    from qtmesh.base.genome import Policy, StrategyFamily
    from world_model.regimes import RegimeSettings, fit_regimes

    data = BarData(generate(SyntheticMarketSpec(seed=7, days=2)).series[0])
    policy = Policy()
    genomes = [policy.default_genome(family) for family in StrategyFamily]
    evaluator = Evaluator()
    evaluator.evaluate(genomes, data)
    evaluator.backtest(genomes, data)
    series = generate(SyntheticMarketSpec(seed=7, days=2)).series[0]
    fit_regimes(series.time, series.close, settings=RegimeSettings(), rng=np.random.default_rng(7))


def _modules() -> Iterator[ModuleType]:
    """Every module of the packages this distribution installs (imported, so kernels exist)."""
    tops = sorted(
        top
        for top, dists in importlib.metadata.packages_distributions().items()
        if DISTRIBUTION in dists
    )
    for top in tops:
        package = importlib.import_module(top)
        yield package
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{top}."):
            # A __main__ would run its command; a store's migrations are scripts Alembic runs.
            if not info.name.endswith(".__main__") and ".migrations" not in info.name:
                yield importlib.import_module(info.name)


def cached_kernels() -> dict[str, Dispatcher]:
    """Every ``njit(cache=True)`` function, by qualified name. Functions inlined into their
    callers (``inline="always"``) are never compiled on their own and are left out."""
    kernels = {}
    for module in _modules():
        for name, value in vars(module).items():
            if (
                isinstance(value, Dispatcher)
                and value.py_func.__module__ == module.__name__
                and not isinstance(value._cache, NullCache)
                and value.targetoptions.get("inline") != "always"
            ):
                kernels[f"{module.__name__}.{name}"] = value
    return kernels


def warm() -> int:
    # Start from an empty cache: a caller loaded from a warm cache never compiles its callees,
    # which would then look cold below (and the cache may hold entries of older sources).
    for kernel in cached_kernels().values():
        kernel._cache.flush()
    workload()
    kernels = cached_kernels()
    cold = [name for name, kernel in kernels.items() if not kernel.signatures]
    if cold:
        print(f"not compiled by the warm-up workload: {', '.join(cold)}", file=sys.stderr)
        return 1
    # A fresh interpreter: nothing compiled in this one can be reused by accident.
    check = subprocess.run([sys.executable, __file__, "--check"], check=False)
    if check.returncode != 0:
        return check.returncode
    where = numba.config.CACHE_DIR or "each module's __pycache__"
    print(f"numba cache warmed: {len(kernels)} kernels in {where}")
    return 0


def check() -> int:
    workload()
    kernels = cached_kernels()
    compiled = [name for name, kernel in kernels.items() if kernel.stats.cache_misses]
    if compiled:
        print(f"compiled instead of loaded from the cache: {', '.join(compiled)}", file=sys.stderr)
        return 1
    if not any(kernel.stats.cache_hits for kernel in kernels.values()):
        print("no kernel was loaded from the cache", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    return check() if sys.argv[1:] == ["--check"] else warm()


if __name__ == "__main__":
    sys.exit(main())
