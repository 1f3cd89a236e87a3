"""Offline evaluation: `keel eval` (`evals.cli`) over the compiled graph."""

import os
from pathlib import Path

# SciFact in BEIR's layout, beside the repository (`../shared`), where `keel bench`, the scripts
# and the suite's gates read it; `KEEL_SCIFACT_DIR` points elsewhere.
SCIFACT = Path(
    os.environ.get("KEEL_SCIFACT_DIR")
    or Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact"
)
