"""AST: patch grid, positional-grid fitting, and parity with Hugging Face's PyTorch AST."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afx.models.ast import AST, fit_positional_grid, params_from_hf, patch_grid


def test_patch_grid_of_audioset_input():
  assert patch_grid(1024, 128, 16, 10, 10) == (12, 101)  # the paper's 1212 patches
  with pytest.raises(ValueError, match="smaller than one 16×16 patch"):
    patch_grid(10, 128, 16, 10, 10)


def test_positional_grid_crops_shorter_and_resizes_longer_inputs():
  grid = jnp.arange(2 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 3)
  np.testing.assert_array_equal(fit_positional_grid(grid, 4, "crop"), grid[:, :4])
  longer = fit_positional_grid(grid, 11, "crop")
  assert longer.shape == (2, 11, 3)
  np.testing.assert_allclose(longer[:, 0], grid[:, 0], atol=0.5)  # resized, end points near the original


def test_any_input_length_runs():
  model = AST(num_classes=3, input_frames=None, positional_frames=100, num_mel_bins=32, embed_dim=16, num_layers=1,
              num_heads=2, mlp_dim=32)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 100, 32)), method="from_spectrogram")
  for frames in (40, 100, 230):
    logits = model.apply(variables, jnp.ones((2, frames, 32)), method="from_spectrogram")
    assert logits.shape == (2, 3)


def test_converted_hugging_face_ast_gives_the_same_logits():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = transformers.ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                  max_length=100, num_mel_bins=128, num_labels=5)
  torch.manual_seed(0)
  reference = transformers.ASTForAudioClassification(config).eval()
  inputs = np.random.default_rng(0).standard_normal((2, 100, 128)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(inputs)).logits.numpy()
  model = AST(num_classes=5, input_frames=100, positional_frames=100, embed_dim=64, num_layers=2, num_heads=4,
              mlp_dim=128)
  params = params_from_hf({k: v.numpy() for k, v in reference.state_dict().items()}, num_layers=2, num_heads=4)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 100, 128)), method="from_spectrogram"))
  assert jax.tree_util.tree_map(np.shape, params) == jax.tree_util.tree_map(lambda x: x.shape, shapes["params"])
  logits = model.apply({"params": params}, jnp.asarray(inputs), method="from_spectrogram")
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4)


def test_convert_hf_checkpoint_then_predict_matches_the_pytorch_pipeline(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import soundfile

  from afx.train import predict
  from afx.train.convert import convert_hf

  labels = {i: f"label_{i}" for i in range(5)}
  config = transformers.ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  max_length=128, num_mel_bins=128, num_labels=5, id2label=labels,
                                  label2id={v: k for k, v in labels.items()})
  torch.manual_seed(0)
  reference = transformers.ASTForAudioClassification(config).eval()
  source = tmp_path / "hf"
  reference.save_pretrained(source)
  extractor = transformers.ASTFeatureExtractor(max_length=128)
  extractor.save_pretrained(source)

  # 1 s of audio against the model's 1.28 s window: AST zero-pads the filterbank, not the waveform.
  audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
  soundfile.write(tmp_path / "tone.wav", audio, 16000)
  audio, _ = soundfile.read(tmp_path / "tone.wav", dtype="float32")  # as predict reads it: 16-bit samples
  with torch.no_grad():
    inputs = extractor(audio, sampling_rate=16000, return_tensors="pt")
    expected = torch.sigmoid(reference(**inputs).logits)[0].numpy()

  summary = convert_hf(str(source), str(tmp_path / "afx"))
  assert summary["classes"] == 5
  (line,) = list(predict(str(tmp_path / "afx"), [str(tmp_path / "tone.wav")], top_k=5))
  scores = {entry["label"]: entry["score"] for entry in line["top"]}
  np.testing.assert_allclose([scores[labels[i]] for i in range(5)], expected, atol=2e-5)


def test_transformers_4_tensor_names_convert_to_the_same_parameters():
  rng = np.random.default_rng(0)
  new = {"embeddings.cls_token": rng.standard_normal((1, 1, 8)), "embeddings.distillation_token": rng.standard_normal((1, 1, 8)),
         "embeddings.position_embeddings": rng.standard_normal((1, 4, 8)),
         "embeddings.patch_embeddings.projection.weight": rng.standard_normal((8, 1, 16, 16)),
         "embeddings.patch_embeddings.projection.bias": rng.standard_normal(8)}
  for name in ("layernorm", "classifier.layernorm", "classifier.dense"):
    new[f"{name}.weight"], new[f"{name}.bias"] = rng.standard_normal((8, 8) if "dense" in name else 8), rng.standard_normal(8)
  old = dict(new)
  renames = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
             "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense", "layernorm_before": "layernorm_before",
             "layernorm_after": "layernorm_after"}
  for modern, legacy in renames.items():
    shape = (8, 8) if "proj" in modern or "fc" in modern else (8,)
    for part in ("weight", "bias"):
      value = rng.standard_normal(shape if part == "weight" else (8,))
      new[f"layers.0.{modern}.{part}"] = value
      old[f"encoder.layer.0.{legacy}.{part}"] = value
  converted = [params_from_hf({f"audio_spectrogram_transformer.{k}": v for k, v in state.items()}, num_layers=1,
                              num_heads=2) for state in (new, old)]
  jax.tree_util.tree_map(np.testing.assert_array_equal, *converted)


def test_convert_errors_name_the_file(tmp_path):
  import json

  from afx.errors import ConfigError
  from afx.train.convert import convert_hf
  with pytest.raises(ConfigError, match="config.json does not exist"):
    convert_hf(str(tmp_path), str(tmp_path / "out"))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
  with pytest.raises(ConfigError, match="model_type 'vit'"):
    convert_hf(str(tmp_path), str(tmp_path / "out"))
