"""Reference self-supervised recipes that pretrain on a release to validate it: the training
engine, MoCo v2, SwAV, DINO, MAE, 8-bit optimizers, evaluation and `passkit validate`. Import
submodules directly (passkit.recipes.optim, .engine, .moco, .losses, .evaluate, .validate); the
recipes are listed in one table, passkit.recipes.registry. This package imports nothing heavy."""
