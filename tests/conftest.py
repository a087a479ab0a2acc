"""Settings every test module is imported under, whichever directory pytest starts from."""

from __future__ import annotations

import os

# The unit tests drive the customer agent's shell in this process with the table in
# memory. The agent reads its settings once, at import, and an integration module may
# import it first: so the import happens here, before any test module is collected.
# The variable is set for that import only, so the workers the integration tests
# start (children of this process) keep the default store, RocksDB.
if "HITRUN_STORE" not in os.environ:
    os.environ["HITRUN_STORE"] = "memory://"
    import hitrun.agents.customer  # noqa: F401

    del os.environ["HITRUN_STORE"]
