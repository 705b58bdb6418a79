"""Last of the suite: the session's secrets in anything dbt wrote during it (target/,
logs/) or in the project's own logs. Each scenario already scanned its own outputs,
warehouse, analytics copy, archive, session cache and pushed metrics."""

from __future__ import annotations

from tests.helpers import REPO_ROOT
from tests.reliability.conftest import Recorder
from tests.reliability.harness import SecretScanner, dbt_dirs


def test_no_secret_in_dbt_artefacts_or_logs(reliability_ledger: Recorder) -> None:
    scanner = SecretScanner()
    roots = [*dbt_dirs(), REPO_ROOT / "logs"]
    files = 0
    for root in roots:
        if root.exists():
            files += sum(1 for p in root.rglob("*") if p.is_file())
            scanner.directory(root)
    reliability_ledger(scenario=f"secret sweep: dbt target/ and logs/ ({files} files)",
                       secrets=len(scanner.hits))
    assert files, "nothing to scan: did any dbt run happen in this session?"
    assert not scanner.hits, scanner.hits
