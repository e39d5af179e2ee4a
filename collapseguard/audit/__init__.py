"""Audits of incoming data, before it is trained on.

``dataset`` streams one dataset through the guard's own metrics in one process; ``distributed`` runs the
same passes as datatrove steps over shards (local, Slurm or Ray) and merges them; ``leakage`` finds gold
texts that leaked into the data; ``shingles`` holds the MinHash shingling both share.
"""

from collapseguard.audit.dataset import (
    NEAR_DUPLICATE_DEFINITION,
    AuditResult,
    AuditSettings,
    DataSource,
    Sample,
    ShardScan,
    Verdict,
    audit_path,
    audit_texts,
    decide,
    judge,
    minhash_signatures,
    near_duplicate_pairs,
    read_texts,
)

__all__ = ["NEAR_DUPLICATE_DEFINITION", "AuditResult", "AuditSettings", "DataSource", "Sample", "ShardScan", "Verdict",
           "audit_path", "audit_texts", "decide", "judge", "minhash_signatures", "near_duplicate_pairs", "read_texts"]
