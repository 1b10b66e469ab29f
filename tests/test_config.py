import pytest

from tunelab.config import build_config, load_config
from tunelab.errors import ConfigError


def test_defaults_are_the_embedded_demo():
    cfg = load_config()
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.data.source == "dialogsum"
    assert cfg.method.name == "lora"


def test_overrides_parse_yaml_values():
    cfg = build_config({}, ["training.lr=1e-4", "method.r=4", "evaluation.metrics=[rouge]", "name=x"])
    assert cfg.training.lr == pytest.approx(1e-4)
    assert cfg.method.r == 4
    assert cfg.evaluation.metrics == ["rouge"]
    assert cfg.name == "x"


def test_switching_method_drops_the_old_methods_keys():
    cfg = build_config({"method": {"name": "lora", "r": 4}}, ["method.name=full"])
    assert cfg.method.name == "full"


def test_a_runs_regularization_record_holds_only_the_settings_its_kind_uses():
    def record(**regularization):
        return build_config({"training": {"regularization": regularization}}).training.regularization.record()

    assert record() == {"kind": "none"}
    assert record(kind="l2sp", strength=0.01, fisher_samples=8) == {"kind": "l2sp", "strength": 0.01}
    assert record(kind="ewc", strength=5.0, fisher_samples=8) == {
        "kind": "ewc", "strength": 5.0, "fisher_source": "samsum", "fisher_split": "validation", "fisher_samples": 8
    }  # fmt: skip


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"training\.lrr: unknown key"):
        build_config({"training": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"method\.rank: unknown key"):
        build_config({"method": {"name": "lora", "rank": 4}})


def test_wrong_type_is_named_with_the_value():
    with pytest.raises(ConfigError, match=r"training\.batch_size: .*integer.*'eight'"):
        build_config({}, ["training.batch_size=eight"])


def test_unknown_method_lists_the_methods():
    with pytest.raises(ConfigError, match="lora.*prompt_tuning.*ia3"):
        build_config({"method": {"name": "adapterdrop"}})


def test_files_source_needs_files():
    with pytest.raises(ConfigError, match="data.files"):
        build_config({"data": {"source": "files"}})


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.path=value"):
        build_config({}, ["training.lr"])


def test_shipped_configs_validate():
    from pathlib import Path

    from tunelab.config.compare import load_compare_config

    import yaml

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        if "arms" in yaml.safe_load(path.read_text()):  # a comparison (the demo, the study)
            assert len(load_compare_config(path).arms) >= 4
        else:
            load_config(path)


def test_comparison_claims_and_sweeps_are_validated(tmp_path):
    import yaml

    from tunelab.config.compare import load_compare_config

    def load(**extra):
        tree = {"name": "c", "arms": [{"name": "zero", "kind": "prompting"}, {"name": "lora"}], **extra}
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(tree))
        return load_compare_config(path)

    cfg = load(claims=[{"claim": "x", "arm": "lora", "versus": "zero"}])
    assert cfg.claims[0].at_least == 0.0 and cfg.claims[0].metric == "rouge1"
    soft = {"claim": "x", "arm": "lora", "versus": "chance", "metric": "soft_prompt:task_words"}
    assert load(claims=[soft]).claims[0].versus == "chance"
    cost = {"claim": "x", "arm": "lora", "versus": "zero", "metric": "cost:peak_memory", "at_most": 1}
    assert load(claims=[cost]).claims[0].at_most == 1
    bad = [
        ({"claims": [{"claim": "x", "arm": "lora", "versus": "fulll"}]}, r"claims\[0\]: versus 'fulll' is not an arm"),
        ({"claims": [{"claim": "x", "arm": "lora", "versus": "zero", "metric": "bleu"}]}, "metric 'bleu'"),
        ({"claims": [{"claim": "x", "arm": "lora", "versus": "base"}]}, "versus: base goes with a benchmark"),
        ({"claims": [{"claim": "x", "arm": "lora", "versus": "zero", "at_least": 1, "at_most": 2}]}, "not both"),
        ({"claims": [{"arm": "lora", "versus": "zero"}]}, r"claims\[0\]: claim: Field required"),
        ({"claims": [{"claim": "x", "arm": "lora", "versus": "chance"}]}, "soft_prompt:task_words goes with"),
        (
            {"claims": [{"claim": "x", "arm": "lora", "versus": "zero", "metric": "soft_prompt:task_words"}]},
            "soft_prompt:task_words goes with versus: chance",
        ),
        (
            {"claims": [{**cost, "at_most": None}]},
            r"claims\[0\]: a cost:peak_memory claim bounds the ratio lora / zero",
        ),
        ({"claims": [{**cost, "metric": "cost:flops"}]}, r"metric 'cost:flops'.*trainable_parameters"),
        ({"claims": [{**cost, "versus": "base"}]}, "versus: base goes with a benchmark"),
    ]
    for extra, message in bad:
        with pytest.raises(ConfigError, match=message):
            load(**extra)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "arms": [{"name": "lora", "sweep": {"training.lr": 1e-4}}]}))
    with pytest.raises(ConfigError, match="sweep must map config keys to lists"):
        load_compare_config(path)
    path.write_text(yaml.safe_dump({"name": "s", "arms": [{"name": "z", "kind": "prompting", "sweep": {"a": [1]}}]}))
    with pytest.raises(ConfigError, match="a sweep needs a fine-tuning arm"):
        load_compare_config(path)
    for arm, message in [
        ({"sweep": {"training.lr": [1e-4, 1e-3]}, "sweep_widen": -1}, "arm 'lora': sweep_widen must be a whole number"),
        (
            {"sweep": {"training.lr": [1e-4], "method.r": [4]}, "sweep_widen": 1},
            "sweep_widen widens a sweep of one key",
        ),
        ({"sweep_widen": 2}, "sweep_widen widens a sweep of one key"),
    ]:
        path.write_text(yaml.safe_dump({"name": "s", "arms": [{"name": "lora", **arm}]}))
        with pytest.raises(ConfigError, match=message):
            load_compare_config(path)
