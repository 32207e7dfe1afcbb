"""Every bad config key, type or value: exit code 2, one line on stderr naming the key path, nothing written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from unlearn_audit.cli import main
from unlearn_audit.config import AuditConfig, ConfigError, config_from_dict, load_config

# (id, TOML text, text the one-line message must contain)
BAD = [
    ("unknown-top-key", 'colour = "blue"\n', "colour: unknown key"),
    ("unknown-nested-key", "[training]\nepoch = 3\n", "training.epoch: unknown key"),
    ("unknown-section", "[trianing]\nepochs = 3\n", "trianing: unknown key"),
    ("wrong-type-int", '[training]\nepochs = "30"\n', "training.epochs: Input should be a valid integer"),
    ("wrong-type-float-for-int", "[training]\nbatch_size = 32.0\n", "training.batch_size"),
    ("wrong-type-bool", '[data]\nstandardize = "yes"\n', "data.standardize: Input should be a valid boolean"),
    ("wrong-type-list-item", '[audit]\nsweep_sigmas = [0.1, "a"]\n', "audit.sweep_sigmas.1"),
    ("section-as-value", "data = 3\n", "data: must be a table"),
    ("negative-epsilon", "[privacy]\nepsilon = -1.0\n", "privacy.epsilon: Input should be greater than 0"),
    ("infinite-epsilon", "[privacy]\nepsilon = inf\n", "privacy.epsilon: Input should be a finite number"),
    ("delta-one", "[privacy]\ndelta = 1.0\n", "privacy.delta: Input should be less than 1"),
    ("delta-zero", "[privacy]\ndelta = 0.0\n", "privacy.delta"),
    ("fractions-over-one", "[data]\ntrain_fraction = 0.5\ntest_fraction = 0.3\npopulation_fraction = 0.5\n",
     "data: train_fraction + test_fraction + population_fraction = 1.3 exceeds 1"),
    ("unknown-dataset", '[data]\ndataset = "imagenet"\n', "data.dataset: unknown dataset 'imagenet'"),
    ("dataset-option-refused", '[data]\npath = "x.npz"\n', "data.path: dataset 'digits' does not take path"),
    ("dataset-needs-path", '[data]\ndataset = "npz"\n', "data.path: dataset 'npz' needs path"),
    ("unknown-model", '[model]\nkind = "transformer"\n', "model.kind: Input should be"),
    ("clip-without-norm", '[training]\nclip = "per_sample"\n', "training.clip_norm: required when clip = 'per_sample'"),
    ("norm-without-clip", "[training]\nclip_norm = 1.0\n", "training.clip_norm: set, but clip = 'none'"),
    ("classic-eps-ge-1", '[privacy]\nmechanism = "classic"\nepsilon = 1.0\n',
     "privacy.mechanism: 'classic' is only valid for epsilon < 1"),
    ("margin-too-large", "[audit]\nmargin = 0.7\n", "audit.margin: Input should be less than 0.5"),
    ("margin-zero", "[audit]\nmargin = 0.0\n", "audit.margin: Input should be greater than 0"),
    ("alpha-half", "[audit]\nalpha = 0.5\n", "audit.alpha"),
    ("negative-sigma", "[audit]\nsweep_sigmas = [0.1, -1.0]\n", "audit.sweep_sigmas: every sigma must be >= 0"),
    ("no-methods", "[unlearning]\nmethods = []\n", "unlearning.methods: list at least one method"),
    ("unknown-method", '[unlearning]\nmethods = ["magic"]\n', "unlearning.methods.0"),
    ("forget-file-missing", '[unlearning]\nforget_file = "/nonexistent/ids.txt"\n',
     "unlearning.forget_file: file not found"),
    ("negative-seed", "seed = -1\n", "seed: Input should be greater than or equal to 0"),
    ("zero-epochs", "[training]\nepochs = 0\n", "training.epochs: Input should be greater than 0"),
    ("malformed-toml", "[training\nepochs = 3\n", "malformed TOML"),
    ("duplicate-key-toml", "seed = 1\nseed = 2\n", "malformed TOML"),
]


def _audit(tmp_path, cfg_arg: str):
    out = tmp_path / "nested" / "out"
    res = CliRunner().invoke(main, ["audit", "--config", cfg_arg, "--out", str(out), "--quiet"])
    return res, out


@pytest.mark.parametrize("toml_text, expected", [pytest.param(t, e, id=i) for i, t, e in BAD])
def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, toml_text, expected):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml_text, encoding="utf-8")
    res, out = _audit(tmp_path, str(cfg))
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not out.exists() and not out.parent.exists()
    assert "Traceback" not in res.output


def test_missing_config_file(tmp_path):
    res, out = _audit(tmp_path, str(tmp_path / "nope.toml"))
    assert res.exit_code == 2 and res.stderr.strip() == f"error: config file not found: {tmp_path / 'nope.toml'}"
    assert not out.parent.exists()


def test_config_that_is_not_utf8(tmp_path):
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes('seed = 1 # café\n'.encode("latin-1"))
    res, out = _audit(tmp_path, str(cfg))
    assert res.exit_code == 2 and "not a UTF-8 text file" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not out.parent.exists()


def test_more_than_one_problem_is_counted_on_the_same_line():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"training": {"epochs": 0, "lr": -1.0}})
    assert str(err.value) == "training.epochs: Input should be greater than 0 (got 0) (and 1 more problem)"


@pytest.mark.parametrize("good", [
    {}, {"privacy": {"mechanism": "classic", "epsilon": 0.5}},
    {"training": {"clip": "per_sample", "clip_norm": 1.0, "lr": 1}},       # an int where a float is expected is fine
    {"data": {"train_fraction": 0.5, "test_fraction": 0.2, "population_fraction": 0.3}},
    {"audit": {"sweep_sigmas": []}},
])
def test_good_configs_validate(good):
    assert isinstance(config_from_dict(good), AuditConfig)


def test_resolved_config_round_trips(tmp_path):
    cfg = config_from_dict({"seed": 7, "training": {"clip": "batch", "clip_norm": 2.0}, "privacy": {"delta": 1e-6}})
    p = tmp_path / "c.toml"
    p.write_text(cfg.to_toml(), encoding="utf-8")
    assert load_config(p) == cfg and load_config(p).digest() == cfg.digest()
