"""The startup config: strict decoding, errors that name the problem, dependency order."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mvs.config import decode_config, load_config
from mvs.errors import ConfigError

CONFIG = Path(__file__).resolve().parents[1] / "config" / "mvs_startup_config.yaml"


def _raw() -> dict[str, Any]:
    return dict(yaml.safe_load(CONFIG.read_text()))


def test_shipped_config_has_the_13_services_and_the_plans_settings() -> None:
    cfg = load_config(CONFIG)
    assert len(cfg.services) == 13
    assert cfg.resource_pool.max_models_in_memory == 3
    assert cfg.resource_pool.model_idle_timeout == 300
    assert (cfg.circuit_breaker.failure_threshold, cfg.circuit_breaker.timeout,
            cfg.circuit_breaker.half_open_requests) == (5, 30, 3)
    assert (cfg.message_bus.protocol, cfg.message_bus.batch_size,
            cfg.message_bus.batch_timeout_ms) == ("msgpack", 100, 50)
    assert cfg.llm_routing.heavy_tasks.patterns == ("complex_reasoning", "code_generation")
    assert cfg.llm_routing.heavy_tasks.fallback == "local_model"
    assert set(cfg.feature_flags) == {
        "use_mvs_routing", "use_unified_memory", "use_consolidated_emotion"
    }
    assert cfg.services["AsyncProcessor"].host == "pc2"
    assert (cfg.projections.duckdb_memory_mb, cfg.projections.batch) == (512, 20000)
    assert cfg.projections.duckdb_threads == 1


def test_start_order_puts_every_dependency_first() -> None:
    cfg = load_config(CONFIG)
    order = cfg.start_order("all")
    assert order[0] == "ServiceRegistry"
    for name in order:
        for dep in cfg.services[name].dependencies:
            if cfg.services[dep].enabled:
                assert order.index(dep) < order.index(name), (dep, name)
    assert all(cfg.services[n].host == "pc2" for n in cfg.start_order("pc2"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(colour="red"), "unknown field `colour`"),
        (lambda d: d["services"]["CacheManager"].update(prot=1),
         "unknown field `prot` - at `$.services.CacheManager`"),
        (lambda d: d["circuit_breaker"].update(failure_treshold=5),
         "unknown field `failure_treshold` - at `$.circuit_breaker`"),
        (lambda d: d["services"]["CacheManager"].update(host="pc3"),
         "$.services.CacheManager.host"),
        (lambda d: d["services"]["CacheManager"].update(dependencies=["CashManager"]),
         "service CacheManager depends on unknown service 'CashManager'"),
        (lambda d: d["services"]["CacheManager"].update(process="gpu"),
         "service CacheManager runs in unknown process group 'gpu'"),
        (lambda d: d["feature_flags"]["use_mvs_routing"].update(fraction=1.5),
         "feature_flags.use_mvs_routing.fraction"),
        (lambda d: d["resource_pool"].update(max_models_in_memory="three"),
         "$.resource_pool.max_models_in_memory"),
        (lambda d: d["projections"].update(duckdb_memory_mb=16),
         "projections.duckdb_memory_mb must be >= 64"),
        (lambda d: d["projections"].update(batch=0), "projections.batch must be >= 1"),
        (lambda d: d["projections"].update(duckdb_threads=-1),
         "projections.duckdb_threads must be >= 0"),
    ],
)
def test_config_errors_name_the_key_or_service(mutate: Any, message: str) -> None:
    data = copy.deepcopy(_raw())
    mutate(data)
    with pytest.raises(ConfigError) as info:
        decode_config(data, source="test.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("test.yaml: ")


def test_a_dependency_cycle_is_spelled_out() -> None:
    data = copy.deepcopy(_raw())
    data["services"]["ServiceRegistry"]["dependencies"] = ["RequestCoordinator"]
    with pytest.raises(ConfigError, match="dependency cycle: ") as info:
        decode_config(data)
    text = str(info.value)
    assert "ServiceRegistry -> RequestCoordinator" in text or "RequestCoordinator -> " in text
    cycle = text.split("dependency cycle: ")[1].split(" -> ")
    assert cycle[0] == cycle[-1]


def test_unreadable_and_invalid_yaml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)


def test_every_enabled_service_names_an_importable_service_class() -> None:
    from mvs.runner import load_service_class

    cfg = load_config(CONFIG)
    for name in cfg.enabled_services():
        cls = load_service_class(name, cfg.services[name].module or "")
        assert cls.name == name


def test_the_config_default_batch_is_the_projections_default() -> None:
    from mvs.config import ProjectionsConfig
    from projections.runner import BATCH

    assert ProjectionsConfig().batch == BATCH
