"""Demos, scenarios and tiny models -- fenced off from the library, as ``lightning.pytorch.demos`` is.

Nothing in the library imports from here. The numpy-only trigram demo behind ``collapseguard demo``
(``trigram``), the built-in human text (``data``, ``corpora``), the recursive-training scenarios of the
benchmarks and examples (``recursion``, ``experiment``, ``recursive_text``, ``recursive_images``) and tiny
GPT-2 models built offline (``tiny``). The torch-based modules need the ``lightning`` or ``transformers``
extra.
"""
