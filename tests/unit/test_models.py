"""load_model: timm names, local checkpoints, foreign state dicts, the demo model, modules."""

from __future__ import annotations

import os

import pytest
import timm
import torch
from safetensors.torch import save_file

from probing import LoadedModel, ModelError, load_model, random_init_copy


def _tiny(**kw):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                             patch_size=8, depth=2, **kw)


def test_timm_name_random_init_and_data_config():
    loaded = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                        depth=2)
    assert isinstance(loaded, LoadedModel) and not loaded.model.training
    assert loaded.data_config["input_size"] == (3, 32, 32)
    assert loaded.layout.grid == (4, 4)


def test_unknown_name_suggests():
    with pytest.raises(ModelError, match="vit_tiny_patch16_224"):
        load_model("vit_tiny_patch16_22")


def test_pretrained_offline_missing_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="not available offline"):
        load_model("vit_tiny_patch16_224", pretrained=True)


def test_not_a_vit_module():
    with pytest.raises(ModelError, match="not a Vision Transformer"):
        load_model(timm.create_model("resnet18", pretrained=False))


def test_module_used_as_is():
    model = _tiny()
    loaded = load_model(model)
    assert loaded.model is model


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_keeps_classifier(tmp_path, suffix):
    model = _tiny(num_classes=7).eval()
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = load_model(path, arch="vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.model.head.out_features == 7


def test_checkpoint_needs_arch_and_must_fit(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in _tiny().state_dict().items()}, str(path))
    with pytest.raises(ModelError, match="arch="):
        load_model(path)
    with pytest.raises(ModelError, match="does not fit"):
        load_model(path, arch="vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in _tiny().state_dict().items()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        load_model(path, arch="vit_tiny_patch16_224")


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"weights": Evil()}, path)
    with pytest.raises(ModelError, match="cannot be read safely"):
        load_model(path, arch="vit_tiny_patch16_224")
    assert not marker.exists()


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors", arch="vit_tiny_patch16_224")


def test_bad_device():
    with pytest.raises(ModelError, match="device"):
        load_model(_tiny(), device="cuda:7" if not torch.cuda.is_available() else "nonsense")


def test_random_init_copy_differs_but_same_layout():
    loaded = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                        depth=2)
    rnd = random_init_copy(loaded, seed=3)
    assert rnd.layout == loaded.layout
    assert not torch.equal(rnd.model.pos_embed, loaded.model.pos_embed)
    again = random_init_copy(loaded, seed=3)
    assert torch.equal(rnd.model.pos_embed, again.model.pos_embed)


def _accuracy(loaded, source, label_column):
    from probing.data import iter_batches

    labels = source.labels()[label_column].to_numpy()
    correct = total = 0
    with torch.inference_mode():
        for batch in iter_batches(source, loaded.data_config, 500):
            pred = loaded.model(batch.images).argmax(-1).numpy()
            correct += int((pred == labels[batch.positions]).sum())
            total += len(batch.positions)
    return correct / total, total


def test_demo_model_is_accurate_on_held_out_shapes(demo_model):
    from probing import open_source
    from probing.demo import RECORD

    assert demo_model.layout.grid == (8, 8) and demo_model.layout.has_cls
    assert "learned" in demo_model.layout.position
    acc, n = _accuracy(demo_model, open_source("shapes:n=500,seed=12345"), "shape_id")
    assert n == 500 and acc >= 0.95
    assert RECORD.exists() and demo_model.fingerprint


def test_foreign_mnist_vit_reaches_97_percent(mnist_model, mnist_source):
    acc, n = _accuracy(mnist_model, mnist_source, "label")
    assert n == 10000 and acc >= 0.970


# ------------------------------------------------------------ failures said as what they are
def test_foreign_mapping_requires_preprocessing():
    from probing import ConfigError
    from probing.foreign import map_lucidrains

    with pytest.raises(ConfigError, match=r"mapping_options = \{mean, std\}"):
        map_lucidrains({}, act="relu")  # nothing is read before the preprocessing is known
    with pytest.raises(ConfigError, match=r"mapping_options = \{mean, std\}"):
        map_lucidrains({}, mean=(0.5,))


def test_foreign_mnist_vit_without_preprocessing_is_refused(shared_fixtures):
    from probing import ConfigError

    path = shared_fixtures / "mnist_vit" / "vit_mnist_gpu.pt"
    with pytest.raises(ConfigError, match=r"mapping_options = \{mean, std\}"):
        load_model(path, mapping="lucidrains", mapping_options={"act": "relu"})
    with pytest.raises(ConfigError, match="has no option.*'means'"):
        load_model(path, mapping="lucidrains", mapping_options={"means": 0.1, "std": 0.3})
    with pytest.raises(ConfigError, match="has 3 values but the model takes 1"):
        load_model(path, mapping="lucidrains", mapping_options={"mean": (0.1, 0.1, 0.1),
                                                                "std": 0.3})
    loaded = load_model(path, mapping="lucidrains", mapping_options={"mean": 0.1307,
                                                                     "std": 0.3081})
    assert loaded.data_config["mean"] == (0.1307,) and loaded.data_config["std"] == (0.3081,)


def test_mapping_options_without_mapping_are_refused(tmp_path):
    from probing import ConfigError

    with pytest.raises(ConfigError, match="without a mapping"):
        load_model("demo", mapping_options={"mean": 0.5, "std": 0.5})


def _tiny_file(tmp_path, change=None):
    state = {k: v.contiguous() for k, v in _tiny().state_dict().items()}
    if change:
        state.update(change(state))
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    return path


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.bool])
def test_non_floating_weights_are_refused(tmp_path, dtype):
    key = "blocks.0.attn.qkv.weight"
    path = _tiny_file(tmp_path, lambda s: {key: (s[key] * 100).to(dtype)})
    with pytest.raises(ModelError, match=rf"{path.name}.*{key}.*{str(dtype)}.*floating"):
        load_model(path, arch="vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    key = "blocks.1.mlp.fc1.weight"

    def poison(state):
        w = state[key].clone()
        w[0, 0] = bad
        return {key: w}

    path = _tiny_file(tmp_path, poison)
    with pytest.raises(ModelError, match=rf"{path.name} tensor '{key}' holds 1 NaN/inf"):
        load_model(path, arch="vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)


def test_pretrained_failures_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file" * 4)
    small = _tiny_file(tmp_path)  # weights of a depth-2, patch-8 model
    small_overlay = {"pretrained_cfg_overlay": {"file": str(small)}}
    cases = [
        ({"pretrained_cfg_overlay": {"file": str(bad)}}, "corrupt or unreadable"),
        ({"pretrained_cfg_overlay": {"file": str(tmp_path / "gone.pth")}}, "not available"),
        (small_overlay, "do not fit the architecture"),
    ]
    for options, message in cases:
        with pytest.raises(ModelError, match=message):
            load_model("vit_tiny_patch16_224", pretrained=True, **options)
    with pytest.raises(ModelError, match="has no pretrained tag 'bogus'"):
        load_model("vit_tiny_patch16_224.bogus", pretrained=False)
    with pytest.raises(ModelError, match="is not a Vision Transformer"):
        load_model("resnet18", pretrained=False)
    tagged = load_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k", pretrained=False,
                        img_size=32, patch_size=8, depth=1)
    assert tagged.layout.grid == (4, 4)


def test_random_init_control_is_never_the_model_itself(tmp_path):
    from probing.run.context import RunContext
    from probing.seeding import seeded

    with seeded(0):  # how a spec builds a pretrained = false timm model from its seed 0
        loaded = load_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                            patch_size=8, depth=2)
    with pytest.raises(ModelError, match="equals the model itself"):
        random_init_copy(loaded, seed=0)
    ctx = RunContext(model=loaded, source=None, store=None, seed=0)
    control = ctx.random_init_model().model.state_dict()
    own = loaded.model.state_dict()
    assert not any(torch.equal(control[k], own[k]) for k in own
                   if own[k].is_floating_point() and own[k].std() > 0)
