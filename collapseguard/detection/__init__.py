"""Stage 3 -- judging: thresholds, detectors, alerts and the monitor that runs them.

``thresholds`` (the rule book and its presets), ``calibration`` (thresholds fit to a run's own gold
set), ``trajectory`` (how far a run got towards gold), ``detectors`` (one per phase of collapse),
``alerts`` (what a detector raises), ``monitor`` (one check: metrics in, health and alerts out) and
``datastream`` (the same judgement applied to the training data itself).
"""
