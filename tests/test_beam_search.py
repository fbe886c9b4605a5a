"""Beam search and CTC prefix scores against independent references: ESPnet's numpy `CTCPrefixScore`,
optax's CTC loss, and brute force over every short sequence; the key/value-cached decoders (`decode_step`) of the
Transformer decoder and of the RNN decoder against their teacher-forced `decode`, alone and in beam search."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from afx.decoding.beam_search import (LOGZERO, beam_search, ctc_extend, ctc_initial_state, ctc_prefix_scores,
                                      full_prefix_decoder, model_decoder)
from afx.models.conformer import Conformer
from afx.models.rnn_seq2seq import RnnSeq2Seq

VOCAB = 5  # 0 blank, 1..3 tokens, 4 <sos/eos>
EOS = VOCAB - 1
TOKENS = range(1, EOS)


def _log_probs(seed, frames, vocab=VOCAB, scale=2.0, batch=None):
  shape = (frames, vocab) if batch is None else (batch, frames, vocab)
  return np.asarray(jax.nn.log_softmax(scale * jax.random.normal(jax.random.PRNGKey(seed), shape), -1))


def _sequences(max_length):
  return [seq for n in range(max_length + 1) for seq in itertools.product(TOKENS, repeat=n)]


PREFIX = 3  # longest prefix scored in the tests


@functools.partial(jax.jit, static_argnames="eos")
def _prefix_scores(log_probs, lengths, prefix, candidates, *, eos):
  """Scores of `prefix + c` for one hypothesis per utterance, the state built one token at a time."""
  tokens = jnp.zeros(PREFIX, jnp.int32).at[:len(prefix)].set(jnp.asarray(prefix, jnp.int32))
  return _prefix_scores_padded(log_probs, lengths, tokens, len(prefix), candidates, eos=eos)


@functools.partial(jax.jit, static_argnames="eos")
def _prefix_scores_padded(log_probs, lengths, tokens, prefix_length, candidates, *, eos):
  batch = log_probs.shape[0]
  r = ctc_initial_state(log_probs, lengths)[:, :, None]
  last = jnp.full((batch, 1), -1)
  for n in range(PREFIX):
    token = jnp.full((batch, 1), tokens[n])
    r = jnp.where(n < prefix_length, ctc_extend(log_probs, lengths, r, last, jnp.full((batch, 1), n), token), r)
    last = jnp.where(n < prefix_length, token, last)
  cands = jnp.broadcast_to(candidates, (batch, 1, candidates.shape[0]))
  return ctc_prefix_scores(log_probs, lengths, r, last, jnp.full((batch, 1), prefix_length), cands, eos=eos)[:, 0]


@jax.jit
def _optax_log_probs(log_probs, logit_pad, labels, label_pad):
  return -optax.ctc_loss(log_probs, logit_pad, labels, label_pad, blank_id=0)


def _ctc_log_probs(log_probs, length, seqs, width=6):
  """log p(seq | x) for each of `seqs` from optax (the negative CTC loss), x cut to its length."""
  labels = np.zeros((len(seqs), width), np.int32)
  label_pad = np.ones((len(seqs), width), np.float32)
  for i, seq in enumerate(seqs):
    labels[i, :len(seq)] = seq
    label_pad[i, :len(seq)] = 0.0
  logit_pad = np.broadcast_to((np.arange(log_probs.shape[0]) >= length).astype(np.float32),
                              (len(seqs), log_probs.shape[0]))
  x = np.broadcast_to(log_probs, (len(seqs),) + log_probs.shape)
  return np.asarray(_optax_log_probs(x, logit_pad, labels, label_pad), np.float64)


def _ctc_log_prob(log_probs, length, seq):
  return float(_ctc_log_probs(log_probs, length, [seq])[0])


def test_ctc_prefix_scores_match_espnet():
  prefix_score = pytest.importorskip("espnet.nets.ctc_prefix_score", reason="espnet is not installed")
  vocab, frames = 6, 9
  x = _log_probs(0, frames, vocab)
  candidates = np.arange(1, vocab)  # every id but blank; the last is <sos/eos>
  for length in (frames, 6):
    padded = np.where(np.arange(frames)[:, None] < length, x, _log_probs(1, frames, vocab))
    for prefix in [(), (2,), (2, 2), (1, 3, 2)]:
      scorer = prefix_score.CTCPrefixScore(x[:length], 0, vocab - 1, np)
      r, y = scorer.initial_state(), [vocab - 1]
      for token in prefix:
        _, states = scorer(y, np.array([token]), r)
        r, y = states[0], y + [token]  # states: [labels, frames, 2]
      expected, _ = scorer(y, candidates, r)
      got = _prefix_scores(jnp.asarray(padded)[None], jnp.array([length]), prefix, jnp.asarray(candidates),
                           eos=vocab - 1)[0]
      possible = expected > LOGZERO / 2
      np.testing.assert_allclose(np.asarray(got)[possible], expected[possible], rtol=1e-5, atol=1e-4)
      assert np.all(np.asarray(got)[~possible] < LOGZERO / 2)


def test_ctc_whole_sequence_score_is_ctc_likelihood():
  frames = 8
  x = _log_probs(2, frames, batch=2)
  lengths = np.array([frames, 5])
  for seq in [(), (1,), (3, 3), (1, 2, 1)]:
    got = _prefix_scores(jnp.asarray(x), jnp.asarray(lengths), seq, jnp.array([EOS]), eos=EOS)[:, 0]
    for row in range(2):
      np.testing.assert_allclose(float(got[row]), _ctc_log_prob(x[row], lengths[row], seq), rtol=1e-5, atol=1e-4)


BIGRAM = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (VOCAB, VOCAB)))
BIGRAM_LOGP = np.asarray(jax.nn.log_softmax(BIGRAM, axis=-1))


def _bigram_decode(tokens, token_lengths, encoded, encoded_lengths):
  del token_lengths, encoded, encoded_lengths
  return jnp.asarray(BIGRAM)[tokens]


def _bigram_score(seq, penalty):
  previous = (EOS,) + tuple(seq)
  return sum(BIGRAM_LOGP[a, b] for a, b in zip(previous, tuple(seq) + (EOS,))) + penalty * (len(seq) + 1)


@functools.partial(jax.jit, static_argnames=("decode_fn", "beam", "max_length", "ctc_weight", "length_penalty",
                                             "pre_beam", "early_stop"))
def _search(encoded, encoded_lengths, ctc_log_probs, **kwargs):
  decode_fn = kwargs.pop("decode_fn", None)
  decoder = None if decode_fn is None else full_prefix_decoder(decode_fn)
  return beam_search(decoder, encoded, encoded_lengths, ctc_log_probs, sos_eos=EOS, **kwargs)


def _hypotheses(tokens, lengths, scores):
  return [(tuple(int(t) for t in tokens[i, :lengths[i]]), float(scores[i])) for i in range(len(scores))
          if np.isfinite(scores[i])]


@pytest.mark.parametrize("penalty", [0.0, 0.7])
def test_attention_only_beam_search_is_exhaustive_for_a_wide_beam(penalty):
  max_length = 4
  encoded, lengths = jnp.zeros((1, 3, 2)), jnp.array([3])
  expected = sorted(((seq, _bigram_score(seq, penalty)) for seq in _sequences(max_length)), key=lambda h: -h[1])
  tokens, out_lengths, scores = _search(encoded, lengths, None, decode_fn=_bigram_decode, beam=128,
                                        max_length=max_length, ctc_weight=0.0, length_penalty=penalty,
                                        early_stop=False)
  got = _hypotheses(np.asarray(tokens[0]), np.asarray(out_lengths[0]), np.asarray(scores[0]))
  # Sequences that use the same bigrams tie, so compare the scores in order and each sequence's score.
  assert sorted(seq for seq, _ in got) == sorted(seq for seq, _ in expected)
  np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5, atol=1e-5)
  reference = dict(expected)
  np.testing.assert_allclose([s for _, s in got], [reference[seq] for seq, _ in got], rtol=1e-5, atol=1e-5)
  # Stopping early keeps the best.
  tokens, out_lengths, scores = _search(encoded, lengths, None, decode_fn=_bigram_decode, beam=128,
                                        max_length=max_length, ctc_weight=0.0, length_penalty=penalty)
  assert _hypotheses(np.asarray(tokens[0]), np.asarray(out_lengths[0]), np.asarray(scores[0]))[0][0] == expected[0][0]


def test_attention_only_beam_one_is_greedy():
  max_length = 6
  seq, previous = [], EOS
  while len(seq) < max_length:
    token = int(np.argmax(np.where(np.arange(VOCAB) == 0, -np.inf, BIGRAM_LOGP[previous])))
    if token == EOS:
      break
    seq.append(token)
    previous = token
  tokens, lengths, scores = _search(jnp.zeros((1, 3, 2)), jnp.array([3]), None, decode_fn=_bigram_decode, beam=1,
                                    max_length=max_length, ctc_weight=0.0)
  assert _hypotheses(np.asarray(tokens[0]), np.asarray(lengths[0]), np.asarray(scores[0]))[0][0] == tuple(seq)
  np.testing.assert_allclose(float(scores[0, 0]), _bigram_score(seq, 0.0), rtol=1e-5)


def test_ctc_only_beam_search_finds_the_most_likely_sequence():
  frames, max_length = 7, 3
  x = _log_probs(4, frames, scale=3.0)
  seqs = _sequences(max_length)
  expected = sorted(zip(seqs, _ctc_log_probs(x, frames, seqs)), key=lambda h: -h[1])
  tokens, lengths, scores = _search(None, jnp.array([frames]), jnp.asarray(x)[None], beam=4,
                                    max_length=max_length, ctc_weight=1.0)
  got = _hypotheses(np.asarray(tokens[0]), np.asarray(lengths[0]), np.asarray(scores[0]))
  assert got[0][0] == expected[0][0]
  np.testing.assert_allclose(got[0][1], expected[0][1], rtol=1e-5, atol=1e-4)
  # A beam that holds every sequence returns all of them, each scored by its CTC probability.
  tokens, lengths, scores = _search(None, jnp.array([frames]), jnp.asarray(x)[None], beam=len(seqs),
                                    max_length=max_length, ctc_weight=1.0, early_stop=False)
  got = _hypotheses(np.asarray(tokens[0]), np.asarray(lengths[0]), np.asarray(scores[0]))
  reference = dict(expected)
  assert sorted(seq for seq, _ in got) == sorted(seqs)
  np.testing.assert_allclose([s for _, s in got], [reference[seq] for seq, _ in got], rtol=1e-5, atol=1e-4)


def _encoded_decode(tokens, token_lengths, encoded, encoded_lengths):
  """Bigram logits shifted by the mean of the valid encoded frames: the result depends on the padding
  only if the lengths are ignored."""
  del token_lengths
  valid = (jnp.arange(encoded.shape[1])[None, :] < encoded_lengths[:, None])[..., None]
  mean = jnp.sum(jnp.where(valid, encoded, 0.0), axis=1) / encoded_lengths[:, None]
  return jnp.asarray(BIGRAM)[tokens] + 2.0 * mean[:, None, :]


@pytest.mark.parametrize("early_stop", [False, True])
def test_batched_search_is_padding_invariant_and_sorted(early_stop):
  frames, lengths = 10, np.array([10, 7, 4])
  rng = np.random.default_rng(5)
  encoded = rng.normal(size=(3, frames, VOCAB)).astype(np.float32)
  x = _log_probs(6, frames, scale=3.0, batch=3)
  # beam 3: a pre-beam of 4 of the 5 ids.
  kwargs = dict(decode_fn=_encoded_decode, beam=3, max_length=5, ctc_weight=0.3, length_penalty=0.5,
                early_stop=early_stop)
  tokens, out_lengths, scores = (np.asarray(a) for a in _search(jnp.asarray(encoded), jnp.asarray(lengths),
                                                                jnp.asarray(x), **kwargs))
  for row, length in enumerate(lengths):
    alone = [np.asarray(a)[0] for a in _search(jnp.asarray(encoded[row:row + 1, :length]), jnp.array([length]),
                                               jnp.asarray(x[row:row + 1, :length]), **kwargs)]
    np.testing.assert_array_equal(tokens[row], alone[0])
    np.testing.assert_array_equal(out_lengths[row], alone[1])
    np.testing.assert_allclose(scores[row], alone[2], rtol=1e-5, atol=1e-5)
  # Sorted, lengths without <sos/eos>, nothing after a hypothesis's end, and every score that of the
  # finished sequence itself: nothing was added to a finished hypothesis (the penalty would show it).
  assert np.all(scores[:, :-1] >= scores[:, 1:])
  assert np.all((tokens > 0) == (np.arange(5)[None, None] < out_lengths[..., None]))
  assert not np.any(tokens == EOS)
  for row, length in enumerate(lengths):
    mean = encoded[row, :length].mean(axis=0)
    logp = np.asarray(jax.nn.log_softmax(BIGRAM + 2.0 * mean[None], axis=-1))
    hypotheses = _hypotheses(tokens[row], out_lengths[row], scores[row])
    ctc_scores = _ctc_log_probs(x[row], length, [seq for seq, _ in hypotheses])
    for (seq, score), ctc_score in zip(hypotheses, ctc_scores):
      attention = sum(logp[a, b] for a, b in zip((EOS,) + seq, seq + (EOS,)))
      expected = 0.7 * attention + 0.3 * ctc_score + 0.5 * (len(seq) + 1)
      np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-3)


# Small random decoders (vocab 8: blank 0, <sos/eos> 7) over random memories: `decode` alone is initialised.
MODEL_VOCAB = 8
DECODERS = {
    "transformer": (Conformer(vocab_size=MODEL_VOCAB, d_model=16, num_heads=2, mlp_dim=32, encoder_layers=1,
                              decoder_layers=2, decoder_mlp_dim=32, dropout_rate=0.0), 16),
    "rnn": (RnnSeq2Seq(vocab_size=MODEL_VOCAB, encoder_layers=1, projection_units=12, att_dim=8, aconv_chans=3,
                       aconv_filts=2, decoder_layers=2, decoder_units=12), 12),
}


@functools.lru_cache(maxsize=None)
def _decoder_setup(name, frames=9):
  """A decoder with random parameters (drawn on the host: no compiled init), a memory `[3, frames, width]` valid
  up to [9, 6, 3] frames and tokens `[3, 6]`."""
  model, width = DECODERS[name]
  rng = np.random.default_rng(0)
  memory = jnp.asarray(rng.normal(size=(3, frames, width)), jnp.float32)
  memory_lengths = jnp.asarray([frames, 6, 3])
  tokens = jnp.asarray(rng.integers(1, MODEL_VOCAB, size=(3, 6)), jnp.int32)
  shapes = jax.eval_shape(functools.partial(model.init, method="decode"), jax.random.key(0), tokens, jnp.full(3, 6),
                          memory, memory_lengths)

  def draw(path, leaf):
    if jax.tree_util.keystr(path[-1:]) == "['scale']":
      return jnp.asarray(1.0 + 0.3 * rng.standard_normal(leaf.shape), jnp.float32)
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 4
    return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), jnp.float32)

  return model, jax.tree_util.tree_map_with_path(draw, shapes), memory, memory_lengths, tokens


@functools.partial(jax.jit, static_argnames="model")
def _teacher_forced_both_ways(model, variables, tokens, memory, memory_lengths):
  full = model.apply(variables, tokens, jnp.full(tokens.shape[:1], tokens.shape[1]), memory, memory_lengths,
                     method="decode")
  cache, context = model.apply(variables, memory, memory_lengths, tokens.shape[1], method="init_decode_cache")

  def position(cache, inputs):
    token, step = inputs
    logits, cache = model.apply(variables, token, cache, context, step, method="decode_step")
    return cache, logits

  _, stepped = jax.lax.scan(position, cache, (tokens.T, jnp.arange(tokens.shape[1])))
  return full, jnp.moveaxis(stepped, 0, 1)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decode_step_gives_decode_logits_at_every_position(name):
  model, variables, memory, memory_lengths, tokens = _decoder_setup(name)
  full, stepped = _teacher_forced_both_ways(model, variables, tokens, memory, memory_lengths)
  assert stepped.shape == full.shape == (3, 6, MODEL_VOCAB)
  np.testing.assert_allclose(np.asarray(stepped), np.asarray(full), rtol=1e-5, atol=1e-5)


MODEL_SEARCH = dict(beam=3, max_length=6, sos_eos=MODEL_VOCAB - 1, ctc_weight=0.3, length_penalty=0.5, early_stop=False)


@functools.partial(jax.jit, static_argnames=("model", "cached"))
def _model_search(model, variables, memory, memory_lengths, ctc_log_probs, *, cached):
  decode = lambda *args: model.apply(variables, *args, method="decode")
  decoder = model_decoder(model, variables) if cached else full_prefix_decoder(decode)
  return beam_search(decoder, memory, memory_lengths, ctc_log_probs, **MODEL_SEARCH)


@functools.partial(jax.jit, static_argnames="model")
def _decode_log_probs(model, variables, *args):
  return jax.nn.log_softmax(model.apply(variables, *args, method="decode"), axis=-1)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_cached_beam_search_gives_the_full_prefix_results(name):
  model, variables, memory, memory_lengths, _ = _decoder_setup(name)
  x = _log_probs(7, memory.shape[1], MODEL_VOCAB, batch=3)
  cached, reference = ([np.asarray(a) for a in _model_search(model, variables, memory, memory_lengths, jnp.asarray(x),
                                                             cached=cached)] for cached in (True, False))
  tokens, lengths, scores = cached
  np.testing.assert_array_equal(tokens, reference[0])
  np.testing.assert_array_equal(lengths, reference[1])
  np.testing.assert_allclose(scores, reference[2], rtol=1e-5, atol=1e-5)
  # Independently of the search's loop (the two share its reordering of the cache): each hypothesis scores as
  # its sequence does under the teacher-forced decoder and optax's CTC.
  eos, beam, max_length = MODEL_SEARCH["sos_eos"], MODEL_SEARCH["beam"], MODEL_SEARCH["max_length"]
  assert np.all(np.isfinite(scores)) and len({tuple(row) for row in tokens.reshape(-1, max_length)}) > beam
  inputs = np.concatenate([np.full((3 * beam, 1), eos), tokens.reshape(3 * beam, -1)], axis=1)
  logp = np.asarray(_decode_log_probs(model, variables, jnp.asarray(inputs), jnp.asarray(lengths.reshape(-1) + 1),
                                      jnp.repeat(memory, beam, 0), jnp.repeat(memory_lengths, beam)))
  for row in range(3):
    hypotheses = _hypotheses(tokens[row], lengths[row], scores[row])
    ctc_scores = _ctc_log_probs(x[row], int(memory_lengths[row]), [seq for seq, _ in hypotheses])
    for k, ((seq, score), ctc_score) in enumerate(zip(hypotheses, ctc_scores)):
      if ctc_score < -1e3:  # longer than CTC can emit in this utterance's frames: ESPnet's LOGZERO
        assert score < LOGZERO / 10
        continue
      attention = sum(logp[row * beam + k, i, target] for i, target in enumerate(seq + (eos,)))
      expected = 0.7 * attention + 0.3 * ctc_score + MODEL_SEARCH["length_penalty"] * (len(seq) + 1)
      np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-4)
