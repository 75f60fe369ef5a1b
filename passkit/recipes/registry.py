"""The one table of recipes: `passkit validate --recipe`'s choices, the presets and validate all read it.

Adding a recipe: write `passkit/recipes/<name>.py` with the recipe class (passkit.recipes.recipe.Recipe)
and a module-level `preset(name: str) -> passkit.recipes.presets.Preset` for "smoke", "small" and
"full", then add one line to RECIPES below.

Entries name modules and classes as strings and nothing is imported until a recipe is used, so the
CLI can build its argument parser (and answer `--help`) without importing torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class RecipeEntry:
    module: str  # defines the recipe class and `preset(name)`
    recipe_class: str
    # how validate judges the features: kNN, or a linear probe for features not built for kNN (MAE)
    probe: Literal["knn", "linear_probe"] = "knn"

    def load(self) -> Any:
        return importlib.import_module(self.module)

    def recipe(self) -> type:
        return getattr(self.load(), self.recipe_class)

    def preset(self, name: str) -> Any:
        """The recipe's Preset `name` (smoke, small or full), as its module builds it."""
        return self.load().preset(name)


# Order matters: it is the order of `--recipe` choices and of "available: ..." in errors.
RECIPES: dict[str, RecipeEntry] = {
    "moco_v2": RecipeEntry("passkit.recipes.moco", "MoCoV2"),
    "swav": RecipeEntry("passkit.recipes.swav", "SwAVRecipe"),
    "dino": RecipeEntry("passkit.recipes.dino", "DINORecipe"),
    "mae": RecipeEntry("passkit.recipes.mae", "MAERecipe", probe="linear_probe"),
}

PRESETS = ("smoke", "small", "full")


def entry(recipe: str) -> RecipeEntry:
    """The table line of `recipe`; ValueError naming the available ones otherwise."""
    try:
        return RECIPES[recipe]
    except KeyError:
        raise ValueError(f"unknown recipe {recipe!r}; available: {', '.join(RECIPES)}") from None
