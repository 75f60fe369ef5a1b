"""Reference self-supervised recipes that pretrain on a release to validate it: the training
engine, MoCo v2, 8-bit optimizers, evaluation and `passkit validate`. Import submodules directly
(passkit.recipes.optim, .engine, .moco, .evaluate, .validate); this package imports nothing heavy."""
