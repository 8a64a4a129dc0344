"""The tags hpsearch sets on a trial's run: shared by the modules that open, close and finish
runs."""

from __future__ import annotations

OUTCOME_TAG = "hpsearch.outcome"  # completed | pruned | failed
REASON_TAG = "hpsearch.failure_reason"
INCOMPLETE_TAG = "hpsearch.artifacts_incomplete"  # "true" (unknown) or the missing files
