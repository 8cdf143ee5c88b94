"""Learning-rate schedule shared by every optimizer group: linear warm-up, cosine decay, floor."""

from __future__ import annotations

import math


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Factor applied to each group's peak LR before optimizer step ``step`` (0-based).

    Warm-up climbs linearly to 1 over ``warmup_steps`` steps (step 0 gets 1/warmup), then a cosine
    falls from 1 at the end of warm-up to ``min_ratio`` at ``total_steps``, and stays there.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
