"""Stage 4 -- acting: the engine every framework adapter shares, and what it does with a verdict.

``engine`` (schedule, generation through an adapter, merging across ranks, fault handling),
``halting`` (when to stop), ``reweighting`` (how far to raise the human floor) and ``sampling``
(the sampler that keeps a hard floor of human anchor data in every batch).
"""
