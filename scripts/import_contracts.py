"""The project's own import-linter contract type (configured in pyproject.toml).

``domain``: every module of ``packages`` that is not an adapter imports none of
``forbidden_modules`` (or their submodules), directly or through any chain of imports. Adapters
are the modules whose last name is one of ``adapter_names`` (the servicer, the client, the
protobuf conversions) and those listed in ``adapter_modules`` (with their submodules). This is
how "domain code imports no grpc or protobuf" holds for every module, added later ones too.
A package's ``__init__`` is its public facade (it may re-export the client) and is not checked
itself; a domain module that imports a facade which reaches gRPC still breaks the contract.
"""

from __future__ import annotations

from typing import Any

import grimp
from importlinter import Contract, ContractCheck, fields, output


class DomainContract(Contract):
    type_name = "domain"

    packages = fields.ListField(subfield=fields.StringField())
    forbidden_modules = fields.ListField(subfield=fields.StringField())
    adapter_names = fields.ListField(subfield=fields.StringField())
    adapter_modules = fields.ListField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        adapter_names = set(self.adapter_names)  # type: ignore[call-overload]
        adapter_modules = set(self.adapter_modules or ())  # type: ignore[call-overload]
        forbidden: set[str] = set()
        for name in self.forbidden_modules:  # type: ignore[attr-defined]
            if name not in graph.modules:
                continue  # an external package nothing imports
            forbidden.add(name)
            if not graph.is_module_squashed(name):
                forbidden |= graph.find_descendants(name)
        violations: list[dict[str, Any]] = []
        for package in self.packages:  # type: ignore[attr-defined]
            for module in sorted({package, *graph.find_descendants(package)}):
                if (
                    module.rpartition(".")[2] in adapter_names
                    or any(module == a or module.startswith(f"{a}.") for a in adapter_modules)
                    or graph.find_children(module)
                ):
                    continue
                reached = graph.find_upstream_modules(module) & forbidden
                for target in sorted(reached)[:1]:
                    chain = graph.find_shortest_chain(importer=module, imported=target)
                    violations.append({"module": module, "chain": list(chain or ())})
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for violation in check.metadata["violations"]:
            output.print_error(
                f"{violation['module']} is a domain module, so it must not import "
                f"{violation['chain'][-1]}:",
            )
            output.print_error("-   " + " -> ".join(violation["chain"]), bold=False)
            output.new_line()
