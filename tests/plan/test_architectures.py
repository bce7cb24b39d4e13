"""The architectures' config fields the plan checks `model.config` against (launcher/architectures.py),
compared with the installed transformers: when a release adds or renames a field, this fails and
prints the lists to paste."""

from __future__ import annotations

import inspect

import pytest

from launcher.architectures import (
    COMMON_CONFIG_FIELDS,
    CONFIG_ALIASES,
    CONFIG_FIELDS,
    own_names,
    unknown_config_fields,
)

CONFIG_CLASSES = {
    "mistral": "MistralConfig",
    "llama": "LlamaConfig",
    "distilbert": "DistilBertConfig",
    "bert": "BertConfig",
}
ACCEPTED_OLD_NAMES = {"rope_theta", "rope_scaling", "torch_dtype"}


def fields_of(config_class) -> set[str]:  # type: ignore[no-untyped-def]
    return (
        set(inspect.signature(config_class.__init__).parameters) | set(config_class().to_dict())
    ) - {
        "self",
        "kwargs",
    }


@pytest.mark.parametrize("architecture", sorted(CONFIG_FIELDS))
def test_fields_are_those_of_the_installed_transformers(architecture: str) -> None:
    import transformers

    config_class = getattr(transformers, CONFIG_CLASSES[architecture])
    common = fields_of(transformers.PretrainedConfig)
    own = fields_of(config_class) - common
    assert COMMON_CONFIG_FIELDS - ACCEPTED_OLD_NAMES == common, sorted(common)
    assert CONFIG_FIELDS[architecture] - ACCEPTED_OLD_NAMES == own, sorted(own)
    assert CONFIG_ALIASES.get(architecture, {}) == config_class.attribute_map


def test_old_names_are_still_read() -> None:
    from transformers import MistralConfig

    config = MistralConfig(rope_theta=1e6, rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert config.rope_parameters["rope_theta"] == 1e6
    assert config.rope_parameters["factor"] == 2.0


def test_unknown_fields_and_aliases() -> None:
    config = {"n_layers": 2, "num_attention_heads": 4, "num_hiden_layers": 3, "dtype": "float32"}
    assert unknown_config_fields("distilbert", config) == ["num_hiden_layers"]
    assert own_names("distilbert", {"hidden_size": 8, "dim": 4}) == {"dim": 4}
    assert own_names("bert", {"hidden_size": 8}) == {"hidden_size": 8}
