"""The paper's experiments, built on the metric: adversarial attacks (:mod:`.robustness`), the ensemble ablation
(:mod:`.ablation`), agreement with human judgements on BAPPS 2AFC (:mod:`.twoafc`), training the linear weights on
such judgements (:mod:`.weight_training` with :mod:`.reductions` and :mod:`.triplet_reader`) and the small CNN of
the loss example (:mod:`.denoiser`).

Nothing here is imported by ``import elpips``; import the sub-modules themselves
(``from elpips.experiments.robustness import attack_a2``).
"""
