"""How many clients each rule needs, stated once for the functional API and the classes."""
from __future__ import annotations

from typing import NamedTuple


class ClientRule(NamedTuple):
    """A rule's precondition on the number of clients ``K`` given the ``f`` it tolerates."""

    #: the condition as the paper states it, e.g. ``"K > 2f + 2"``
    condition: str
    #: ``a`` and ``b`` of the smallest admissible ``K = a f + b``
    per_f: int
    plus: int

    def minimum(self, f: int) -> int:
        """The fewest clients the rule accepts with this ``f``."""
        return self.per_f * f + self.plus

    def check(self, k: int, f: int, owner: str, clients: str = "finite clients") -> None:
        """``ValueError`` naming the rule, ``f`` and ``K`` unless ``K`` satisfies the condition."""
        if k < self.minimum(f):
            raise ValueError(f"{owner} needs {self.condition} {clients}: with f={f} that is at least "
                             f"{self.minimum(f)}, got K={k}; lower f or add clients")


#: Krum and Multi-Krum (Blanchard et al. 2017): each score sums ``K - f - 2 >= 1`` neighbours
KRUM = ClientRule("K > 2f + 2", 2, 3)
#: Bulyan (El Mhamdi et al. 2018)
BULYAN = ClientRule("K >= 4f + 3", 4, 3)
#: rules that need an honest majority: MDA, MoNNA, Meamed, CAF, SMEA, DnC, NNM
MAJORITY = ClientRule("K > 2f", 2, 1)
