"""The config schemas (issue #33): every field of every named variant is checked, a field the
variant's model lacks is unknown, saved configs migrate, and the library never imports its scripts."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from aaejax import configs
from aaejax.models import registry
from aaejax.configs import ConfigError
from aaejax.models import nets
from aaejax.models.schemas import BN_FLAVOURS, SCHEMAS
from experiments import aae, bigan

VARIANTS = [("aae", v) for v in aae.VARIANTS] + [("bigan", v) for v in bigan.VARIANTS]
ALL_SCHEMAS = (*SCHEMAS["aae"].values(), SCHEMAS["bigan"])
WRONG_TYPE = {bool: "yes", int: 1.5, float: "fast", str: 3, tuple: 5}


def _config(model, variant):
    return {"aae": aae, "bigan": bigan}[model].get_config(variant)


def _wrong_values(field: configs.Field) -> list:
    """A value of the wrong type, and each out-of-range value or unknown choice the field has."""
    kind = type(field.default)
    wrong = [WRONG_TYPE[kind]]
    if field.choices:
        wrong.append("no_such_choice")
    step = 1 if kind in (int, tuple) else 0.5
    bad = [b for b in (None if field.low is None else field.low - step, None if field.high is None else field.high + step,
                       field.above, field.below) if b is not None]
    wrong += [(int(b),) if kind is tuple else int(b) if kind is int else float(b) for b in bad]
    if kind is float:
        wrong.append(float("inf"))
    return wrong


def _refusal(values: dict) -> str:
    with pytest.raises(ConfigError) as e:
        registry.validate_config(ml_collections.ConfigDict(values), num_devices=1)
    assert len(str(e.value).splitlines()) == 1, str(e.value)
    return str(e.value)


@pytest.mark.parametrize("model,variant", VARIANTS)
def test_every_wrong_value_of_every_field_is_refused_in_one_line_naming_it(model, variant):
    config = _config(model, variant)
    registry.validate_config(config, num_devices=1)  # the variant itself is valid
    values = config.to_dict()
    schema = registry.schema_of(config)
    tried = 0
    for name, field in schema.items():
        for wrong in _wrong_values(field):
            message = _refusal({**values, name: wrong})
            assert name in message, (name, wrong, message)
            tried += 1
    assert tried >= 2 * len([f for f in schema.values() if f.choices or f.low is not None or f.above is not None])


@pytest.mark.parametrize("model,variant", VARIANTS)
def test_a_field_of_another_model_is_unknown(model, variant):
    config = _config(model, variant)
    others = {n for schema in ALL_SCHEMAS for n in schema} - set(config)
    assert others, variant  # every model lacks some other model's fields
    for name in sorted(others):
        message = _refusal({**config.to_dict(), name: 1})
        assert message.startswith(f"unknown config field {name!r} for {registry.model_label(config)}"), message


def test_each_field_is_declared_once():
    """A field of one name is one declaration (a model may narrow it: Field.restrict), of one type."""
    seen = {}
    for schema in ALL_SCHEMAS:
        for name, field in schema.items():
            assert type(seen.setdefault(name, field).default) is type(field.default), name
    declared = [node.args[0].value for path in Path(configs.__file__).parent.rglob("*.py")
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Field"]
    assert sorted(declared) == sorted(seen)  # and no declaration is left unused


def test_each_model_reads_its_schema_and_the_command_line_needs_no_jax():
    for model, variant in VARIANTS:
        config = _config(model, variant)
        assert registry.model_class(config).SCHEMA is registry.schema_of(config)
    assert set(BN_FLAVOURS) == set(nets.BN_FLAVOURS)
    code = ("import sys; from experiments import aae, bigan; from aaejax.models import registry; "
            "[registry.schema_of(m.get_config(v)) for m in (aae, bigan) for v in m.VARIANTS]; "
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(configs.__file__).parents[1])


def test_a_saved_config_migrates_to_its_models_fields():
    """Configs saved before each model had its own schema held every model's fields: those the
    model lacks are dropped, those it predates take their defaults, a renamed variant its new name."""
    new = _config("aae", "paper_semi_100").to_dict()
    saved = {**{k: v for k, v in new.items() if k != "lr_drop_factor"}, "style_dim": 10, "d_update": "averaged",
             "lr": 2e-4, "hidden": [1000, 1000]}
    migrated = registry.fill_defaults(json.loads(json.dumps(saved)))
    assert set(migrated) == set(new)
    assert migrated["lr_drop_factor"] == 0.1 and migrated["hidden"] == [1000, 1000]
    old = registry.fill_defaults({**_config("aae", "clustering_plus").to_dict(), "variant": "clustering"})
    assert old["variant"] == "clustering_plus"


def test_the_library_never_imports_its_scripts():
    for path in Path(configs.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "experiments" for n in names), path
