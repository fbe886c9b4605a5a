"""The Conformer: its blocks and decoder layers against ESPnet's (random weights copied with `params_from_espnet`),
the paper's sizes, relative-position shifting and padding invariance."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from afx.errors import ConfigError
from afx.layers.conformer import (ConformerBlock, ConvolutionModule, DepthwiseConv1D, RelativePositionAttention,
                                  rel_shift, relative_positions)
from afx.layers.transformer import DecoderBlock
from afx.models import conformer, parameter_count
from afx.models.conformer import Conformer

PARITY = 1e-4


def espnet():
  """torch and ESPnet's PyTorch modules by class name, or a skip saying why they cannot be had."""
  torch = pytest.importorskip("torch", reason="ESPnet parity needs torch (pip install torch)", exc_type=ImportError)
  try:
    from espnet.nets.pytorch_backend.conformer import convolution, encoder, encoder_layer, swish
    from espnet.nets.pytorch_backend.transformer import (attention, decoder, decoder_layer, embedding,
                                                         positionwise_feed_forward)
  except ImportError as error:
    pytest.skip(f"ESPnet parity needs espnet ({error})")
  return torch, types.SimpleNamespace(
      EspnetConvolution=convolution.ConvolutionModule, Encoder=encoder.Encoder, EncoderLayer=encoder_layer.EncoderLayer,
      Swish=swish.Swish, MultiHeadedAttention=attention.MultiHeadedAttention,
      RelPositionMultiHeadedAttention=attention.RelPositionMultiHeadedAttention, Decoder=decoder.Decoder,
      DecoderLayer=decoder_layer.DecoderLayer, RelPositionalEncoding=embedding.RelPositionalEncoding,
      PositionwiseFeedForward=positionwise_feed_forward.PositionwiseFeedForward)


def randomized(torch, module, seed: int, prefix: str = ""):
  """`module` in eval mode with every parameter and BatchNorm statistic moved off its initialisation (LayerNorm
  scales off 1, biases off 0), and its state dict as NumPy arrays under `prefix`."""
  generator = torch.Generator().manual_seed(seed)
  noise = lambda shape: torch.randn(shape, generator=generator)
  with torch.no_grad():
    for parameter in module.parameters():
      parameter.add_(0.1 * noise(parameter.shape))
    for name, buffer in module.named_buffers():
      if name.endswith("running_mean"):
        buffer.copy_(0.2 * noise(buffer.shape))
      elif name.endswith("running_var"):
        buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
  module.eval()
  return {f"{prefix}{key}": value.detach().numpy() for key, value in module.state_dict().items()}


def same_tree(imported, initialised):
  """The imported tensors have the tree and shapes of the module's own initialisation."""
  shapes = lambda tree: jax.tree.map(lambda x: tuple(np.shape(x)), tree)
  assert shapes(imported) == shapes(initialised)


def normal(seed, *shape):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_relative_positions_and_rel_shift_give_each_query_its_offset_to_each_key():
  scores = jnp.asarray(normal(0, 2, 3, 7, 13))  # [batch, heads, q = 7, 2q − 1]
  shifted = np.asarray(rel_shift(scores))
  i, j = np.meshgrid(np.arange(7), np.arange(7), indexing="ij")
  np.testing.assert_array_equal(shifted, np.asarray(scores)[..., i, 7 - 1 - i + j])
  table = np.asarray(relative_positions(5, 6))
  assert table.shape == (9, 6)
  np.testing.assert_allclose(table[4], [0, 1] * 3, atol=1e-7)  # offset 0
  np.testing.assert_allclose(table[0, 0], np.sin(4.0), atol=1e-6)  # row 0: the query 4 frames after the key
  np.testing.assert_allclose(table[8, 0], np.sin(-4.0), atol=1e-6)


def test_espnet_conformer_encoder_layer_gives_the_conformer_block_outputs():
  torch, m = espnet()
  d, heads, units, kernel, frames, short = 64, 4, 128, 31, 40, 27
  layer = m.EncoderLayer(d, m.RelPositionMultiHeadedAttention(heads, d, 0.0),
                            m.PositionwiseFeedForward(d, units, 0.0, m.Swish()),
                            m.PositionwiseFeedForward(d, units, 0.0, m.Swish()),
                            m.EspnetConvolution(d, kernel, m.Swish()), 0.0, normalize_before=True,
                            concat_after=False)
  state = randomized(torch, layer, seed=1, prefix="layer.")
  positional = m.RelPositionalEncoding(d, 0.0)
  x = normal(2, 2, frames, d)
  lengths = np.array([frames, short])

  def run_espnet(x, length):
    inputs = torch.from_numpy(x)
    _, positions = positional(inputs)
    mask = torch.arange(x.shape[1])[None, None, :] < torch.as_tensor(length)[:, None, None]
    with torch.no_grad():
      (out, _), _ = layer((inputs, positions), mask)
    return out.numpy(), positions[0].numpy()

  want, espnet_positions = run_espnet(x, lengths)
  alone, _ = run_espnet(x[1:, :short], lengths[1:])
  np.testing.assert_allclose(relative_positions(frames, d), espnet_positions, atol=2e-5)

  block = ConformerBlock(heads, units, kernel, attention_impl="xla")
  params = conformer.encoder_layer_params_from_espnet(state, "layer", num_heads=heads)
  stats = {"conv_module": {"norm": {"mean": state["layer.conv_module.norm.running_mean"],
                                    "var": state["layer.conv_module.norm.running_var"]}}}
  same_tree(params, jax.eval_shape(block.init, jax.random.key(0), x)["params"])
  got = np.asarray(jax.jit(lambda x, lengths: block.apply({"params": params, "batch_stats": stats}, x,
                                                          lengths=lengths))(x, lengths))
  full_row = np.abs(got[0] - want[0]).max()
  padded_row = np.abs(got[1, :short] - alone[0]).max()
  assert full_row < PARITY and padded_row < PARITY, (full_row, padded_row)
  # ESPnet's convolution module sees the padding: its padded row matches its own unpadded run only on the
  # frames that the depthwise kernel cannot reach from there.
  reach = (kernel - 1) // 2
  assert np.abs(want[1, :short] - alone[0]).max() > 1e-3
  assert np.abs(got[1, :short - reach] - want[1, :short - reach]).max() < PARITY


def test_espnet_transformer_decoder_layer_gives_the_decoder_block_outputs():
  torch, m = espnet()
  d, heads, units, steps, memory_frames = 64, 4, 96, 9, 13
  layer = m.DecoderLayer(d, m.MultiHeadedAttention(heads, d, 0.0), m.MultiHeadedAttention(heads, d, 0.0),
                            m.PositionwiseFeedForward(d, units, 0.0), 0.0, normalize_before=True,
                            concat_after=False)
  state = randomized(torch, layer, seed=3, prefix="layer.")
  x, memory = normal(4, 2, steps, d), normal(5, 2, memory_frames, d)
  lengths, memory_lengths = np.array([steps, 5]), np.array([memory_frames, 8])
  causal = torch.tril(torch.ones(steps, steps, dtype=torch.bool))
  token_mask = (torch.arange(steps)[None, None, :] < torch.as_tensor(lengths)[:, None, None]) & causal
  memory_mask = torch.arange(memory_frames)[None, None, :] < torch.as_tensor(memory_lengths)[:, None, None]
  with torch.no_grad():
    want = layer(torch.from_numpy(x), token_mask, torch.from_numpy(memory), memory_mask)[0].numpy()

  block = DecoderBlock(heads, units, attention_impl="xla")
  params = conformer.decoder_layer_params_from_espnet(state, "layer", num_heads=heads)
  init = lambda key: block.init(key, x, memory, memory_lengths, train=False)
  same_tree(params, jax.eval_shape(init, jax.random.key(0))["params"])
  got = np.asarray(jax.jit(lambda *inputs: block.apply({"params": params}, *inputs[:3], train=False,
                                                       lengths=inputs[3]))(x, memory, memory_lengths, lengths))
  difference = max(np.abs(got[0] - want[0]).max(), np.abs(got[1, :5] - want[1, :5]).max())
  assert difference < PARITY, difference


def test_an_espnet_conformer_checkpoint_imports_into_the_whole_model():
  torch, m = espnet()
  bins, d, heads, vocab = 20, 32, 4, 11
  encoder = m.Encoder(bins, attention_dim=d, attention_heads=heads, linear_units=64, num_blocks=2, dropout_rate=0.0,
                         positional_dropout_rate=0.0, input_layer="conv2d", macaron_style=True,
                         pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn",
                         activation_type="swish", use_cnn_module=True, cnn_module_kernel=15)
  decoder = m.Decoder(vocab, attention_dim=d, attention_heads=heads, linear_units=48, num_blocks=2,
                         dropout_rate=0.0, positional_dropout_rate=0.0)
  ctc = torch.nn.Linear(d, vocab)
  state = {**randomized(torch, encoder, 6, "encoder."), **randomized(torch, decoder, 7, "decoder."),
           **randomized(torch, ctc, 8, "ctc.ctc_lo.")}
  features = normal(9, 2, 70, bins)
  tokens = np.random.default_rng(10).integers(0, vocab, (2, 6))
  token_lengths = np.array([6, 4])
  with torch.no_grad():
    encoded, _ = encoder(torch.from_numpy(features), torch.ones(2, 1, 70, dtype=torch.bool))
    frames = encoded.shape[1]
    token_mask = (torch.arange(6)[None, None, :] < torch.as_tensor(token_lengths)[:, None, None]) & torch.tril(
        torch.ones(6, 6, dtype=torch.bool))
    logits, _ = decoder(torch.from_numpy(tokens), token_mask, encoded, torch.ones(2, 1, frames, dtype=torch.bool))
    ctc_logits = ctc(encoded)

  model = Conformer(vocab_size=vocab, num_mel_bins=bins, d_model=d, num_heads=heads, mlp_dim=64, encoder_layers=2,
                    conv_kernel=15, decoder_layers=2, decoder_mlp_dim=48, dropout_rate=0.0)
  variables = {"params": conformer.params_from_espnet(state, model, with_vocabulary=True),
               "batch_stats": conformer.batch_stats_from_espnet(state, model)}
  fresh = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 8000), np.float32), np.array([8000]),
                         tokens[:1], token_lengths[:1])
  same_tree(variables, fresh)
  assert "ctc_head" not in conformer.params_from_espnet(state, model)

  @jax.jit
  def run(features, tokens, token_lengths):
    lengths = jnp.full((2,), 70)
    encoded, encoded_lengths = model.apply(variables, features, lengths, method="encode_features")
    return (encoded, model.apply(variables, encoded, method="ctc_logits"),
            model.apply(variables, tokens, token_lengths, encoded, encoded_lengths, method="decode"))

  got_encoded, got_ctc, got_logits = (np.asarray(x) for x in run(features, tokens, token_lengths))
  assert got_encoded.shape == tuple(encoded.shape) == (2, 16, d)
  differences = {"encoder": np.abs(got_encoded - encoded.numpy()).max(),
                 "ctc": np.abs(got_ctc - ctc_logits.numpy()).max(),
                 "decoder": max(np.abs(got_logits[0] - logits[0].numpy()).max(),
                                np.abs(got_logits[1, :4] - logits[1, :4].numpy()).max())}
  assert max(differences.values()) < PARITY, differences


def lstm_transducer_decoder(width: int, vocab: int = 1024) -> int:
  """Parameters of the paper's single-LSTM decoder, as an estimate: a `width` embedding of the 1k word pieces,
  one LSTM layer of `width` units and a projection back onto the word pieces."""
  return vocab * width + 4 * width * (2 * width + 1) + (width + 1) * vocab


@pytest.mark.parametrize("size,d_model,heads,layers,decoder_width,paper", [
    ("S", 144, 4, 16, 320, 10.3e6), ("M", 256, 4, 16, 640, 30.7e6), ("L", 512, 8, 17, 640, 118.8e6)])
def test_paper_sizes_have_the_papers_parameter_counts(size, d_model, heads, layers, decoder_width, paper):
  """Gulati et al.'s counts (Table 1) cover the whole transducer, encoder and its single-LSTM decoder;
  ESPnet's attention decoder has no counterpart there.  So: afx's encoder (subsampling, blocks and final
  LayerNorm; kernel 32 as in the paper) plus an estimate of that LSTM decoder is within 10 % of the paper,
  and the encoder alone is what remains of the paper's count once the decoder is taken out (alone, the
  encoders are 8.69 / 27.27 / 114.86 M: 16 % and 11 % under S's and M's counts)."""
  model = Conformer(vocab_size=1024, d_model=d_model, num_heads=heads, mlp_dim=4 * d_model, encoder_layers=layers,
                    conv_kernel=32, decoder_layers=0)
  audio = jax.ShapeDtypeStruct((1, 16000), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), audio, jax.ShapeDtypeStruct((1,), jnp.int32),
                          jax.ShapeDtypeStruct((1, 4), jnp.int32), jax.ShapeDtypeStruct((1,), jnp.int32))["params"]
  assert sorted(shapes) == sorted(["ctc_head", "encoder_norm", "subsampling"] + [f"encoder_{i}" for i in range(layers)])
  encoder = parameter_count({k: v for k, v in shapes.items() if k != "ctc_head"})
  total = encoder + lstm_transducer_decoder(decoder_width)
  assert abs(total - paper) / paper < 0.10, (size, encoder, total)
  assert encoder < paper < encoder + 1.3 * lstm_transducer_decoder(decoder_width)


def random_variables(model, *inputs, seed: int = 0):
  """Variables of `model` for `inputs` drawn in NumPy from `jax.eval_shape`'s shapes (initialising the model under
  jit costs more compile time than the tests take), with BatchNorm statistics away from 0 and 1."""
  rng = np.random.default_rng(seed)

  def draw(path, shape):
    name, size = jax.tree_util.keystr(path[-1:]), shape.shape
    if "scale" in name or "var" in name:
      return 1.0 + 0.3 * np.abs(rng.standard_normal(size, np.float32))
    fan_in = int(np.prod(size[:-1])) if len(size) > 1 else 100
    return rng.standard_normal(size, np.float32) / np.sqrt(fan_in)

  return jax.tree_util.tree_map_with_path(draw, jax.eval_shape(model.init, jax.random.key(0), *inputs))


def small_model(**kwargs):
  options = dict(vocab_size=11, num_mel_bins=20, d_model=32, num_heads=2, mlp_dim=64, encoder_layers=2, conv_kernel=15,
                 decoder_layers=2, decoder_mlp_dim=48, spec_augment=False)
  return Conformer(**{**options, **kwargs})


def test_conformer_outputs_do_not_depend_on_padding():
  model = small_model(decoder_layers=1)
  rng = np.random.default_rng(11)
  audio = rng.normal(scale=0.1, size=(2, 8000)).astype(np.float32)
  tokens = rng.integers(1, 11, size=(2, 6)).astype(np.int32)
  lengths, token_lengths = jnp.asarray([8000, 5000]), jnp.asarray([6, 4])
  variables = random_variables(model, audio, lengths, tokens, token_lengths)
  apply = jax.jit(model.apply)
  out = apply(variables, audio, lengths, tokens, token_lengths)
  assert out["ctc_logits"].shape == (2, 11, 11) and list(np.asarray(out["encoder_lengths"])) == [11, 6]
  assert out["decoder_logits"].shape == (2, 6, 11)
  alone = apply(variables, audio[1:, :5000], lengths[1:], tokens[1:, :4], token_lengths[1:])
  np.testing.assert_allclose(np.asarray(alone["ctc_logits"][0]), np.asarray(out["ctc_logits"][1, :6]), atol=2e-4)
  np.testing.assert_allclose(np.asarray(alone["decoder_logits"][0]), np.asarray(out["decoder_logits"][1, :4]),
                             atol=2e-4)


def test_a_padded_frame_of_any_value_changes_no_valid_one():
  block = ConformerBlock(2, 64, 15)
  x = jnp.asarray(normal(12, 2, 20, 32))
  block_variables = random_variables(block, x)
  run = jax.jit(lambda x: block.apply(block_variables, x, lengths=jnp.asarray([20, 9])))
  np.testing.assert_array_equal(np.asarray(run(x))[1, :9], np.asarray(run(x.at[1, 9:].set(1e3)))[1, :9])


def test_batch_norm_statistics_in_training_count_only_valid_frames():
  module = ConvolutionModule(kernel_size=5)
  x = jnp.asarray(normal(13, 1, 12, 8))
  variables = module.init(jax.random.key(0), x)
  update = jax.jit(lambda x, lengths: module.apply(variables, x, lengths=lengths, train=True,
                                                   mutable=["batch_stats"]))
  out_alone, alone = update(x[:, :7], jnp.asarray([7]))
  out_padded, padded = update(x.at[:, 7:].set(50.0), jnp.asarray([7]))
  for got, want in zip(jax.tree.leaves(padded), jax.tree.leaves(alone)):
    np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(out_padded[:, :7], out_alone, atol=1e-5)


def test_an_even_kernel_sees_one_frame_more_after_each_frame_than_before_it():
  module = ConvolutionModule(kernel_size=4)
  x = jnp.zeros((1, 9, 2)).at[0, 4].set(1.0)  # an impulse at frame 4
  variables = random_variables(module, x)
  out = module.apply(variables, x)
  silent = module.apply(variables, jnp.zeros_like(x))
  reached = np.flatnonzero(np.abs(np.asarray(out - silent)[0]).max(axis=-1) > 1e-7)
  assert list(reached) == [2, 3, 4, 5]  # frame t sees t − 1 … t + 2 (TensorFlow's 'SAME')


def test_training_step_updates_batch_statistics_and_a_ctc_only_model_has_no_decoder():
  model = small_model(spec_augment=True, freq_width=4, decoder_layers=0)  # 27-bin bands would hide all 20 bins
  rng = np.random.default_rng(14)
  audio = rng.normal(scale=0.1, size=(2, 8000)).astype(np.float32)
  lengths, tokens = jnp.asarray([8000, 6000]), jnp.zeros((2, 3), jnp.int32)
  variables = random_variables(model, audio, lengths, tokens, jnp.asarray([3, 2]))
  assert not {"embed", "output", "decoder_norm"} & set(variables["params"])
  rngs = {"dropout": jax.random.key(1), "augment": jax.random.key(2)}
  out, updated = jax.jit(lambda v: model.apply(v, audio, lengths, tokens, jnp.asarray([3, 2]), train=True, rngs=rngs,
                                               mutable=["batch_stats"]))(variables)
  assert set(out) == {"ctc_logits", "encoder_lengths"} and np.all(np.isfinite(out["ctc_logits"]))
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), updated["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))
  with pytest.raises(ConfigError, match="no decoder"):
    model.apply(variables, tokens, jnp.asarray([3, 2]), out["ctc_logits"], out["encoder_lengths"], method="decode")


def test_relative_position_attention_on_a_blocked_implementation_names_those_that_take_its_bias():
  layer = RelativePositionAttention(2, attention_impl="blockwise")
  with pytest.raises(ConfigError, match="does not take a bias; use 'reference' or 'xla'"):
    layer.init(jax.random.key(0), jnp.zeros((1, 8, 16)))
  reference = RelativePositionAttention(2, attention_impl="reference")
  x = jnp.asarray(normal(15, 2, 8, 16))
  variables = reference.init(jax.random.key(0), x)
  lengths = jnp.asarray([8, 5])
  np.testing.assert_allclose(RelativePositionAttention(2).apply(variables, x, lengths=lengths),
                             reference.apply(variables, x, lengths=lengths), atol=1e-5)


@pytest.mark.parametrize("kernel_size", [31, 32])
def test_depthwise_convolution_and_its_gradients_match_a_grouped_convolution(kernel_size):
  x = jax.random.normal(jax.random.key(0), (2, 23, 6))
  layer = DepthwiseConv1D(kernel_size)
  reference = nn.Conv(6, (kernel_size,), padding="SAME", feature_group_count=6)
  params = layer.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, reference.init(jax.random.key(1), x))
  weights = jax.random.normal(jax.random.key(2), (2, 23, 6))
  loss = lambda module: lambda p, x: jnp.sum(module.apply(p, x) * weights)
  np.testing.assert_allclose(layer.apply(params, x), reference.apply(params, x), atol=1e-5)
  for got, want in zip(jax.grad(loss(layer), argnums=(0, 1))(params, x),
                       jax.grad(loss(reference), argnums=(0, 1))(params, x)):
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-4), got, want)
