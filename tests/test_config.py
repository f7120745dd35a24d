from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from voiced import config
from voiced.cli import main

REPO = Path(__file__).resolve().parent.parent
DOCUMENTED = REPO / "config" / "voiced.yaml"


def test_documented_default_file_equals_builtin_defaults() -> None:
    assert config.load(DOCUMENTED) == config.Settings()


def test_every_documented_key_has_a_comment() -> None:
    lines = DOCUMENTED.read_text().splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or (stripped.endswith(":") and line[0] != " "):
            continue
        if line.startswith("    "):  # values of a mapping key such as llm.options
            continue
        assert lines[index - 1].strip().startswith("#"), f"undocumented key: {stripped}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vad:\n  silence_ms: 50\n", "silence_ms: Input should be greater than or equal to 100"),
        ("vad:\n  silnce_ms: 500\n", "vad.silnce_ms: unknown key"),
        ("stt:\n  threads: '4'\n", "stt.threads: Input should be a valid integer (got '4')"),
        ("llm:\n  think: maybe\n", "llm.think: Input should be 'low', 'medium' or 'high'"),
        ("tools:\n  enabled: [shell]\n", "tools.enabled.0: Input should be"),
        # Ollama's Go duration parser needs a unit; -1 as a number is fine.
        ("llm:\n  keep_alive: '-1'\n", "llm.keep_alive: Value error, Ollama cannot read '-1'"),
        ("llm:\n  keep_alive: soon\n", "use a number of seconds or a duration with a unit"),
        (
            "llm:\n  options:\n    num_ctx: '8192'\n",
            "llm.options.num_ctx must be a whole number, not '8192'",
        ),
        ("llm:\n  options:\n    stop: END\n", "llm.options.stop must be a list of strings"),
        ("llm:\n  options:\n    use_mmap: 1\n", "llm.options.use_mmap must be true or false"),
        ("colour: blue\n", "colour: unknown key"),
        ("- a\n", "expected a mapping of sections, got list"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_invalid_files_name_file_key_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "llm:\n  keep_alive: -1\n",
        "llm:\n  keep_alive: 1h30m\n",
        "llm:\n  keep_alive: '0'\n",
        "llm:\n  options:\n    num_ctx: 16384\n    temperature: 1\n    stop: ['<|end|>']\n",
    ],
)
def test_values_ollama_accepts_are_accepted(tmp_path: Path, text: str) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(text)
    config.load(path)


def test_precedence_defaults_file_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("stt:\n  model: base.en\n  threads: 3\n")
    monkeypatch.setenv("VOICED_CONFIG", str(user))
    settings = config.load(overrides={"stt.threads": 1, "stt.language": None})
    assert settings.stt.model == "base.en"  # from the file
    assert settings.stt.threads == 1  # flag beats file
    assert settings.stt.language == "en"  # default, None flag ignored
    assert settings.vad == config.VadSettings()


def test_user_file_under_voiced_home(voiced_home: Path) -> None:
    (voiced_home / "config.yaml").write_text("vad:\n  silence_ms: 900\n")
    assert config.load().vad.silence_ms == 900


def test_missing_voiced_config_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICED_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(config.ConfigError, match="no such config file"):
        config.load()


def test_flag_out_of_range_is_reported_as_command_line() -> None:
    with pytest.raises(config.ConfigError, match="command line"):
        config.load(overrides={"stt.threads": -1})


def test_config_show_prints_effective_yaml(voiced_home: Path) -> None:
    (voiced_home / "config.yaml").write_text("wake:\n  phrases: []\n")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0, result.output
    shown = config.Settings.model_validate(__import__("yaml").safe_load(result.output))
    assert shown.wake.phrases == []
    assert shown.stt == config.SttSettings()


def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("stt:\n  beam_size: 5\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stt:\n  beam_size: 0\n")
    runner = CliRunner()
    ok = runner.invoke(main, ["config", "check", str(good)])
    assert ok.exit_code == 0 and "ok" in ok.output
    fail = runner.invoke(main, ["config", "check", str(bad)])
    assert fail.exit_code == 1
    assert "stt.beam_size" in fail.output
    assert "Traceback" not in fail.output


def test_bad_config_makes_commands_fail_cleanly(voiced_home: Path) -> None:
    (voiced_home / "config.yaml").write_text("stt:\n  model: 5\n")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 2
    assert "stt.model" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_vad_timeout_s_is_removed_and_names_what_replaced_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """vad.timeout_s was never read; a file that sets it keeps working and is told why."""
    old = tmp_path / "old.yaml"
    old.write_text("vad:\n  timeout_s: 15.0\n")
    with caplog.at_level("WARNING"):
        settings = config.load(old)
    assert not hasattr(settings.vad, "timeout_s")
    assert "vad.timeout_s is no longer used" in caplog.text
    assert "wake.confirm_timeout_s" in caplog.text


def test_a_removed_key_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old.yaml"
    old.write_text("vad:\n  min_modulation_db: 3.0\n  silence_ms: 900\n")
    with caplog.at_level("WARNING"):
        settings = config.load(old)
    assert settings.vad.silence_ms == 900
    assert "vad.min_modulation_db is no longer used" in caplog.text
    assert "speech_threshold" in caplog.text
    result = CliRunner().invoke(main, ["config", "check", str(old)])
    assert result.exit_code == 0 and "ok" in result.output
    # Only removed keys are forgiven: a typo is still an error.
    typo = tmp_path / "typo.yaml"
    typo.write_text("vad:\n  min_modulation_dbb: 3.0\n")
    with pytest.raises(config.ConfigError, match=r"vad\.min_modulation_dbb: unknown key"):
        config.load(typo)
