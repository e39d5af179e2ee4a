"""Audits of incoming data, before it is trained on.

``dataset`` streams one dataset through the guard's own metrics in one process; ``distributed`` runs the
same passes as datatrove steps over shards (local, Slurm or Ray) and merges them; ``leakage`` finds gold
texts that leaked into the data; ``shingles`` holds the MinHash shingling both share.
"""

from collapseguard.audit.dataset import (
    AuditResult,
    AuditSettings,
    DataSource,
    ShardScan,
    audit_path,
    audit_texts,
    judge,
    minhash_signatures,
    near_duplicate_pairs,
    read_texts,
)

__all__ = ["AuditResult", "AuditSettings", "DataSource", "ShardScan", "audit_path", "audit_texts", "judge",
           "minhash_signatures", "near_duplicate_pairs", "read_texts"]
