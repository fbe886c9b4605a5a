"""ESPnet's RNN encoder-decoder (`afx.models.rnn_seq2seq`): shapes and lengths, padding invariance of both BLSTM
directions and of the decoder, location-attention weights, parity with ESPnet's torch RNNP / AttLoc / Decoder on
copied weights, and a few Adam steps that lower the joint CTC/attention loss."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from afx.decoding import ctc
from afx.errors import ConfigError
from afx.layers.speech import valid_mask
from afx.models.rnn_seq2seq import (BLSTMP, AttentionDecoder, LocationAttention, RnnSeq2Seq, params_from_espnet,
                                    subsample_factors)
from afx.tasks.asr import smoothed_cross_entropy

VOCAB, SOS_EOS = 9, 8  # blank 0, tokens 1..7, <sos/eos> last (as ESPnet and afx's tokenizers)
TINY = dict(vocab_size=VOCAB, num_mel_bins=20, encoder_layers=2, encoder_units=12, projection_units=12,
            subsample="1_2_2", att_dim=8, aconv_chans=3, aconv_filts=4, decoder_units=12, spec_augment=False)


@pytest.fixture(scope="module")
def tiny():
  """The tiny model, its parameters, a jitted apply and a batch of two padded utterances."""
  model = RnnSeq2Seq(**TINY)
  rng = np.random.default_rng(0)
  audio = rng.normal(scale=0.1, size=(2, 8000)).astype(np.float32)
  audio[1, 5000:] = 0.0
  lengths = jnp.asarray([8000, 5000])
  tokens = np.asarray([[1, 2, 3, 4, 5], [6, 7, 1, 0, 0]], np.int32)
  inputs = np.concatenate([np.full((2, 1), SOS_EOS, np.int32), tokens], axis=1)
  token_lengths = jnp.asarray([5, 3])
  variables = jax.jit(model.init)(jax.random.key(0), audio, lengths, inputs, token_lengths + 1)
  return model, variables, jax.jit(model.apply), (audio, lengths, tokens, token_lengths, inputs)


def test_subsample_factors_follow_espnet():
  assert subsample_factors("1_2_2_1_1", 4) == (1, 2, 2, 1, 1)
  assert subsample_factors("1_2_2_1_1", 2) == (1, 2, 2)
  assert subsample_factors("1_2", 3) == (1, 2, 1, 1)
  with pytest.raises(ConfigError, match="first"):
    subsample_factors("2_2", 2)


def test_outputs_lengths_and_padding_invariance(tiny):
  model, variables, apply, (audio, lengths, _, token_lengths, inputs) = tiny
  out = apply(variables, audio, lengths, inputs, token_lengths + 1)
  # 8000 / 5000 samples → 48 / 29 frames → ×2 after each of the 2 layers: (L + 1) // 2 twice.
  assert out["ctc_logits"].shape == (2, 12, VOCAB) and list(np.asarray(out["encoder_lengths"])) == [12, 8]
  assert out["decoder_logits"].shape == (2, 6, VOCAB) and model.bind(variables).subsampling_factor() == 4
  alone = apply(variables, audio[1:, :5000], lengths[1:], inputs[1:, :4], token_lengths[1:] + 1)
  np.testing.assert_allclose(np.asarray(alone["ctc_logits"][0]), np.asarray(out["ctc_logits"][1, :8]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(alone["decoder_logits"][0]), np.asarray(out["decoder_logits"][1, :4]),
                             atol=1e-5)


def test_blstmp_padding_never_reaches_valid_frames_in_either_direction():
  encoder = BLSTMP(2, 6, 5, (1, 2, 1))
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 11, 4)).astype(np.float32)
  lengths = jnp.asarray([11, 7])
  variables = jax.jit(encoder.init)(jax.random.key(1), x, lengths)
  apply = jax.jit(encoder.apply)
  garbage = x.copy()
  garbage[1, 7:] = 100.0 * rng.normal(size=(4, 4))
  padded, padded_lengths = apply(variables, garbage, lengths)
  alone, alone_lengths = apply(variables, np.concatenate([x[1:, :7], np.zeros((1, 4, 4), np.float32)], 1),
                               lengths[1:])
  assert list(np.asarray(padded_lengths)) == [6, 4] and int(alone_lengths[0]) == 4
  np.testing.assert_allclose(np.asarray(padded[1]), np.asarray(alone[0]), atol=1e-6)
  assert np.all(np.asarray(padded[1, 4:]) == 0)
  # The backward half reads the future: a change at the last valid frame moves the first output.
  moved = x.copy()
  moved[1, 6] += 1.0
  assert not np.allclose(np.asarray(apply(variables, moved, lengths)[0][1, 0]), np.asarray(padded[1, 0]))


def test_location_attention_weights_sum_to_one_over_valid_frames(tiny):
  model, variables, _, (audio, lengths, _, token_lengths, inputs) = tiny

  def attend(variables, audio, lengths, inputs):
    encoded, encoded_lengths = model.apply(variables, audio, lengths, method="encode")
    return model.apply(variables, inputs, None, encoded, encoded_lengths, return_attention=True,
                       method="decode") + (encoded_lengths,)

  empty = jnp.asarray([8000, 0])  # a batch's padding row: no frames at all
  logits, weights, encoded_lengths = jax.jit(attend)(variables, audio, empty, inputs)
  assert weights.shape == (2, 6, 12) and np.isfinite(np.asarray(logits)).all()
  np.testing.assert_allclose(np.asarray(weights[0]).sum(-1), 1.0, atol=1e-5)
  assert np.all(np.asarray(weights[1]) == 0)
  logits, weights, encoded_lengths = jax.jit(attend)(variables, audio, lengths, inputs)
  mask = np.asarray(valid_mask(encoded_lengths, 12))[:, None, :]
  np.testing.assert_allclose(np.where(mask, np.asarray(weights), 0.0).sum(-1), 1.0, atol=1e-5)
  assert np.all(np.asarray(weights)[np.broadcast_to(~mask, weights.shape)] == 0)


def test_matches_espnet_rnnp_attloc_and_decoder():
  torch = pytest.importorskip("torch", reason="the parity check runs ESPnet's torch modules", exc_type=ImportError)
  Decoder = pytest.importorskip("espnet.nets.pytorch_backend.rnn.decoders", reason="espnet does not import",
                                exc_type=ImportError).Decoder
  from espnet.nets.pytorch_backend.rnn.attentions import AttLoc
  from espnet.nets.pytorch_backend.rnn.encoders import RNNP
  torch.manual_seed(0)
  idim, eunits, eprojs, dunits, odim = 6, 8, 7, 10, VOCAB
  encoder = RNNP(idim, 3, eunits, eprojs, np.array([1, 2, 2, 1]), 0.0, typ="blstm").eval()
  attention = AttLoc(eprojs, dunits, 5, 3, 4)
  decoder = Decoder(eprojs, odim, "lstm", 2, dunits, SOS_EOS, SOS_EOS, torch.nn.ModuleList([attention])).eval()
  state = {f"enc.enc.0.{k}": v.numpy() for k, v in encoder.state_dict().items()}
  state.update({f"dec.{k}": v.numpy() for k, v in decoder.state_dict().items()})
  params = params_from_espnet(state)

  # RNNP: ESPnet packs sequences, so lengths go longest first.
  x = np.random.default_rng(2).normal(size=(2, 13, idim)).astype(np.float32)
  with torch.no_grad():
    expected, expected_lengths, _ = encoder(torch.from_numpy(x), torch.tensor([13, 9]))
  encoded, encoded_lengths = jax.jit(BLSTMP(3, eunits, eprojs, (1, 2, 2, 1)).apply)(
      {"params": params["encoder"]}, x, jnp.asarray([13, 9]))
  assert list(np.asarray(encoded_lengths)) == list(expected_lengths.numpy()) == [4, 3]
  mask = np.asarray(valid_mask(encoded_lengths, 4))
  encoder_error = np.abs(np.asarray(encoded)[mask] - expected.numpy()[mask]).max()
  assert encoder_error <= 1e-4

  # One AttLoc step from given previous weights.
  hs = np.where(mask[..., None], np.asarray(encoded), 0.0).astype(np.float32)
  z = np.random.default_rng(3).normal(size=(2, dunits)).astype(np.float32)
  previous = np.random.default_rng(4).uniform(size=(2, 4)).astype(np.float32) * mask
  previous /= previous.sum(-1, keepdims=True)
  attention.reset()
  with torch.no_grad():
    context_expected, weights_expected = attention(torch.from_numpy(hs), [4, 3], torch.from_numpy(z),
                                                   torch.from_numpy(previous))
  att_mlp_enc = params["decoder"]["att_mlp_enc"]
  keys = hs @ att_mlp_enc["kernel"] + att_mlp_enc["bias"]
  context, weights = jax.jit(LocationAttention(5, 3, 4).apply)({"params": params["decoder"]["step"]["att"]}, hs,
                                                               keys, mask, z, previous)
  attention_error = max(np.abs(np.asarray(context) - context_expected.numpy()).max(),
                        np.abs(np.asarray(weights) - weights_expected.numpy()).max())
  assert attention_error <= 1e-4

  # The whole teacher-forced Decoder (2 layers): its logits, caught on their way into the loss.
  ys = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 1, -1, -1]])
  caught = []
  decoder.output.register_forward_hook(lambda module, args, output: caught.append(output.detach().numpy()))
  with torch.no_grad():
    decoder(torch.from_numpy(hs), torch.tensor([4, 3]), ys)
  expected_logits = caught[0].reshape(2, 6, odim)
  inputs = np.asarray([[SOS_EOS, 1, 2, 3, 4, 5], [SOS_EOS, 6, 7, 1, 0, 0]], np.int32)
  logits, _ = jax.jit(AttentionDecoder(odim, 2, dunits, att_dim=5, conv_channels=3, conv_filts=4).apply)(
      {"params": params["decoder"]}, inputs, hs, jnp.asarray([4, 3]))
  valid = np.asarray(valid_mask(jnp.asarray([6, 4]), 6))
  decoder_error = np.abs(np.asarray(logits)[valid] - expected_logits[valid]).max()
  assert decoder_error <= 1e-4
  print(f"max |afx - ESPnet|: RNNP {encoder_error:.1e}, AttLoc {attention_error:.1e}, Decoder {decoder_error:.1e}")


def test_thirty_adam_steps_lower_the_joint_loss(tiny):
  model, variables, _, (audio, lengths, tokens, token_lengths, inputs) = tiny
  targets = np.concatenate([tokens, np.zeros((2, 1), np.int32)], axis=1)
  targets[np.arange(2), np.asarray(token_lengths)] = SOS_EOS
  decoder_mask = valid_mask(token_lengths + 1, targets.shape[1])

  def loss_fn(params):
    out = model.apply({"params": params}, audio, lengths, inputs, token_lengths + 1, train=True)
    ctc_losses, _ = ctc.ctc_loss(out["ctc_logits"], out["encoder_lengths"], tokens, token_lengths)
    attention = jax.vmap(lambda l, t, m: smoothed_cross_entropy(l, t, m, smoothing=0.1))(
        out["decoder_logits"], targets, decoder_mask)
    return 0.3 * jnp.mean(ctc_losses) + 0.7 * jnp.mean(attention)

  optimizer = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  start = time.perf_counter()
  params = variables["params"]
  opt_state = optimizer.init(params)
  losses = []
  for _ in range(30):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses
  assert time.perf_counter() - start < 60
