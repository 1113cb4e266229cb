"""Config: thesis defaults, precedence file < env < flags, and errors that name the key."""
import pytest

from coldlabel.config import load_settings
from coldlabel.errors import ConfigError


def test_thesis_defaults():
    s = load_settings(environ={})
    assert s.labeler.top_k_subcategories == 8
    assert s.labeler.max_candidates_per_subcategory == 80
    assert (s.retrieval.evidence_k, s.retrieval.evidence_min_sim) == (3, 0.35)
    assert (s.labeler.min_score, s.labeler.score_scale, s.labeler.max_triplets) == (2, 5, 3)
    assert (s.trainer.max_len, s.trainer.batch_size, s.trainer.lr) == (50, 256, 3e-4)
    assert (s.data.train_ratio, s.data.strong_weight, s.data.weak_weight) == (0.7, 1.0, 0.3)
    assert s.retrieval.max_leaf_size == 200 and s.retrieval.tt_epochs == 50
    assert set(s.endpoints) >= {"local", "vllm", "openai"}


def test_precedence_file_env_flag(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[labeler]\ntop_k_subcategories = 4\nfinal_top_k = 7\n")
    s = load_settings(cfg, environ={})
    assert (s.labeler.top_k_subcategories, s.labeler.final_top_k) == (4, 7)
    s = load_settings(cfg, environ={"COLDLABEL_LABELER__TOP_K_SUBCATEGORIES": "5"})
    assert s.labeler.top_k_subcategories == 5 and s.labeler.final_top_k == 7
    s = load_settings(cfg, ["labeler.top_k_subcategories=6"], environ={"COLDLABEL_LABELER__TOP_K_SUBCATEGORIES": "5"})
    assert s.labeler.top_k_subcategories == 6
    s = load_settings(None, environ={"COLDLABEL_CONFIG": str(cfg)})
    assert s.labeler.final_top_k == 7


def test_new_endpoint_from_file_and_string_values(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[endpoints.mine]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\ndialect = "vllm"\n')
    s = load_settings(cfg, ["labeler.endpoint=mine"], environ={})
    assert s.endpoint().dialect == "vllm" and s.endpoint().base_url.endswith(":9/v1")


@pytest.mark.parametrize("text, key", [
    ("[labeler]\ntop_k_subcategoris = 3\n", "labeler.top_k_subcategoris"),
    ("[labeler]\ntop_k_subcategories = 'many'\n", "labeler.top_k_subcategories"),
    ("[trainer]\nrerank_mode = 'magic'\n", "trainer.rerank_mode"),
    ("[nonsense]\nx = 1\n", "nonsense"),
    ("[endpoints.x]\nmodel = 'm'\n", "endpoints.x.base_url"),
])
def test_bad_key_or_type_names_the_key(tmp_path, text, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert key in str(err.value)


def test_broken_toml_and_missing_file(tmp_path):
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[labeler\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_bad_env_and_flag_name_the_key():
    with pytest.raises(ConfigError, match="labeler.max_tokens"):
        load_settings(environ={"COLDLABEL_LABELER__MAX_TOKENS": "lots"})
    with pytest.raises(ConfigError, match="section.key=value"):
        load_settings(None, ["labeler"], environ={})
    with pytest.raises(ConfigError, match="unknown endpoint"):
        load_settings(None, ["labeler.endpoint=nowhere"], environ={}).endpoint()


def test_api_key_comes_from_env_only(monkeypatch):
    s = load_settings(environ={})
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    assert s.endpoint("openai").api_key() == "sk-secret"
    assert "sk-secret" not in s.model_dump_json()


def test_command_defaults_sit_under_file_env_and_flags(tmp_path):
    demo = ["labeler.top_k_subcategories=3", "labeler.max_candidates_per_subcategory=20"]
    s = load_settings(environ={}, command_defaults=demo)
    assert (s.labeler.top_k_subcategories, s.labeler.max_candidates_per_subcategory) == (3, 20)
    s = load_settings(environ={"COLDLABEL_LABELER__TOP_K_SUBCATEGORIES": "5"}, command_defaults=demo)
    assert s.labeler.top_k_subcategories == 5
    s = load_settings(None, ["labeler.max_candidates_per_subcategory=40"], environ={}, command_defaults=demo)
    assert s.labeler.max_candidates_per_subcategory == 40
    cfg = tmp_path / "c.toml"
    cfg.write_text("[labeler]\ntop_k_subcategories = 8\n")
    assert load_settings(cfg, environ={}, command_defaults=demo).labeler.top_k_subcategories == 8


def test_relative_data_root_in_a_config_file_is_relative_to_that_file(tmp_path, monkeypatch):
    (tmp_path / "proj").mkdir()
    cfg = tmp_path / "proj" / "c.toml"
    cfg.write_text('[data]\nroot = "mydata"\n')
    monkeypatch.chdir(tmp_path)  # run from elsewhere: the file still names the same workspace
    assert load_settings(cfg, environ={}).data.root == str(tmp_path / "proj" / "mydata")
    assert load_settings("proj/c.toml", environ={}).data.root == str(tmp_path / "proj" / "mydata")
    cfg.write_text(f'[data]\nroot = "{tmp_path / "abs"}"\n')
    assert load_settings(cfg, environ={}).data.root == str(tmp_path / "abs")
    # flags and env vars are relative to the current directory, as in any shell command
    assert load_settings(cfg, ["data.root=rel"], environ={}).data.root == "rel"
