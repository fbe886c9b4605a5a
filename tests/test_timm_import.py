"""ImageNet ViT/DeiT (timm tensor names) into AST and PaSST: parity with transformers' DeiT, positional-grid
fitting, the plain-ViT and PaSST encodings, weight files, and `init_from` in training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import DatasetInfo
from afx.errors import ConfigError
from afx.models import passt
from afx.models.ast import AST, merge_params, params_from_timm
from afx.train import apply_overrides, load_config, load_run, make_run, train
from afx.train.weights import init_from_weights, read_state_dict

# transformers 5's DeiT layer names → timm's; query, key and value are stacked into attn.qkv
DEIT_TO_TIMM = {"attention.o_proj": "attn.proj", "layernorm_before": "norm1", "layernorm_after": "norm2",
                "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def timm_from_deit(state: dict, num_layers: int) -> dict:
  """A transformers `DeiTModel` state dict (NumPy) in timm's tensor names."""
  timm = {"cls_token": state["embeddings.cls_token"], "dist_token": state["embeddings.distillation_token"],
          "pos_embed": state["embeddings.position_embeddings"],
          "norm.weight": state["layernorm.weight"], "norm.bias": state["layernorm.bias"]}
  for part in ("weight", "bias"):
    timm[f"patch_embed.proj.{part}"] = state[f"embeddings.patch_embeddings.projection.{part}"]
    for index in range(num_layers):
      hf, block = f"layers.{index}", f"blocks.{index}"
      timm[f"{block}.attn.qkv.{part}"] = np.concatenate(
          [state[f"{hf}.attention.{name}.{part}"] for name in ("q_proj", "k_proj", "v_proj")])
      for hf_name, timm_name in DEIT_TO_TIMM.items():
        timm[f"{block}.{timm_name}.{part}"] = state[f"{hf}.{hf_name}.{part}"]
  return timm


def random_timm_state(*, dim=16, num_layers=1, mlp_dim=32, side=4, distilled=True, seed=0) -> dict:
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  prefix = 2 if distilled else 1
  state = {"cls_token": normal(1, 1, dim), "pos_embed": normal(1, prefix + side * side, dim),
           "patch_embed.proj.weight": normal(dim, 3, 16, 16), "patch_embed.proj.bias": normal(dim),
           "norm.weight": normal(dim), "norm.bias": normal(dim),
           "head.weight": normal(10, dim), "head.bias": normal(10)}  # the ImageNet classifier, never read
  if distilled:
    state["dist_token"] = normal(1, 1, dim)
  shapes = {"attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "mlp.fc1": (mlp_dim, dim), "mlp.fc2": (dim, mlp_dim),
            "norm1": (dim,), "norm2": (dim,)}
  for index in range(num_layers):
    for name, shape in shapes.items():
      state[f"blocks.{index}.{name}.weight"] = normal(*shape)
      state[f"blocks.{index}.{name}.bias"] = normal(shape[0])
  return state


def zeros_like_params(model, frames: int, mel: int) -> dict:
  """A model's parameter tree as zeros: `merge_params` needs values, and a random init costs seconds of compiling."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, frames, mel)), method="from_spectrogram"))
  return jax.tree_util.tree_map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes["params"])


def bilinear(grid: np.ndarray, axis: int, size: int) -> np.ndarray:
  """Half-pixel-centred linear interpolation along `axis` (PyTorch's align_corners=False)."""
  length = grid.shape[axis]
  source = np.clip((np.arange(size) + 0.5) * length / size - 0.5, 0, length - 1)
  low = np.floor(source).astype(int)
  high = np.minimum(low + 1, length - 1)
  weight = np.expand_dims(source - low, [a for a in range(grid.ndim) if a != axis])
  return np.take(grid, low, axis) * (1 - weight) + np.take(grid, high, axis) * weight


def test_imported_deit_encodes_a_spectrogram_image_as_transformers_deit_does():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = transformers.DeiTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                                   image_size=48, patch_size=16, layer_norm_eps=1e-6)
  torch.manual_seed(0)
  reference = transformers.DeiTModel(config, add_pooling_layer=False).eval()
  with torch.no_grad():  # move every tensor off its initialisation (LayerNorms included)
    for parameter in reference.parameters():
      parameter.add_(0.1 * torch.randn_like(parameter))
  spectrogram = np.random.default_rng(0).standard_normal((2, 48, 48)).astype(np.float32)  # [batch, frames, mel]
  image = np.repeat(np.swapaxes(spectrogram, 1, 2)[:, None], 3, axis=1)  # rows = mel bins, RGB all equal
  with torch.no_grad():
    expected = reference(torch.from_numpy(image)).last_hidden_state.numpy()

  model = AST(num_classes=3, num_mel_bins=48, input_frames=None, positional_frames=48, frequency_stride=16,
              time_stride=16, embed_dim=64, num_layers=2, num_heads=2, mlp_dim=128, layer_norm_epsilon=1e-6)
  assert model.positional_grid() == (3, 3)  # the DeiT grid: nothing to cut or resize
  fresh = zeros_like_params(model, 48, 48)
  state = timm_from_deit({k: v.numpy() for k, v in reference.state_dict().items()}, num_layers=2)
  params = merge_params(fresh, params_from_timm(state, num_layers=2, num_heads=2, grid=model.positional_grid()))
  encode = jax.jit(lambda params, x: model.apply({"params": params}, x, method="encode"))
  states = np.asarray(encode(params, jnp.asarray(spectrogram)))
  print("max |afx - DeiT| at CLS, DIST:", np.abs(states[:, :2] - expected[:, :2]).max(),
        "over all tokens:", np.abs(states - expected).max())
  np.testing.assert_allclose(states, expected, atol=1e-4)  # CLS, DIST and every patch
  for name in ("head_norm", "head"):  # the ImageNet classifier is not imported
    jax.tree_util.tree_map(np.testing.assert_array_equal, params[name], fresh[name])


@pytest.mark.parametrize("grid,expected", [
    ((2, 7), lambda image: bilinear(image[1:3], axis=1, size=7)),  # frequency cut around the centre, time resized
    ((6, 3), lambda image: bilinear(image, axis=0, size=6)[:, 1:4]),  # frequency resized, time cut
])
def test_positional_grid_is_cut_around_the_centre_or_bilinearly_resized(grid, expected):
  state = random_timm_state(side=4)
  params = params_from_timm(state, num_layers=1, num_heads=2, grid=grid)
  np.testing.assert_allclose(params["position_embeddings"][0, 2:].reshape(*grid, 16),
                             expected(state["pos_embed"][0, 2:].reshape(4, 4, 16)), atol=1e-6)
  np.testing.assert_array_equal(params["position_embeddings"][0, :2], state["pos_embed"][0, :2])


def test_plain_vit_copies_the_cls_token_into_the_distillation_token():
  state = random_timm_state(distilled=False, side=2)
  params = params_from_timm(state, num_layers=1, num_heads=2, grid=(2, 2))
  np.testing.assert_array_equal(params["distillation_token"], state["cls_token"])
  np.testing.assert_array_equal(params["cls_token"], state["cls_token"])
  positions = state["pos_embed"][0]
  np.testing.assert_array_equal(params["position_embeddings"][0], np.concatenate([positions[:1], positions]))


def test_passt_encodings_are_the_fitted_grids_means_over_each_axis():
  model = passt.PaSST(num_classes=4, num_mel_bins=48, input_frames=None, positional_frames=80, stride=16,
                      embed_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
  grid = model.positional_grid()
  assert grid == (3, 5)  # from a 4 × 4 image grid: frequency cut, time resized
  state = random_timm_state(side=4)
  imported = passt.params_from_timm(state, num_layers=1, num_heads=2, grid=grid)
  fitted = params_from_timm(state, num_layers=1, num_heads=2, grid=grid)["position_embeddings"][0, 2:]
  fitted = fitted.reshape(*grid, 16)
  np.testing.assert_allclose(imported["frequency_positions"], fitted.mean(axis=1, keepdims=True), atol=1e-6)
  np.testing.assert_allclose(imported["time_positions"], fitted.mean(axis=0, keepdims=True), atol=1e-6)
  np.testing.assert_array_equal(imported["special_tokens"],
                                np.concatenate([state["cls_token"][0], state["dist_token"][0]]))
  np.testing.assert_array_equal(imported["special_positions"], state["pos_embed"][0, :2])
  params = merge_params(zeros_like_params(model, 80, 48), imported)  # the tree fits PaSST
  logits = jax.eval_shape(lambda: model.apply({"params": params}, jnp.ones((2, 80, 48)), method="from_spectrogram"))
  assert logits.shape == (2, 4)


def test_weight_files_of_every_format_read_the_same_tensors(tmp_path):
  torch = pytest.importorskip("torch")
  from safetensors.numpy import save_file
  state = random_timm_state(side=2)
  save_file(state, tmp_path / "vit.safetensors")
  np.savez(tmp_path / "vit.npz", **state)
  torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, tmp_path / "deit.pth")  # DeiT's wrapping
  for name in ("vit.safetensors", "vit.npz", "deit.pth"):
    loaded = read_state_dict(str(tmp_path / name))
    assert sorted(loaded) == sorted(state), name
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, state)
  with pytest.raises(ConfigError, match="does not exist"):
    read_state_dict(str(tmp_path / "missing.pth"))


AST_CONFIG = '''"""The tests' tiny synth_events run with a tiny AST."""
import ml_collections
from afx.train.config import load_config


def get_config(variant=None):
  config = load_config({tiny!r} + ":small,tiny")
  config.model = ml_collections.ConfigDict(dict(
      name="ast", num_mel_bins=32, input_frames=48, positional_frames=48, frequency_stride=16, time_stride=16,
      embed_dim=16, num_layers=1, num_heads=2, mlp_dim=32, layer_norm_epsilon=1e-6))
  return config
'''


@pytest.fixture(scope="module")
def ast_config_path(tiny_config_path, tmp_path_factory):
  path = tmp_path_factory.mktemp("timm") / "ast_config.py"
  path.write_text(AST_CONFIG.format(tiny=tiny_config_path))
  return str(path)


def test_training_with_init_from_starts_from_the_imported_encoder(ast_config_path, tmp_path):
  torch = pytest.importorskip("torch")
  state = random_timm_state(side=4)
  weights = str(tmp_path / "deit.pth")
  torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, weights)
  config = apply_overrides(load_config(ast_config_path), [f"--config.init_from={weights}"])
  workdir = str(tmp_path / "run")
  assert train(config, workdir, stop_at_step=0) is None  # saves the step-0 state
  run, saved = load_run(workdir)
  assert run.model.positional_grid() == (2, 3) and int(saved.step) == 0  # from a 4 × 4 grid: cut and resized
  imported = params_from_timm(state, num_layers=1, num_heads=2, grid=run.model.positional_grid())
  saved = jax.device_get(saved.params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, {name: saved[name] for name in imported}, imported)
  assert sorted(set(saved) - set(imported)) == ["head", "head_norm"]


def test_init_from_that_does_not_fit_is_a_config_error_naming_the_tensor(ast_config_path, tiny_config_path, tmp_path):
  weights = str(tmp_path / "wide.npz")
  np.savez(weights, **random_timm_state(dim=24, mlp_dim=48))
  wide = r"wide\.npz does not fit model 'ast': patch_embed/kernel is \[16, 16, 1, 24\] in the file and \[16, 16, 1, 16\]"
  other_model = "into the models ast, conformer, passt, rnn_seq2seq, not model 'audio_transformer'"
  for path, message in [(ast_config_path, wide), (f"{tiny_config_path}:small,tiny", other_model)]:
    run = make_run(load_config(path), DatasetInfo(16000, tuple("abcde")))
    with pytest.raises(ConfigError, match=message):  # raised before anything is placed on the devices
      init_from_weights(run, run.abstract_state, weights)
