"""Collapse alarms: a warning when a recipe's loss sits at its chance level or RankMe falls near 1.

Two failure modes look different in the loss but the same in the representation:
- uniform collapse: the network outputs the same flat distribution for every image, so a
  cross-entropy against K outputs sits at ln K (SwAV: K prototypes, DINO: out_dim);
- dimensional collapse: every image maps to (nearly) one point, the embedding matrix has rank ~1,
  and RankMe (passkit.recipes.evaluate.rankme) falls to ~1, whatever the loss says.

`CollapseAlarm.check` is called by the recipes every `every` steps (it synchronises with the
device, so not every step); it warns once per episode with `CollapseWarning`, and returns a flag
the recipes log as the `collapse` metric (1.0 while the alarm is raised).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from passkit.recipes.evaluate import rankme


class CollapseWarning(UserWarning):
    pass


@dataclass(slots=True)
class CollapseAlarm:
    recipe: str
    chance_loss: float | None  # ln K, or None where the loss has no chance level (MAE)
    rel_tol: float = 0.01  # "at ln K": within 1% of it
    rankme_floor: float = 1.5  # "near 1"
    patience: int = 3  # consecutive checks before warning
    every: int = 10  # steps between checks
    start: int = 0  # first step checked (the loss starts at ln K by construction)
    raised: bool = False
    _hits: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def due(self, step: int) -> bool:
        return step >= self.start and (step - self.start) % max(1, self.every) == 0

    def check(self, step: int, loss: float | torch.Tensor, embeddings: torch.Tensor | None) -> bool:
        """Record one check; warn when collapse has persisted for `patience` checks. Returns the alarm state."""
        lv = float(loss.detach().float()) if torch.is_tensor(loss) else float(loss)
        rk = rankme(embeddings.detach().float()) if embeddings is not None and embeddings.shape[0] > 1 else math.inf
        at_chance = self.chance_loss is not None and abs(lv - self.chance_loss) <= self.rel_tol * self.chance_loss
        low_rank = rk < self.rankme_floor
        self.history.append({"step": float(step), "loss": lv, "rankme": rk})
        self._hits = self._hits + 1 if (at_chance or low_rank) else 0
        if self._hits >= self.patience and not self.raised:
            why = []
            if at_chance:
                why.append(f"loss {lv:.4f} sits at ln K = {self.chance_loss:.4f}")
            if low_rank:
                why.append(f"RankMe {rk:.2f} < {self.rankme_floor}")
            warnings.warn(
                f"{self.recipe}: representation collapse at step {step} ({'; '.join(why)}) for {self._hits} "
                f"checks in a row: lower the learning rate, raise warmup, or check the augmentations "
                f"(and, for DINO, the centring/teacher temperature; for SwAV, the Sinkhorn epsilon)",
                CollapseWarning, stacklevel=2)
            self.raised = True
        elif self._hits == 0:
            self.raised = False
        return self.raised
