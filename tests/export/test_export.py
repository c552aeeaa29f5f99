"""Export of small fresh models: ORT vs PyTorch parity at every B and T, manifest checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.__main__ import main as export_cli
from export.onnx_export import export_model
from export.verify import (
    BATCHES,
    FP32_PIXEL_TOLERANCE,
    FP32_TOLERANCE,
    LENGTHS,
    parity,
    session,
)
from model.checkpoint import save_model
from service.engine.manifest import FORMAT_VERSION, MAX_FRAMES, ManifestDoc, load_manifest
from service.settings import REPO
from tests.conftest import tiny_model

VARIANTS = {"dsvae": {}, "dsvae-full": {"posterior": "full"}, "unordered": {"arch": "unordered"},
            "dsvae-exact": {"decoder_colours": 12}}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def exported(request, tmp_path_factory):
    """(model, folder) for each architecture; the plain dsvae is the session's tiny model."""
    model = tiny_model(**VARIANTS[request.param])
    if request.param == "dsvae":
        return model, request.getfixturevalue("tiny_model_dir")
    folder = tmp_path_factory.mktemp(request.param)
    export_model(model, folder, name=f"tiny-{request.param}")
    return model, folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The session's tiny dsvae (same seed) as a safetensors checkpoint."""
    path = tmp_path_factory.mktemp("checkpoint") / "model.safetensors"
    save_model(tiny_model(), path, {"dataset": "sprites", "commit": "test"})
    return path


def test_parity_at_every_batch_size_and_length(exported):
    model, folder = exported
    manifest = json.loads((folder / "manifest.json").read_text())
    fp16 = manifest["variants"]["float16"]
    # onnxruntime's CPU LSTM crashes on float16: the full posterior ships no float16 encoder;
    # the recurrent prior stays float32 (its roll-out compounds float16 rounding)
    # an exact-colour decoder's argmax flips near ties in float16: no float16 decoder
    expected = (({"decoder"} if not model.cfg.decoder_colours else set())
                | ({"encoder"} if model.cfg.posterior != "full" else set())
                | ({"prior"} if model.cfg.arch == "unordered" else set()))
    assert set(fp16) == expected
    onnx_types = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}
    for spec in manifest["graphs"].values():  # the manifest describes the real graphs
        sess = session(folder / spec["file"])
        for declared, real in ((spec["inputs"], sess.get_inputs()),
                               (spec["outputs"], sess.get_outputs())):
            assert [io["name"] for io in declared] == [io.name for io in real]
            assert [len(io["shape"]) for io in declared] == [len(io.shape) for io in real]
            assert [onnx_types[io["dtype"]] for io in declared] == [io.type for io in real]
    # pixels in and out as the service's clips are: uint8 (B, T, S, S, 3)
    s = model.cfg.frame_size
    for graph, where in (("encoder", "inputs"), ("decoder", "outputs")):
        (video,) = manifest["graphs"][graph][where]
        assert video == {"name": "video", "dtype": "uint8", "shape": ["B", "T", s, s, 3],
                         "layout": "BTHWC"}
    for graph, variant in fp16.items():  # a float16 variant has its graph's inputs and outputs
        sess = session(folder / variant["file"])
        spec = manifest["graphs"][graph]
        assert ({io.name: io.type for io in sess.get_inputs() + sess.get_outputs()}
                == {io["name"]: onnx_types[io["dtype"]] for io in spec["inputs"] + spec["outputs"]})
    rows = parity(model, folder, BATCHES, LENGTHS)
    assert {(r.graph, r.variant) for r in rows} == (
        {(g, "float32") for g in manifest["graphs"]} | {(g, "float16") for g in fp16})
    for row in rows:
        full = FP32_PIXEL_TOLERANCE if row.graph == "decoder" else FP32_TOLERANCE
        limit = full if row.variant == "float32" else fp16[row.graph]["tolerance"]
        assert row.tolerance == limit
        if row.flips_allowed is None:
            assert row.max_abs <= limit, f"{row.graph} {row.variant}: {row.max_abs} at {row.worst}"
        else:  # an exact-colour decoder: near-tie flips of its argmax, at most that share
            assert row.graph == "decoder" and model.cfg.decoder_colours
            assert row.ok and row.differing <= row.flips_allowed


def test_an_exact_colour_decoder_may_flip_a_few_near_ties_and_no_more():
    from export.verify import EXACT_COLOUR_FLIPS, ParityRow

    row = ParityRow("decoder", "float32", 0.8, FP32_PIXEL_TOLERANCE, (16, 64), 2e-5,
                    EXACT_COLOUR_FLIPS)
    assert row.ok
    row.differing = 5 * EXACT_COLOUR_FLIPS
    assert not row.ok
    assert not ParityRow("decoder", "float32", 0.8, FP32_PIXEL_TOLERANCE, (1, 1), 2e-5).ok


def test_cli_exports_and_verifies(checkpoint, tmp_path, capsys):
    out = tmp_path / "model"
    assert export_cli([str(checkpoint), str(out), "--no-fp16", "--name", "cli"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "cli" and manifest["variants"] == {}
    assert manifest["training"] == {"dataset": "sprites", "commit": "test"}
    assert "LPC" in manifest["licence"]
    assert export_cli(["verify", str(out), str(checkpoint)]) == 0
    assert "verify: ok" in capsys.readouterr().out


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


@pytest.mark.parametrize("file", ["encoder.onnx", "decoder.fp16.onnx"])
def test_a_tampered_file_is_refused(tiny_model_dir, checkpoint, tmp_path, capsys, file):
    copy = _copy(tiny_model_dir, tmp_path)
    with (copy / file).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(RuntimeError, match="SHA-256"):
        load_manifest(copy)
    assert export_cli(["verify", str(copy), str(checkpoint)]) == 1
    assert "hashes: FAIL" in capsys.readouterr().out


def test_an_unknown_format_version_is_refused(tiny_model_dir, checkpoint, tmp_path, capsys):
    copy = _copy(tiny_model_dir, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 1  # the float32-pixel graphs of before
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="format_version 1 is not one this service reads "
                       r"\(2: graphs on uint8 pixels\); re-export"):
        load_manifest(copy)
    assert export_cli(["verify", str(copy), str(checkpoint)]) == 1
    assert "format_version 1" in capsys.readouterr().out


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(apperance_dim=m.pop("appearance_dim")), "appearance_dim: Field required"),
    (lambda m: m["graphs"].pop("prior"), "graphs ['prior'] are missing"),
    (lambda m: m["graphs"]["encoder"]["inputs"][0].update(dtype="int64"),
     "graphs.encoder.inputs.0.dtype"),
    (lambda m: m["graphs"]["decoder"]["outputs"][0].update(dtype="float32"),
     "decoder.video must be uint8 BTHWC"),
    (lambda m: m.update(seq_len="eight"), "seq_len"),
])
def test_a_manifest_off_the_schema_is_refused_with_the_field(tiny_model_dir, tmp_path, edit,
                                                             message):
    copy = _copy(tiny_model_dir, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="does not follow the manifest schema") as error:
        load_manifest(copy)
    assert message in str(error.value)


def test_export_writes_what_the_schema_reads_back_unchanged(tiny_model_dir):
    text = (tiny_model_dir / "manifest.json").read_text()
    doc = ManifestDoc.model_validate_json(text)
    assert doc.format_version == FORMAT_VERSION and doc.max_frames == MAX_FRAMES
    assert json.loads(doc.model_dump_json()) == json.loads(text)


SHIPPED = sorted((REPO / "models").glob("*/manifest.json"))


@pytest.mark.parametrize("manifest", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_shipped_model_hashes_match(manifest):
    loaded = load_manifest(manifest.parent)
    files = [manifest.parent / spec.file for spec in loaded.doc.files().values()]
    assert sum(f.stat().st_size for f in files) < 25e6


def test_the_default_model_is_shipped():
    assert (REPO / "models" / "sprites" / "manifest.json").is_file()


@pytest.mark.parametrize("channels,entries,size,bias",
                         [(4, 6, 8, True), (32, 48, 32, True), (3, 1, 5, True), (5, 7, 6, False)])
def test_the_exported_last_layer_picks_the_entries_the_transposed_convolution_does(
        channels, entries, size, bias):
    """EntryArgmax (the exact-colour decoder's last layer and argmax, channels-last) gives the
    indices of ConvTranspose2d(k=4, s=2, p=1) followed by an argmax over its channels."""
    import torch

    from export.onnx_export import EntryArgmax

    torch.manual_seed(channels)
    conv = torch.nn.ConvTranspose2d(channels, entries, 4, 2, 1, bias=bias)
    h = torch.randn(3, channels, size, size)
    with torch.no_grad():
        logits = conv(h)  # (3, K, 2S, 2S)
        got = EntryArgmax(conv)(h)
    assert got.shape == (3, 2 * size, 2 * size)
    picked = torch.gather(logits, 1, got[:, None])[:, 0]
    # the same entry, or one whose logit ties the best to float rounding
    assert torch.allclose(picked, logits.max(1).values, atol=1e-5)
    assert (got == logits.argmax(1)).float().mean() > 0.999


def test_the_last_layer_rewrite_refuses_another_shape_of_layer():
    import torch

    from export.onnx_export import EntryArgmax

    for conv in (torch.nn.ConvTranspose2d(4, 4, 3, 1, 1),
                 torch.nn.ConvTranspose2d(4, 4, 4, 2, 1, output_padding=1),
                 torch.nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2)):
        with pytest.raises(ValueError, match="k=4, s=2, p=1"):
            EntryArgmax(conv)
