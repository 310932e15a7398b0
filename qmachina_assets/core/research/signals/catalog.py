"""Every signal by name: imports the implementation modules (their `@register` fills `base.REGISTRY`).

Kept apart from `base` so the interface module imports no implementation (no import cycle), and so one
place lists which modules provide signals.
"""

from __future__ import annotations

from qmachina_assets.core.research.signals import ml, statistical
from qmachina_assets.core.research.signals.base import REGISTRY, Signal

PROVIDERS = (statistical, ml)


def make_signal(name: str, params: dict | None = None) -> Signal:
    """A signal by registry name; unknown names and bad params fail naming what was expected."""
    if name not in REGISTRY:
        raise ValueError(f"signal {name!r} is unknown (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name](params)
