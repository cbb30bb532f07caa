"""The meta optimizer ("Sovereign Singularity"): audits encrypted alpha reports by sector and
proposes fleet changes into an append-only, hash-chained ledger."""
