"""Checkpoints (safetensors weights + JSON card): bit-identical round trips, the card's contents,
and refusal of every tampered, corrupt, mismatched or missing piece with an error naming the file
and the field; bare-name lookup, atomic writes, and loading that never touches the files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pocoviz
from pocoviz.forecast import checkpoint as ckpt
from pocoviz.forecast.base import SessionInfo
from pocoviz.forecast.checkpoint import CheckpointError, load_model, save_model
from pocoviz.forecast.poco import POCO
from pocoviz.forecast.simple import MLP, CopyLast

torch.set_num_threads(1)

C, P = 48, 16
SESSIONS = [SessionInfo("a/s3", 3, "a"), SessionInfo("b/s5", 5, "b")]


def trained(model, steps: int = 3, seed: int = 0):
    """A few Adam steps on random data so that every weight (POCO's zero-initialised FiLM too)
    moves away from its initial value."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    U = max(s.n_units for s in model.sessions)
    model.train()
    for _ in range(steps):
        session = torch.arange(len(model.sessions)).repeat(2)
        counts = torch.tensor([model.sessions[s].n_units for s in session.tolist()])
        mask = torch.arange(U)[None, :] < counts[:, None]
        x = torch.randn(len(session), C, U, generator=g) * mask[:, None, :]
        y = torch.randn(len(session), P, U, generator=g) * mask[:, None, :]
        opt.zero_grad()
        model.training_loss(x, y, session, mask).backward()
        opt.step()
    return model.eval()


def make_poco(seed: int = 0, sessions=SESSIONS, **kw):
    torch.manual_seed(seed)
    return trained(POCO(sessions, dim=16, hidden=32, self_heads=2, dim_head=8, **kw), seed=seed)


def make_mlp(seed: int = 0, hidden: int = 16, sessions=SESSIONS):
    torch.manual_seed(seed)
    return trained(MLP(sessions, hidden=hidden), seed=seed)


def fixed_input(model):
    g = torch.Generator().manual_seed(123)
    U = max(s.n_units for s in model.sessions)
    session = torch.arange(len(model.sessions))
    counts = torch.tensor([s.n_units for s in model.sessions])
    mask = torch.arange(U)[None, :] < counts[:, None]
    x = torch.randn(len(session), C, U, generator=g) * mask[:, None, :]
    return x, session, mask


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def edit_card(card_path: Path, fn) -> None:
    card = json.loads(card_path.read_text())
    fn(card)
    card_path.write_text(json.dumps(card))


@pytest.fixture(scope="module")
def poco():
    return make_poco()


@pytest.fixture(scope="module")
def mlp():
    return make_mlp()


@pytest.fixture
def saved_poco(tmp_path, poco):
    return save_model(poco, tmp_path / "poco"), poco


@pytest.fixture
def saved_mlp(tmp_path, mlp):
    return save_model(mlp, tmp_path / "mlp"), mlp


# --------------------------------------------------------------------------------------------
# round trip and card
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["poco", "mlp", "poco-grown"])
def test_round_trip_is_bit_identical(tmp_path, which):
    if which == "mlp":
        model = make_mlp()
    else:
        model = make_poco()
        if which == "poco-grown":  # embedding tables grown after training, then fine-tuned
            model.add_sessions([SessionInfo("c/s4", 4, "c"), SessionInfo("a/s2", 2, "a")])
            trained(model, steps=1, seed=5)
    assert torch.count_nonzero(model.state_dict().get("film_alpha.weight", torch.ones(1))) > 0
    card_path = save_model(model, tmp_path / "m")
    assert card_path == tmp_path / "m.json"
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model)
    assert not loaded.training
    assert loaded.sessions == model.sessions and loaded.datasets == model.datasets
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    x, session, mask = fixed_input(model)
    with torch.no_grad():
        assert torch.equal(model(x, session, mask), loaded(x, session, mask))
    assert isinstance(loaded.card, dict) and loaded.card["kind"] == model.kind


def test_unit_labels_round_trip_through_the_card(tmp_path):
    sessions = [SessionInfo("a/s3", 3, "a", labels=("AVAL", "", "RIML")), SessionInfo("b/s5", 5, "b")]
    model = make_poco(sessions=sessions)
    card_path = save_model(model, tmp_path / "m")
    card = json.loads(card_path.read_text())
    assert card["sessions"][0]["labels"] == ["AVAL", "", "RIML"]
    assert "labels" not in card["sessions"][1]  # a session without labels stores none
    loaded = load_model(card_path)
    assert [s.labels for s in loaded.sessions] == [("AVAL", "", "RIML"), None]


def test_species_round_trips_and_older_cards_derive_it(tmp_path):
    """A session's species goes into the card; a card without one (every card written before
    sessions had a species, e.g. the shipped demo models) reads it from the dataset name."""
    sessions = [SessionInfo("C_elegans/w", 3, "C_elegans", labels=("AVAL", "", "RIML"), species="C. elegans"), SessionInfo("b/s5", 5, "b")]
    card_path = save_model(make_poco(sessions=sessions), tmp_path / "m")
    card = json.loads(card_path.read_text())
    assert card["sessions"][0]["species"] == "C. elegans" and "species" not in card["sessions"][1]
    loaded = load_model(card_path)
    assert [s.species for s in loaded.sessions] == ["C. elegans", None]
    assert [s.species_key for s in loaded.sessions] == ["c elegans", "b"]
    demo = ckpt.model_card("poco_demo")
    assert all("species" not in s for s in demo["sessions"])  # an older card, loaded as it is
    keys = {SessionInfo.from_json(s).dataset: SessionInfo.from_json(s).species_key for s in demo["sessions"]}
    assert keys == {"zebrafish": "d rerio", "mouse": "m musculus", "worm": "c elegans"}


def test_every_path_form_loads(saved_mlp, tmp_path):
    card_path, model = saved_mlp
    for p in (tmp_path / "mlp", card_path, tmp_path / "mlp.safetensors", str(card_path), str(tmp_path / "mlp")):
        assert torch.equal(load_model(p).net[0].weight, model.net[0].weight)


def test_model_without_parameters(tmp_path):
    save_model(CopyLast(SESSIONS), tmp_path / "copy")
    loaded = load_model(tmp_path / "copy")
    assert isinstance(loaded, CopyLast) and loaded.card["tensors"] == {} and loaded.card["n_parameters"] == 0


def test_card_contents(tmp_path, poco):
    training = {
        "corpus": Path("demo/corpus.nc"),
        "seeds": (0, np.int64(1)),
        "steps": torch.tensor(100),
        "lr": np.float32(0.5),
        "config": {"batch": 8},
    }
    metrics = {"score": np.float64(0.25), "per_session": {"a/s3": 0.1}}
    save_model(poco, tmp_path / "poco", training=training, metrics=metrics, extra={"note": "hi"})
    card = ckpt.read_card(tmp_path / "poco.json")
    assert card["format"] == "pocoviz-forecaster" and card["format_version"] == 1
    assert card["kind"] == "POCO"
    assert card["config"] == json.loads(json.dumps(poco.config()))
    assert card["sessions"] == [s.to_json() for s in SESSIONS]
    assert card["datasets"] == ["a", "b"]
    assert card["n_parameters"] == sum(p.numel() for p in poco.parameters())
    sd = poco.state_dict()
    assert card["tensors"] == {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in sd.items()}
    assert card["weights_sha256"] == hashlib.sha256((tmp_path / "poco.safetensors").read_bytes()).hexdigest()
    assert card["library_version"] == pocoviz.__version__
    assert card["torch_version"] == torch.__version__
    assert card["created"].endswith("+00:00")
    assert card["training"] == {"corpus": str(Path("demo/corpus.nc")), "seeds": [0, 1], "steps": 100, "lr": 0.5, "config": {"batch": 8}}
    assert card["metrics"] == {"score": 0.25, "per_session": {"a/s3": 0.1}}
    assert card["extra"] == {"note": "hi"}
    assert ckpt.model_card(tmp_path / "poco") == card
    # the card is indented JSON text
    assert (tmp_path / "poco.json").read_text().startswith("{\n ")


def test_unserialisable_record_writes_nothing(tmp_path, mlp):
    with pytest.raises(TypeError, match=r"training\.bad"):
        save_model(mlp, tmp_path / "m", training={"bad": object()})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------


def test_tampered_session_units_refused(saved_poco, tmp_path):
    card_path, _ = saved_poco
    edit_card(card_path, lambda c: c["sessions"][0].update(n_units=4))
    with pytest.raises(CheckpointError, match="unit_emb.weight") as e:
        load_model(card_path)
    assert e.value.field == "tensors.unit_emb.weight"
    assert "[9, 16]" in str(e.value) and "[8, 16]" in str(e.value)  # both shapes named
    assert str(e.value).startswith("poco.json: field 'tensors.unit_emb.weight': ")


def test_modified_weights_byte_refused(saved_mlp, tmp_path):
    card_path, _ = saved_mlp
    w = tmp_path / "mlp.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the card") as e:
        load_model(card_path)
    assert e.value.field == "weights_sha256"


def test_weights_of_other_architecture_refused(tmp_path, mlp):
    save_model(mlp, tmp_path / "small")
    save_model(make_mlp(hidden=24), tmp_path / "big")
    shutil.copyfile(tmp_path / "big.safetensors", tmp_path / "small.safetensors")
    sha = hashlib.sha256((tmp_path / "small.safetensors").read_bytes()).hexdigest()
    edit_card(tmp_path / "small.json", lambda c: c.update(weights_sha256=sha))
    with pytest.raises(CheckpointError, match="net.0.weight") as e:
        load_model(tmp_path / "small")
    assert e.value.field == "tensors.net.0.weight" and "[16, 48]" in str(e.value) and "[24, 48]" in str(e.value)
    # a card whose tensor list was forged to match the weights still disagrees with its config
    big_tensors = ckpt.read_card(tmp_path / "big.json")["tensors"]
    edit_card(tmp_path / "small.json", lambda c: c.update(tensors=big_tensors))
    with pytest.raises(CheckpointError, match="model built from the card has shape") as e:
        load_model(tmp_path / "small")
    assert e.value.field.startswith("tensors.net.")


def test_weights_of_other_kind_refused(tmp_path, mlp, poco):
    save_model(mlp, tmp_path / "m")
    save_model(poco, tmp_path / "p")
    shutil.copyfile(tmp_path / "p.safetensors", tmp_path / "m.safetensors")
    edit_card(tmp_path / "m.json", lambda c: c.update(weights_sha256=hashlib.sha256((tmp_path / "m.safetensors").read_bytes()).hexdigest()))
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "m")
    assert e.value.field.startswith("tensors.")


def test_corrupt_safetensors_with_matching_sha_refused(saved_mlp, tmp_path):
    card_path, _ = saved_mlp
    w = tmp_path / "mlp.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    edit_card(card_path, lambda c: c.update(weights_sha256=hashlib.sha256(w.read_bytes()).hexdigest()))
    with pytest.raises(CheckpointError, match="safetensors") as e:
        load_model(card_path)
    assert e.value.field == "weights"


@pytest.mark.parametrize(
    "content",
    [b"", b'{"format": "pocoviz-forecaster", "format_ver', b"\xff\xfe garbage \x00", b"[1, 2, 3]", b'{"a": 1, "a": 2}'],
    ids=["empty", "truncated", "binary", "array", "duplicate-key"],
)
def test_bad_json_names_the_file(tmp_path, content):
    (tmp_path / "m.json").write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        ckpt.read_card(tmp_path / "m.json")
    assert str(e.value).startswith("m.json: ")
    assert e.value.path == str(tmp_path / "m.json")


def test_unknown_kind(saved_mlp):
    card_path, _ = saved_mlp
    edit_card(card_path, lambda c: c.update(kind="Prophet"))
    with pytest.raises(CheckpointError, match="unknown model kind 'Prophet'.*POCO") as e:
        load_model(card_path)
    assert e.value.field == "kind"


def test_newer_format_version_refused(saved_mlp):
    card_path, _ = saved_mlp
    edit_card(card_path, lambda c: c.update(format_version=99))
    with pytest.raises(CheckpointError, match="newer") as e:
        load_model(card_path)
    assert e.value.field == "format_version"


def test_missing_weights(saved_mlp, tmp_path):
    card_path, _ = saved_mlp
    (tmp_path / "mlp.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing") as e:
        load_model(card_path)
    assert e.value.field == "weights"


def test_missing_card(tmp_path):
    with pytest.raises(CheckpointError, match="no such model card"):
        load_model(tmp_path / "nothing")


def test_bad_config_refused(saved_mlp):
    card_path, _ = saved_mlp
    edit_card(card_path, lambda c: c["config"].update(bogus=1))
    with pytest.raises(CheckpointError, match="bogus") as e:
        load_model(card_path)
    assert e.value.field == "config"


def test_oversized_config_refused_without_allocating(saved_mlp):
    """A forged config asking for a huge model is caught on the meta device, before allocation."""
    card_path, _ = saved_mlp
    edit_card(card_path, lambda c: c["config"].update(hidden=10**9))
    with pytest.raises(CheckpointError, match=r"\[1000000000, 48\]"):
        load_model(card_path)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda c: c.pop("tensors"), "tensors"),
        (lambda c: c.update(format="something-else"), "format"),
        (lambda c: c.update(format_version="1"), "format_version"),
        (lambda c: c.update(config=[1]), "config"),
        (lambda c: c.update(sessions=[]), "sessions"),
        (lambda c: c["sessions"][1].update(n_units=0), "sessions[1].n_units"),
        (lambda c: c["sessions"][1].update(n_units="5"), "sessions[1].n_units"),
        (lambda c: c["sessions"][1].update(n_units=True), "sessions[1].n_units"),
        (lambda c: c["sessions"][0].pop("dataset"), "sessions[0].dataset"),
        (lambda c: c["sessions"][1].update(name="a/s3"), "sessions[1].name"),
        (lambda c: c["sessions"][1].update(labels=["AVAL"]), "sessions[1].labels"),
        (lambda c: c["sessions"][0].update(labels=["AVAL", 3, ""]), "sessions[0].labels"),
        (lambda c: c["sessions"][0].update(species=""), "sessions[0].species"),
        (lambda c: c["sessions"][1].update(species=["C. elegans"]), "sessions[1].species"),
        (lambda c: c["sessions"][1].update(organism="C. elegans"), "sessions[1]"),
        (lambda c: c["tensors"]["net.0.weight"].update(shape=[16, -48]), "tensors.net.0.weight"),
        (lambda c: c["tensors"]["net.0.weight"].update(dtype=None), "tensors.net.0.weight"),
        (lambda c: c.update(weights_sha256="abc"), "weights_sha256"),
        (lambda c: c.update(metrics=[1]), "metrics"),
    ],
)
def test_card_schema_errors_name_the_field(saved_mlp, edit, field):
    card_path, _ = saved_mlp
    edit_card(card_path, edit)
    with pytest.raises(CheckpointError) as e:
        ckpt.read_card(card_path)
    assert e.value.field == field
    assert f"field '{field}'" in str(e.value)


def test_huge_card_refused_before_reading(tmp_path):
    with open(tmp_path / "huge.json", "wb") as f:
        f.truncate(64 * 2**20 + 1)  # sparse: costs no disk
    with pytest.raises(CheckpointError, match="MiB"):
        ckpt.read_card(tmp_path / "huge.json")


def test_error_shows_path_relative_to_cwd(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.json").write_text("nope")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as e:
        ckpt.read_card(Path("sub") / "m.json")
    assert str(e.value).startswith(f"{Path('sub') / 'm.json'}: ")


# --------------------------------------------------------------------------------------------
# lookup by name
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_default_models(tmp_path, monkeypatch):
    """Point the shipped models folder at an empty place and clear POCOVIZ_MODELS."""
    assets = tmp_path / "empty_assets"
    assets.mkdir()
    monkeypatch.setenv("POCOVIZ_ASSETS", str(assets))
    monkeypatch.delenv("POCOVIZ_MODELS", raising=False)


def test_available_models(tmp_path, mlp, poco, no_default_models):
    one, two = tmp_path / "one", tmp_path / "two"
    save_model(mlp, one / "zeta")
    save_model(poco, one / "alpha")
    save_model(poco, two / "alpha")
    save_model(mlp, two / "beta")
    shutil.copyfile(one / "zeta.json", one / "orphan.json")  # a card without weights
    assert ckpt.available_models([one, two]) == ["alpha", "beta", "zeta"]
    assert ckpt.available_models([one, tmp_path / "missing"]) == ["alpha", "zeta"]
    assert ckpt.available_models() == []
    # the first folder wins
    assert load_model("alpha", search=[two, one]).card["weights_sha256"] == ckpt.read_card(two / "alpha.json")["weights_sha256"]


def test_load_by_name(tmp_path, mlp, no_default_models, monkeypatch):
    save_model(mlp, tmp_path / "demo.v1")
    model = load_model("demo.v1", search=[tmp_path])
    assert torch.equal(model.net[0].weight, mlp.net[0].weight)
    assert ckpt.model_card("demo.v1", search=[tmp_path])["kind"] == "MLP"
    with pytest.raises(CheckpointError, match=r"no model named 'demo\.v1'.*available: none"):
        load_model("demo.v1")
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.setenv("POCOVIZ_MODELS", os.pathsep.join([str(other), str(tmp_path)]))
    assert ckpt.available_models() == ["demo.v1"]
    assert torch.equal(load_model("demo.v1").net[0].weight, mlp.net[0].weight)
    with pytest.raises(CheckpointError, match="available: demo.v1"):
        load_model("nope")


def test_shipped_models_folder_is_searched(tmp_path, mlp, monkeypatch):
    monkeypatch.setenv("POCOVIZ_ASSETS", str(tmp_path))
    monkeypatch.delenv("POCOVIZ_MODELS", raising=False)
    save_model(mlp, tmp_path / "models" / "shipped")
    assert ckpt.available_models() == ["shipped"]
    assert isinstance(load_model("shipped"), MLP)


# --------------------------------------------------------------------------------------------
# files: atomic writes, loading is read-only
# --------------------------------------------------------------------------------------------


def test_writes_are_atomic_and_replace_cleanly(tmp_path, mlp, poco):
    save_model(mlp, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    save_model(poco, tmp_path / "m.safetensors")  # replace with another model, named by its weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    assert isinstance(load_model(tmp_path / "m"), POCO)


def test_failed_write_leaves_old_checkpoint_and_no_temp_files(tmp_path, mlp, poco, monkeypatch):
    save_model(mlp, tmp_path / "m")
    before = snapshot(tmp_path)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_model(poco, tmp_path / "m")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert isinstance(load_model(tmp_path / "m"), MLP)


def test_loading_never_modifies_files(saved_poco, tmp_path):
    before = snapshot(tmp_path)
    load_model(tmp_path / "poco")
    ckpt.model_card(tmp_path / "poco")
    ckpt.available_models([tmp_path])
    assert snapshot(tmp_path) == before
    edit_card(tmp_path / "poco.json", lambda c: c["sessions"][0].update(n_units=4))
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "poco")
    assert snapshot(tmp_path) == before


def test_load_to_device(saved_mlp, tmp_path):
    model = load_model(tmp_path / "mlp", device="cpu")
    assert model.net[0].weight.device.type == "cpu"


def test_datasets_must_follow_from_sessions(saved_mlp):
    card_path, _ = saved_mlp
    edit_card(card_path, lambda c: c.update(datasets=["b", "a"]))
    with pytest.raises(CheckpointError, match="datasets") as e:
        load_model(card_path)
    assert e.value.field == "datasets"


def test_weights_file_bytes_are_reproducible(tmp_path):
    """Saving the same weights twice writes the same bytes (safetensors writes metadata maps in
    arbitrary order, so the metadata holds one key), so make-assets reproduces the shipped files."""
    from pocoviz.forecast.base import SessionInfo
    from pocoviz.forecast.simple import NLinear

    torch.manual_seed(0)
    m = NLinear([SessionInfo("a/b", 3, "a")])
    blobs = set()
    for i in range(5):
        ckpt.save_model(m, tmp_path / f"m{i}")
        blobs.add((tmp_path / f"m{i}.safetensors").read_bytes())
    assert len(blobs) == 1
