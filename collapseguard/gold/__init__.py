"""Stage 1 -- the gold set: held-out human text, how it is tokenized, its reference profile and provenance.

``goldset`` (content-hashed, immutable gold sets and their splits), ``tokenization`` (the tokenizer
adapters every stage shares), ``profiles`` (a gold set's saved reference statistics) and ``provenance``
(where each training text came from).
"""
