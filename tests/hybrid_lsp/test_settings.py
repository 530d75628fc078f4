"""Settings: camelCase wire names, per-field validation, previous value kept."""

from __future__ import annotations

from hybrid_lsp.settings import Settings, merge_settings, settings_schema, to_wire


def test_defaults_round_trip_in_camel_case() -> None:
    wire = to_wire(Settings())
    assert wire["completion"]["debounceMs"] == 50 and wire["model"]["backend"] == "auto"
    merged, errors = merge_settings(Settings(), wire)
    assert merged == Settings() and errors == []


def test_invalid_values_keep_previous() -> None:
    prev, _ = merge_settings(Settings(), {"completion": {"maxTokens": 100}})
    new, errors = merge_settings(prev, {"completion": {"maxTokens": "many", "debounceMs": -1,
                                                       "latencyBudgetMs": 300},
                                        "model": {"backend": "cuda"},
                                        "features": {"completion": "yes"},
                                        "bogus": 1})
    assert new.completion.max_tokens == 100 and new.completion.debounce_ms == 50
    assert new.completion.latency_budget_ms == 300
    assert new.model.backend == "auto" and new.features.completion is True
    assert len(errors) == 5
    assert any("maxTokens" in e and "keeping 100" in e for e in errors)


def test_section_wrapper_none_and_snake_case() -> None:
    new, errors = merge_settings(Settings(), {"hybridLsp": {"log": {"include_text": True}}})
    assert new.log.include_text and not errors
    assert merge_settings(new, None) == (new, [])
    same, errors = merge_settings(new, {"completion": None, "model": "x"})
    assert same == new and len(errors) == 1


def test_schema_lists_every_leaf() -> None:
    keys = [e["key"] for e in settings_schema()]
    assert "completion.latencyBudgetMs" in keys and "features.inlineCompletion" in keys
    assert len(keys) == len(set(keys)) == 12
