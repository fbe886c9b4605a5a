"""Joint CTC/attention beam search on the device (Watanabe et al. 2017; ESPnet's `BatchBeamSearch`), several
utterances at once, the whole search one `lax.while_loop` with static shapes.

Hypotheses live in `[batch, beam, max_length]` token buffers (`<sos/eos>` not stored; 0 after each
hypothesis's length) beside their scores, a finished flag and the CTC forward variables of their prefix.
One step, for every utterance at once:

  1. attention: the decoder (a `StepDecoder`) reads each hypothesis's last token (`<sos/eos>` at step 0) from
     its cache of the prefix, and the log-softmax of its logits scores every next token;
  2. pre-beam: the `pre_beam` best tokens by that score (ESPnet's `pre_beam_ratio` 1.5 × beam, key
     "full") are the only candidates handed to CTC; blank (id 0, also the padding) is never a candidate;
  3. CTC: `ctc_prefix_scores` gives each candidate's prefix log-probability (ESPnet's `CTCPrefixScoreTH`,
     `<sos/eos>` scored as the probability of the whole prefix), and the step adds its change;
  4. joint score `(1 − ctc_weight)·attention + ctc_weight·ΔCTC + length_penalty`, and the best `beam` of
     beam × pre_beam candidates survive (`top_k`: hypothesis = index // pre_beam, token = index % pre_beam).

ESPnet counterparts and differences:
  * a finished hypothesis (its last token `<sos/eos>`) stays in its beam slot with its score frozen and
    competes with the running ones for the `beam` slots (one candidate per step: itself); ESPnet's batched
    search moves it to a separate `ended_hyps` list instead, so its running beam never loses slots;
  * `length_penalty` is ESPnet's `penalty` (its `LengthBonus` scorer): added at every step, the step that
    emits `<sos/eos>` included, so a hypothesis of n tokens gets (n + 1) · penalty;
  * at `max_length` tokens the only candidate is `<sos/eos>`, scored like any other (ESPnet appends it at
    `maxlen` without a score), so every hypothesis returned is a complete, scored sequence;
  * ctc_weight 1 scores every token by CTC alone (no decoder, no pre-beam, as ESPnet with
    `pre_beam_score_key=None`); ctc_weight 0 skips CTC;
  * stopping (`early_stop=True`, the default): an utterance is frozen once no running hypothesis can beat
    its best finished one (every attention and CTC increment is ≤ 0, so a running score can rise only by
    the positive part of the length penalty on its remaining steps), or once all its hypotheses are
    finished; the loop ends when every utterance is frozen or after the `<sos/eos>`-only step at
    max_length.  Running hypotheses left at an early stop are returned with score −inf.  With
    `early_stop=False` an utterance stops only when all its hypotheses are finished, and the whole n-best
    list is exact for a beam that holds every sequence.  ESPnet ends on `end_detect` (no better ended
    hypothesis for several lengths) or `maxlen`.

The decoder runs one token per hypothesis per step: every running hypothesis at step i has i tokens, so all
are at the same position (a finished one's attention scores are computed and ignored).  Its cache, one row
per hypothesis, is reordered with the surviving hypotheses, as the token buffers are; `full_prefix_decoder`
adapts a teacher-forced decoder with no cache (it re-reads the whole prefix, O(L) per step).

The first step starts from one hypothesis per utterance, the other slots at −inf, so that the beam is not
filled with copies of the empty prefix; when fewer than `beam` sequences exist the −inf slots stay in the
output (length 0, tokens 0) after the real ones.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

LOGZERO = -1e10  # ESPnet's logzero: finite, so that differences of impossible prefixes' scores are not NaN
NEG_INF = -jnp.inf


def ctc_initial_state(log_probs, lengths, *, blank: int = 0):
  """CTC forward variables of the empty prefix, `[frames, batch, 2]` (non-blank, blank), from
  `log_probs [batch, frames, vocab]`: all blanks up to each frame, frozen past each utterance's length."""
  frames = log_probs.shape[1]
  valid = jnp.arange(frames)[:, None] < jnp.asarray(lengths)[None, :]
  blanks = jnp.cumsum(jnp.where(valid, jnp.moveaxis(log_probs[..., blank], 1, 0), 0.0), axis=0)
  return jnp.stack([jnp.full_like(blanks, LOGZERO), blanks], axis=-1)


def _ctc_extension_terms(log_probs, lengths, r_prev, last, prefix_lengths, candidates, *, blank: int):
  """What both the prefix scores and the forward variables of g + c read, each `[frames, batch, hyps, cands]`:
  x_t(c), x_t(blank), phi_{t−1} (the probability of g ending by frame t − 1 and able to take c next; a repeat
  of g's last label needs a blank between them; phi_{−1} = [g empty]) and the valid frames."""
  batch, frames, _ = log_probs.shape
  x = jnp.moveaxis(log_probs.astype(jnp.float32), 1, 0)  # [frames, batch, vocab]
  x_cand = x[:, jnp.arange(batch)[:, None, None], candidates]
  x_blank = jnp.broadcast_to(x[:, :, blank][:, :, None, None], x_cand.shape)
  r_sum = jnp.logaddexp(r_prev[..., 0], r_prev[..., 1])  # [frames, batch, hyps]
  phi = jnp.where(candidates[None] == last[None, :, :, None], r_prev[..., 1][..., None], r_sum[..., None])
  phi_start = jnp.broadcast_to(jnp.where(prefix_lengths == 0, 0.0, LOGZERO)[..., None], candidates.shape)
  phi_before = jnp.concatenate([phi_start[None], phi[:-1]], axis=0)
  valid = jnp.broadcast_to((jnp.arange(frames)[:, None] < jnp.asarray(lengths)[None, :])[:, :, None, None],
                           x_cand.shape)
  return x_cand, x_blank, phi_before, valid


def ctc_prefix_scores(log_probs, lengths, r_prev, last, prefix_lengths, candidates, *, eos: int,
                      blank: int = 0):
  """Prefix log-probabilities of every hypothesis extended by each of its candidate tokens.

  Args:
    log_probs: `[batch, frames, vocab]` CTC log-posteriors; lengths `[batch]` valid frames (≥ 1).
    r_prev: `[frames, batch, hyps, 2]` forward variables r_t^n, r_t^b of each hypothesis's prefix g
      (`ctc_initial_state` broadcast over hyps for the empty prefix, then `ctc_extend`'s).
    last: `[batch, hyps]` the last token of g (any id not in the vocabulary, e.g. −1, when g is empty);
      prefix_lengths `[batch, hyps]` its length (no `<sos/eos>`).
    candidates: `[batch, hyps, cands]` the next tokens to score.
  Returns:
    `psi [batch, hyps, cands]`: log p(g + c as a prefix | x); for c = `eos` log p(g | x) (the whole
    sequence); for c = blank LOGZERO.

  ESPnet's `CTCPrefixScore(TH)` (Watanabe et al. 2017, Algorithm 2): psi = Σ_t phi_{t−1} x_t(c) over the valid
  frames, a plain log-sum over frames (no recursion: the forward variables of g + c are needed only for the
  hypotheses that survive, `ctc_extend`).  ESPnet starts at frame max(|g|, 1), which only skips frames where
  g + c has probability 0.
  """
  x_cand, _, phi_before, valid = _ctc_extension_terms(log_probs, lengths, r_prev, last, prefix_lengths, candidates,
                                                      blank=blank)
  psi = jnp.logaddexp(LOGZERO, jax.nn.logsumexp(jnp.where(valid, phi_before + x_cand, -jnp.inf), axis=0))
  whole = jax.nn.logsumexp(r_prev[jnp.asarray(lengths) - 1, jnp.arange(log_probs.shape[0])], axis=-1)
  psi = jnp.where(candidates == eos, whole[..., None], psi)  # whole [batch, hyps]: log p(g | x)
  return jnp.where(candidates == blank, LOGZERO, psi)


def ctc_extend(log_probs, lengths, r_prev, last, prefix_lengths, tokens, *, blank: int = 0):
  """The CTC forward variables of each hypothesis's prefix g (as in `ctc_prefix_scores`) extended by its
  `tokens [batch, hyps]`: `[frames, batch, hyps, 2]` (r_t^n, r_t^b of g + c), the next step's `r_prev`.

  r^n_t = log(e^{r^n_{t−1}} + e^{phi_{t−1}}) + x_t(c) and
  r^b_t = log(e^{r^b_{t−1}} + e^{r^n_{t−1}}) + x_t(blank) from r_{−1} = LOGZERO, each solved by `_log_linear_recurrence` in log(frames) parallel steps rather than a
  sequential step per frame.  Past an utterance's length the state is carried unchanged (ESPnet pads with
  blank probability 1, which leaves r^n + r^b unchanged too)."""
  x_token, x_blank, phi_before, valid = (term[..., 0] for term in _ctc_extension_terms(
      log_probs, lengths, r_prev, last, prefix_lengths, tokens[..., None], blank=blank))
  start = jnp.full(tokens.shape, LOGZERO, jnp.float32)
  r_n = _log_linear_recurrence(start, x_token, phi_before + x_token, valid)
  r_n_before = jnp.concatenate([start[None], r_n[:-1]], axis=0)
  r_b = _log_linear_recurrence(start, x_blank, r_n_before + x_blank, valid)
  return jnp.stack([r_n, r_b], axis=-1)


def _log_linear_recurrence(initial, a, b, valid):
  """`r_t = log(exp(r_{t−1} + a_t) + exp(b_t))` along axis 0 from r_{−1} = `initial`, r_t = r_{t−1} where
  not `valid`: every r_t, by an associative scan over the steps' compositions (applying (a1, b1), then
  (a2, b2), is (a1 + a2, log(e^{b1 + a2} + e^{b2}))), all sums of log-probabilities, nothing subtracted.
  (A frame's sequential step on a few thousand values is all loop overhead on a CPU.)"""
  a = jnp.where(valid, a, 0.0)
  b = jnp.where(valid, b, -jnp.inf)

  def compose(first, second):
    (a1, b1), (a2, b2) = first, second
    return a1 + a2, jnp.logaddexp(b1 + a2, b2)

  a_prefix, b_prefix = jax.lax.associative_scan(compose, (a, b), axis=0)
  return jnp.logaddexp(initial[None] + a_prefix, b_prefix)


class StepDecoder(NamedTuple):
  """An attention decoder run one token per hypothesis at a time, over n = batch × beam hypotheses.

  init: `(memory [batch, ...], memory_lengths [batch], slots, hypotheses) -> (cache, context)`: the state
    before any token, for positions 0..slots − 1 and `hypotheses` per utterance.  cache: a pytree of
    `[n, ...]` arrays, n = batch × hypotheses, one row per hypothesis (an utterance's consecutive), reordered
    with the hypotheses; context: anything the steps only read (e.g. each memory's cross-attention keys and
    values, once per utterance).
  step: `(token [n], cache, context, position) -> (logits [n, vocab], cache)`: the next-token logits after
    the prefix in cache followed by `token` at `position` (int32 scalar, traced; `<sos/eos>` at 0).
  """
  init: Callable
  step: Callable


def full_prefix_decoder(decode_fn) -> StepDecoder:
  """A `StepDecoder` for a teacher-forced `decode_fn(tokens [n, L], token_lengths [n], memory, memory_lengths)
  -> logits [n, L, vocab]` (`<sos/eos>` first): its cache is the token history `[n, slots]`, and each step
  runs the decoder over the whole prefix."""

  def init(memory, memory_lengths, slots, hypotheses):
    rows = memory_lengths.shape[0] * hypotheses
    context = (jnp.repeat(memory, hypotheses, axis=0), jnp.repeat(memory_lengths, hypotheses, axis=0))
    return jnp.zeros((rows, slots), jnp.int32), context

  def step(token, history, context, position):
    history = jax.lax.dynamic_update_slice_in_dim(history, token[:, None].astype(jnp.int32), position, axis=1)
    logits = decode_fn(history, jnp.full(token.shape, position + 1, jnp.int32), *context)
    return jax.lax.dynamic_index_in_dim(logits, position, axis=1, keepdims=False), history

  return StepDecoder(init, step)


def model_decoder(model, variables) -> StepDecoder:
  """The attention decoder of a flax `model` bound to `variables`: its key/value-cached `init_decode_cache`
  and `decode_step` (`afx.models.speech_recognizer`, `afx.models.rnn_seq2seq`), or, for a model with only a
  teacher-forced `decode(tokens, token_lengths, memory, memory_lengths)`, that one over the whole prefix."""
  if not hasattr(model, "decode_step"):
    return full_prefix_decoder(lambda *args: model.apply(variables, *args, method="decode"))
  return StepDecoder(lambda *args: model.apply(variables, *args, method="init_decode_cache"),
                     lambda *args: model.apply(variables, *args, method="decode_step"))


def _gather(values, batch_index, hyp_index):
  """`values [batch, hyps, ...]` at `[batch_index, hyp_index]`."""
  return values[batch_index, hyp_index]


def beam_search(decoder, encoded, encoded_lengths, ctc_log_probs, *, beam: int, max_length: int,
                sos_eos: int, ctc_weight: float, length_penalty: float = 0.0, pre_beam: int | None = None,
                early_stop: bool = True, blank: int = 0):
  """Joint CTC/attention beam search (see the module docstring); call it under `jax.jit`.

  Args:
    decoder: a `StepDecoder` (`model_decoder`, or `full_prefix_decoder` of a teacher-forced decoder);
      unused, and may be None, when ctc_weight is 1.
    encoded, encoded_lengths: `[batch, frames, ...]`, `[batch]` the memory the decoder reads (its `init`
      gets them with hypotheses=beam).
    ctc_log_probs: `[batch, frames, vocab]` CTC log-posteriors (log-softmax applied again, harmlessly);
      unused, and may be None, when ctc_weight is 0 (then encoded_lengths is not needed by CTC).
  Returns:
    `tokens [batch, beam, max_length]` (no `<sos/eos>`, 0-padded), `lengths [batch, beam]`,
    `scores [batch, beam]`, best first.
  """
  if not 0.0 <= ctc_weight <= 1.0:
    raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
  use_attention, use_ctc = ctc_weight < 1.0, ctc_weight > 0.0
  if use_attention and decoder is None:
    raise ValueError("a decoder is needed unless ctc_weight is 1")
  batch = encoded.shape[0] if encoded is not None else ctc_log_probs.shape[0]
  vocab = ctc_log_probs.shape[-1] if use_ctc else None
  lengths_in = jnp.asarray(encoded_lengths, jnp.int32)
  if use_ctc:
    ctc_log_probs = jax.nn.log_softmax(ctc_log_probs.astype(jnp.float32), axis=-1)
  # Without both scorers there is nothing to pre-select by: every token is a candidate.
  if use_attention and use_ctc:
    cands = pre_beam if pre_beam is not None else int(1.5 * beam)
  else:
    cands = None
  positions = jnp.arange(max_length)
  b_index = jnp.arange(batch)[:, None]

  if use_attention:
    # Positions 0..max_length: <sos/eos>, then up to max_length tokens (the last step scores only <sos/eos>).
    cache, context = decoder.init(encoded, lengths_in, max_length + 1, beam)

  def step(state):
    i = state["step"]
    tokens, lengths, finished, scores = state["tokens"], state["lengths"], state["finished"], state["scores"]
    last_step = i >= max_length
    if use_attention:
      logits, cache = decoder.step(state["last"].reshape(-1), state["cache"], context, i)
      attention = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, beam, -1)
      vocab_size = attention.shape[-1]
    else:
      vocab_size = vocab
    ids = jnp.arange(vocab_size)
    if cands is not None and cands < vocab_size:
      # Blank is never chosen; at max_length <sos/eos> must be among the candidates.
      select = jnp.where(ids == blank, NEG_INF, attention)
      select = jnp.where(last_step & (ids == sos_eos), jnp.inf, select)
      _, candidates = jax.lax.top_k(select, cands)
    else:
      candidates = jnp.broadcast_to(ids, (batch, beam, vocab_size))
    joint = jnp.zeros(candidates.shape, jnp.float32) + length_penalty
    if use_attention:
      joint += (1.0 - ctc_weight) * jnp.take_along_axis(attention, candidates, axis=-1)
    if use_ctc:
      last = jnp.where(lengths > 0, jnp.take_along_axis(tokens, jnp.maximum(lengths - 1, 0)[..., None],
                                                        axis=-1)[..., 0], -1)
      psi = ctc_prefix_scores(ctc_log_probs, lengths_in, state["ctc_r"], last, lengths, candidates, eos=sos_eos,
                              blank=blank)
      joint += ctc_weight * (psi - state["ctc_psi"][..., None])
    joint = jnp.where((candidates == blank) | (last_step & (candidates != sos_eos)), NEG_INF, joint)
    total = scores[..., None] + joint
    slot = jnp.arange(candidates.shape[-1])
    # A finished hypothesis has one candidate, itself, with its score unchanged.
    total = jnp.where(finished[..., None], jnp.where(slot == 0, scores[..., None], NEG_INF), total)
    width = candidates.shape[-1]
    new_scores, flat = jax.lax.top_k(total.reshape(batch, beam * width), beam)
    hyp, choice = flat // width, flat % width
    token = candidates[b_index, hyp, choice]
    was_finished = _gather(finished, b_index, hyp)
    extends = ~was_finished & (token != sos_eos)
    old_lengths = _gather(lengths, b_index, hyp)
    new_tokens = jnp.where((positions == old_lengths[..., None]) & extends[..., None], token[..., None],
                           _gather(tokens, b_index, hyp))
    new = {"tokens": new_tokens, "lengths": old_lengths + extends.astype(jnp.int32),
           "finished": was_finished | (token == sos_eos), "scores": new_scores}
    if use_attention:
      new["last"] = token
    if use_ctc:
      # The forward variables of the survivors only (a finished one's, or one ending in <sos/eos>, are unused).
      new["ctc_r"] = ctc_extend(ctc_log_probs, lengths_in, state["ctc_r"][:, b_index, hyp], _gather(last, b_index, hyp),
                                old_lengths, token, blank=blank)
      new["ctc_psi"] = psi[b_index, hyp, choice]
    alive = new["scores"] > NEG_INF
    running = alive & ~new["finished"]
    best_finished = jnp.max(jnp.where(new["finished"] & alive, new["scores"], NEG_INF), axis=-1)
    # Each later step adds at most the positive part of the penalty (attention and CTC terms are ≤ 0).
    bound = jnp.max(jnp.where(running, new["scores"], NEG_INF), axis=-1) + max(length_penalty, 0.0) * (
        max_length - i).astype(jnp.float32)
    done = ~jnp.any(running, axis=-1)
    if early_stop:
      done |= best_finished >= bound
    frozen = state["done"]
    for key, value in new.items():
      keep = frozen.reshape((batch,) + (1,) * (value.ndim - 1)) if key != "ctc_r" else frozen[None, :, None, None]
      new[key] = jnp.where(keep, state[key], value)
    if use_attention:
      # Not frozen with the rest: a frozen utterance's attention scores are never used again.
      rows = (b_index * beam + hyp).reshape(-1)
      new["cache"] = jax.tree.map(lambda leaf: leaf[rows], cache)
    new["done"] = frozen | done
    new["step"] = i + 1
    return new

  state = {"tokens": jnp.zeros((batch, beam, max_length), jnp.int32),
           "lengths": jnp.zeros((batch, beam), jnp.int32),
           "finished": jnp.zeros((batch, beam), bool),
           "scores": jnp.where(jnp.arange(beam) == 0, 0.0, NEG_INF)[None].repeat(batch, axis=0),
           "done": jnp.zeros((batch,), bool), "step": jnp.asarray(0, jnp.int32)}
  if use_attention:
    state["last"] = jnp.full((batch, beam), sos_eos, jnp.int32)
    state["cache"] = cache
  if use_ctc:
    frames = ctc_log_probs.shape[1]
    state["ctc_r"] = jnp.broadcast_to(ctc_initial_state(ctc_log_probs, lengths_in, blank=blank)[:, :, None],
                                      (frames, batch, beam, 2))
    state["ctc_psi"] = jnp.zeros((batch, beam), jnp.float32)  # log p(empty prefix) = 0
  state = jax.lax.while_loop(lambda s: (s["step"] <= max_length) & ~jnp.all(s["done"]), step, state)

  final = jnp.where(state["finished"], state["scores"], NEG_INF)
  scores, order = jax.lax.top_k(final, beam)
  tokens = _gather(state["tokens"], b_index, order)
  lengths = _gather(state["lengths"], b_index, order)
  real = scores > NEG_INF
  return jnp.where(real[..., None], tokens, 0), jnp.where(real, lengths, 0), scores
