"""`hitrun tail` prints one readable line for every alert type it can meet."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from hitrun.schemas import SCHEMA_DIR
from hitrun.streams.clients import describe

RETENTION_EXAMPLES = sorted(
    p
    for kind in ("first_purchase_risk", "single_purchase", "early_churn", "customer_returned")
    for p in (SCHEMA_DIR / "examples" / f"{kind}.v1").glob("valid--*.json")
) + sorted((SCHEMA_DIR / "examples" / "inquiry_only.v1").glob("valid--*.json"))

SHOWN = {
    "first_purchase_risk": "score=",
    "single_purchase": "risk=",
    "early_churn": "purchases=",
    "customer_returned": "flag=",
    "inquiry_only": "inquiries=",
}


@pytest.mark.parametrize("path", RETENTION_EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_retention_alert_is_one_line_with_its_own_facts(path: Path) -> None:
    alert = orjson.loads(path.read_bytes())
    line = describe("hitrun.retention", 0, 0, alert)
    assert "\n" not in line
    assert line.startswith(
        f"{alert['occurred_at']} {alert['type']} customer={alert['customer_id']}"
    )
    assert SHOWN[alert["type"]] in line
