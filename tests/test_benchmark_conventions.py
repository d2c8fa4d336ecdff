"""``python -m benchmarks.conventions --smoke``: every case measures what it claims.

No timing is asserted; the checks are that the model span carries the cache-write names (both,
or the current one alone), the OpenInference counts and the captured content each case says.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import conventions

from chainsight import _names as n


def test_smoke_runs_every_case_and_restores_the_alias(tmp_path: Path) -> None:
    out = tmp_path / "conventions.json"
    assert conventions.main(["--smoke", "--output", str(out)]) == 0
    results = json.loads(out.read_text(encoding="utf-8"))
    assert set(results) == {
        "R", "R+1", "model", "model_no_alias", "model_openinference", "model_content",
    }  # fmt: skip
    assert n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS == "gen_ai.usage.cache_creation.input_tokens"
