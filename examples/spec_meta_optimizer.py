"""The spec's two meta-optimizer examples, with only their import lines changed.

    qtmesh up   # writes .qtmesh/mesh.json, where get_meta_optimizer_service() finds the service
    python -m examples.spec_meta_optimizer

Without a running mesh (no ``.qtmesh/mesh.json``) the service runs in process on the paper
fleet's reports of the synthetic market, its ledger kept in ``.qtmesh/embedded``. The service
object is synchronous, as the spec calls it (``meta_optimizer.api``).
"""

from __future__ import annotations


def run_cycle() -> list[dict]:
    # Executing an Autonomous Optimization Cycle
    from meta_optimizer import get_meta_optimizer_service

    optimizer = get_meta_optimizer_service()

    # Run the 'Sovereign Singularity' audit after market close
    proposals = optimizer.run_optimization_cycle()

    print(f"Cycle Complete. Generated {len(proposals)} Proposals.")

    for p in proposals:
        print(f"[{p['type']}] Action: {p['action']}")
        print(f"Rationale: {p['rationale']}")

    optimizer.close()
    return proposals


def audit_history() -> list[dict]:
    # Auditing the History of System Self-Optimizations
    from meta_optimizer import get_meta_optimizer_service

    optimizer = get_meta_optimizer_service()

    # Retrieve all previously generated strategy proposals
    history = optimizer.get_proposal_history()

    for prop in history:
        print(f"Recorded Proposal ID: {prop['id']} for Sector: {prop['target']}")

    optimizer.close()
    return history


if __name__ == "__main__":
    run_cycle()
    audit_history()
