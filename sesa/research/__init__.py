"""Research on a user's own bars: a search (SESA's evolution, random search or Optuna's TPE)
at a budget of genomes evaluated, judged by SESA's own ranking, then measured on held-out bars
it never saw. ``qtmesh evolve`` is its command (sesa/research/cli.py)."""

from sesa.research._base import Objective, Search, random_genome
from sesa.research._random import RandomSearch
from sesa.research._sesa import SesaSearch
from sesa.research._study import Candidate, Study, run_study, split_bars
from sesa.research._tpe import TpeSearch

SEARCHES: dict[str, type[Search]] = {s.name: s for s in (SesaSearch, RandomSearch, TpeSearch)}

__all__ = [
    "SEARCHES",
    "Candidate",
    "Objective",
    "RandomSearch",
    "Search",
    "SesaSearch",
    "Study",
    "TpeSearch",
    "random_genome",
    "run_study",
    "split_bars",
]
