"""``voiced llm info`` and ``voiced llm create`` against the scripted Ollama server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests import ollama_fixtures
from tests.ollama_server import DEFAULT_MODEL, OllamaTestServer, gpt_oss_show
from voiced.cli import main
from voiced.commands.llm import (
    Modelfile,
    ModelfileError,
    modelfile_from_settings,
    parse_modelfile,
)
from voiced.config import LlmSettings

ollama_server = ollama_fixtures.ollama_server
dead_ollama_url = ollama_fixtures.dead_ollama_url

REPO_MODELFILE = Path(__file__).resolve().parent.parent / "config" / "Modelfile"


def invoke(*args: str):
    return CliRunner().invoke(main, ["llm", *args])


def row(output: str, label: str) -> str:
    match = re.search(rf"^    {re.escape(label)}\s+(.*)$", output, re.MULTILINE)
    assert match, f"no {label!r} row in:\n{output}"
    return match.group(1).strip()


def test_info_shows_what_ollama_show_verbose_shows(ollama_server: OllamaTestServer) -> None:
    result = invoke("info", "--host", ollama_server.url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"{DEFAULT_MODEL} on {ollama_server.url} (Ollama ")
    assert row(out, "architecture") == "gptoss"
    assert row(out, "parameters") == "20.9B (20,914,757,184)"
    assert row(out, "context length") == "131072"
    assert row(out, "embedding length") == "2880"
    assert row(out, "attention heads") == "64"
    assert row(out, "KV heads") == "8"
    assert row(out, "sliding window") == "128"
    assert row(out, "experts") == "32"
    assert row(out, "experts used") == "4"
    assert row(out, "quantization") == "MXFP4"
    capabilities = out.split("Capabilities")[1].split("Parameters")[0]
    for capability in ("completion", "tools", "thinking"):
        assert f"    {capability}\n" in capabilities
    assert "low, medium, high" in capabilities
    assert row(out, "temperature") == "1"
    assert "  License\n    Apache License, Version 2.0\n" in out
    assert result.stderr == ""
    assert ollama_server.requests_to("/api/show")[0].json == {"model": DEFAULT_MODEL}


def test_info_json_is_the_show_answer(ollama_server: OllamaTestServer) -> None:
    result = invoke("info", "--host", ollama_server.url, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    expected = gpt_oss_show()
    assert shown["model_info"] == expected["model_info"]
    assert shown["capabilities"] == expected["capabilities"]
    assert shown["details"] == expected["details"]


def test_info_with_the_server_down(dead_ollama_url: str) -> None:
    result = invoke("info", "--host", dead_ollama_url)
    assert result.exit_code == 1
    assert f"cannot reach Ollama at {dead_ollama_url}" in result.stderr
    assert "ollama serve" in result.stderr and "ollama pull gpt-oss:20b" in result.stderr
    assert result.stdout == ""


def test_info_for_a_model_not_pulled(ollama_server: OllamaTestServer) -> None:
    result = invoke("info", "--host", ollama_server.url, "--model", "gpt-oss:120b")
    assert result.exit_code == 1
    assert "model gpt-oss:120b is not pulled" in result.stderr
    assert "run: ollama pull gpt-oss:120b" in result.stderr


def test_info_honours_ollama_host(
    ollama_server: OllamaTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_server.url)
    result = invoke("info")
    assert result.exit_code == 0, result.output
    assert f"on {ollama_server.url}" in result.stdout


def test_repository_modelfile_matches_the_default_config() -> None:
    parsed = parse_modelfile(REPO_MODELFILE.read_text())
    assert parsed == modelfile_from_settings(LlmSettings())
    assert parsed.from_ == "gpt-oss:20b"
    assert "spoken aloud" in parsed.system and "{date}" not in parsed.system
    assert parsed.parameters == {"temperature": 0.7, "num_ctx": 8192}
    assert "TEMPLATE" not in [
        line.split(" ")[0] for line in REPO_MODELFILE.read_text().splitlines()
    ]


def test_create_from_the_config_sends_from_system_parameters_and_no_template(
    ollama_server: OllamaTestServer,
) -> None:
    result = invoke("create", "--host", ollama_server.url)
    assert result.exit_code == 0, result.output
    assert "created voiced from gpt-oss:20b" in result.stdout
    assert "success" in result.stderr
    [request] = ollama_server.requests_to("/api/create")
    sent = request.json
    assert sent["model"] == "voiced" and sent["from"] == "gpt-oss:20b"
    assert sent["parameters"] == {"temperature": 0.7, "num_ctx": 8192}
    assert sent["system"].startswith("You are voiced") and "{date}" not in sent["system"]
    assert "template" not in sent
    assert ollama_server.model("voiced") is not None


def test_create_from_the_repository_modelfile(ollama_server: OllamaTestServer) -> None:
    result = invoke("create", "assistant", "-f", str(REPO_MODELFILE), "--host", ollama_server.url)
    assert result.exit_code == 0, result.output
    sent = ollama_server.requests_to("/api/create")[0].json
    assert sent["model"] == "assistant" and sent["from"] == "gpt-oss:20b"
    info = invoke("info", "--host", ollama_server.url, "--model", "assistant")
    assert row(info.stdout, "num_ctx") == "8192"


def test_create_refuses_a_template(ollama_server: OllamaTestServer, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('FROM gpt-oss:20b\nTEMPLATE """{{ .Prompt }}"""\n')
    result = invoke("create", "-f", str(modelfile), "--host", ollama_server.url)
    assert result.exit_code == 1
    assert "TEMPLATE is not allowed" in result.stderr and "harmony" in result.stderr
    assert ollama_server.requests_to("/api/create") == []


def create_from(base: str, server: OllamaTestServer, tmp_path: Path):
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {base}\n")
    return invoke("create", "-f", str(modelfile), "--host", server.url)


def test_create_from_a_model_not_pulled_shows_ollamas_pull_as_one_bar(
    ollama_server: OllamaTestServer, tmp_path: Path
) -> None:
    # Ollama pulls a missing base model itself, reporting each layer many times a second.
    result = create_from("gpt-oss:120b", ollama_server, tmp_path)
    assert result.exit_code == 0, result.output
    assert ollama_server.model("gpt-oss:120b") is not None
    assert ollama_server.model("voiced") is not None
    lines = result.stderr.replace("\r", "\n").splitlines()
    statuses = [line for line in lines if line and "pulling gpt-oss:120b" not in line]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert not any(line.startswith("pulling ") and line != "pulling manifest" for line in statuses)
    assert len(statuses) < 15  # not the 400 progress lines Ollama sent
    assert "pulling gpt-oss:120b" in result.stderr  # the bar


def test_create_from_a_name_the_registry_does_not_have(
    ollama_server: OllamaTestServer, tmp_path: Path
) -> None:
    result = create_from("gpt-oss:7b", ollama_server, tmp_path)
    assert result.exit_code == 1
    assert "ollama pull" not in result.stderr  # Ollama already tried to pull it
    assert "registry has no model of that name" in result.stderr
    assert ollama_server.model("voiced") is None


def test_create_with_the_server_down(dead_ollama_url: str) -> None:
    result = invoke("create", "--host", dead_ollama_url)
    assert result.exit_code == 1
    assert "cannot reach Ollama" in result.stderr


def test_create_print_shows_the_modelfile_and_sends_nothing(dead_ollama_url: str) -> None:
    result = invoke("create", "--print", "--host", dead_ollama_url)
    assert result.exit_code == 0
    assert parse_modelfile(result.stdout) == modelfile_from_settings(LlmSettings())


def test_parse_modelfile_forms() -> None:
    text = '''
# comment
from gpt-oss:20b
PARAMETER stop "<|end|>"
PARAMETER stop user:
PARAMETER num_predict 256
PARAMETER penalize_newline true
SYSTEM """Line one.
Line two."""
'''
    parsed = parse_modelfile(text)
    assert parsed == Modelfile(
        from_="gpt-oss:20b",
        system="Line one.\nLine two.",
        parameters={"stop": ["<|end|>", "user:"], "num_predict": 256, "penalize_newline": True},
    )
    assert parse_modelfile(parsed.render()) == parsed
    assert parse_modelfile("FROM x\nSYSTEM Be brief.\n").system == "Be brief."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PARAMETER num_ctx 8\n", "no FROM line"),
        ("FROM a\nFROM b\n", "line 2: FROM given twice"),
        ("FROM a\nPARAMETER warmth 3\n", "unknown parameter 'warmth'"),
        ("FROM a\nPARAMETER num_ctx big\n", "bad value for num_ctx"),
        ("FROM a\nPARAMETER penalize_newline maybe\n", "must be true or false"),
        ("FROM a\nADAPTER ./lora.gguf\n", "ADAPTER is not supported here"),
        ("FROM a\nMESSAGE user hi\n", "MESSAGE is not supported here"),
        ('FROM a\nSYSTEM """never closed\n', "unterminated"),
        ("FROM a\ntemplate {{ .Prompt }}\n", "TEMPLATE is not allowed"),
    ],
)
def test_parse_modelfile_errors(text: str, message: str) -> None:
    with pytest.raises(ModelfileError, match=re.escape(message)):
        parse_modelfile(text)
