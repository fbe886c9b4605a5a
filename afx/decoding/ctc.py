"""CTC on the device: the joint-training loss with impossible pairs masked, greedy decoding with the
frames of each emitted token, and the Viterbi (forced) alignment of given tokens (both for word timestamps).

Conventions (ESPnet's, and `afx.text`'s): id 0 is the blank and the padding of label arrays.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from afx.layers.speech import valid_mask


def min_frames(labels, label_lengths):
  """Frames a CTC alignment of each label row needs: its length plus one blank between each repeated pair."""
  valid = valid_mask(label_lengths, labels.shape[1])
  repeats = (labels[:, 1:] == labels[:, :-1]) & valid[:, 1:]
  return jnp.asarray(label_lengths, jnp.int32) + jnp.sum(repeats, axis=1, dtype=jnp.int32)


def ctc_loss(logits, logit_lengths, labels, label_lengths, *, blank_id: int = 0):
  """Per-utterance CTC negative log-likelihood `[batch]` and whether each row has any alignment `[batch]`.

  A row whose labels cannot fit its frames (`min_frames` > frames: too many tokens for a short or
  strongly subsampled utterance) has no alignment; its loss is 0 so that it drops out of the mean
  (ESPnet's `zero_infinity`), and the caller counts it.  Losses are clamped at 0 against rounding.
  """
  frames = logits.shape[1]
  logit_paddings = 1.0 - valid_mask(logit_lengths, frames).astype(jnp.float32)
  label_paddings = 1.0 - valid_mask(label_lengths, labels.shape[1]).astype(jnp.float32)
  per_row = optax.ctc_loss(logits.astype(jnp.float32), logit_paddings, labels, label_paddings, blank_id=blank_id)
  possible = (min_frames(labels, label_lengths) <= jnp.asarray(logit_lengths)) & (jnp.asarray(label_lengths) > 0)
  return jnp.where(possible, jnp.maximum(per_row, 0.0), 0.0), possible


def collapse(frame_tokens, frame_lengths, *, blank_id: int = 0):
  """CTC's many-to-one map on per-frame ids `[batch, frames]`: repeats merged, blanks removed, static shapes.

  Returns `(tokens [batch, frames], lengths [batch], first_frames [batch, frames], last_frames [batch, frames])`:
  the emitted ids packed at the start of each row (0 after them), how many there are, and the first and
  last frame of the run of frames that emitted each (−1 after them).
  """
  batch, frames = frame_tokens.shape
  valid = valid_mask(frame_lengths, frames)
  previous = jnp.concatenate([jnp.full((batch, 1), -1, frame_tokens.dtype), frame_tokens[:, :-1]], axis=1)
  starts = valid & (frame_tokens != blank_id) & (frame_tokens != previous)
  slot = jnp.cumsum(starts, axis=1) - 1  # the output position of each emitted token's run
  lengths = jnp.sum(starts, axis=1, dtype=jnp.int32)
  positions = jnp.arange(frames)
  target = jnp.where(starts, slot, frames)  # scattered out of range = dropped
  rows = jnp.arange(batch)[:, None]
  tokens = jnp.zeros((batch, frames + 1), frame_tokens.dtype).at[rows, target].set(frame_tokens)[:, :frames]
  first = jnp.full((batch, frames + 1), -1, jnp.int32).at[rows, target].set(positions)[:, :frames]
  # A run ends where the next frame differs from it; its last frame belongs to the slot it started.
  following = jnp.concatenate([frame_tokens[:, 1:], jnp.full((batch, 1), -1, frame_tokens.dtype)], axis=1)
  ends = valid & (frame_tokens != blank_id) & ((following != frame_tokens) | ~valid_mask(frame_lengths - 1, frames))
  last = jnp.full((batch, frames + 1), -1, jnp.int32).at[rows, jnp.where(ends, slot, frames)].set(positions)
  return tokens, lengths, first, last[:, :frames]


def greedy_decode(logits, logit_lengths, *, blank_id: int = 0):
  """Best-path CTC decoding of `logits [batch, frames, vocab]`: `collapse` of the per-frame argmax."""
  return collapse(jnp.argmax(logits, axis=-1).astype(jnp.int32), logit_lengths, blank_id=blank_id)


def _shift(values, by: int, fill):
  """`values [batch, n]` moved `by` places right along the last axis, `fill` in the places it leaves."""
  return jnp.concatenate([jnp.full((values.shape[0], by), fill, values.dtype), values], axis=1)[:, :values.shape[1]]


def _extended_labels(tokens, *, blank_id: int):
  """`[batch, 2L + 1]` the CTC states of each label row `tokens [batch, L]` (blank, y1, blank, y2, ..., blank)
  and whether each state may be entered from two states back (a label that differs from the one before it)."""
  batch, length = tokens.shape
  labels = jnp.full((batch, 2 * length + 1), blank_id, tokens.dtype).at[:, 1::2].set(tokens)
  return labels, (jnp.arange(2 * length + 1) % 2 == 1) & (labels != _shift(labels, 2, -1))


@functools.partial(jax.jit, static_argnames="blank_id")
def forced_align(log_probs, lengths, tokens, token_lengths, *, blank_id: int = 0):
  """The most likely CTC alignment (Viterbi) of `tokens [batch, L]` (valid before `token_lengths`) to
  `log_probs [batch, frames, vocab]` (log-posteriors, valid before `lengths`).

  Returns `(first [batch, L], last [batch, L])` int32: the first and last frame each token occupies in that
  alignment, −1 after each row's tokens, as `greedy_decode` gives them.  A row whose tokens cannot fit its
  frames (`min_frames` > frames) has no alignment: all −1.  Ties go to the earlier state (stay, then +1,
  then +2; the final blank over the final label).
  """
  batch, frames, _ = log_probs.shape
  length = tokens.shape[1]
  lengths, token_lengths = jnp.asarray(lengths, jnp.int32), jnp.asarray(token_lengths, jnp.int32)
  labels, skip = _extended_labels(jnp.asarray(tokens, jnp.int32), blank_id=blank_id)
  emissions = jnp.take_along_axis(log_probs.astype(jnp.float32), labels[:, None, :], axis=2)  # [b, T, S]

  def frame(alpha, inputs):
    emission, t = inputs
    two_back = jnp.where(skip, _shift(alpha, 2, -jnp.inf), -jnp.inf)
    candidates = jnp.stack([alpha, _shift(alpha, 1, -jnp.inf), two_back])  # [3, b, S]: stay, +1, +2
    step = jnp.argmax(candidates, axis=0).astype(jnp.int32)
    new = jnp.max(candidates, axis=0) + emission
    return jnp.where((t < lengths)[:, None], new, alpha), step

  # Before frame 0 the path sits in a virtual state whose successors are states 0 and 1: state 0 at 0.
  start = jnp.where(jnp.arange(2 * length + 1) == 0, 0.0, -jnp.inf)[None].repeat(batch, axis=0)
  alpha, steps = jax.lax.scan(frame, start, (jnp.moveaxis(emissions, 1, 0), jnp.arange(frames)))
  rows = jnp.arange(batch)
  final_blank, final_label = 2 * token_lengths, jnp.maximum(2 * token_lengths - 1, 0)
  use_label = (token_lengths > 0) & (alpha[rows, final_label] > alpha[rows, final_blank])
  end = jnp.where(use_label, final_label, final_blank)
  best = alpha[rows, end]

  def back(state, inputs):
    step, t = inputs
    valid = t < lengths
    return jnp.where(valid, state - step[rows, state], state), jnp.where(valid, state, -1)

  _, path = jax.lax.scan(back, end, (steps, jnp.arange(frames)), reverse=True)  # [T, b]: state per frame
  path = path.T
  on_token = (path >= 0) & (path % 2 == 1)
  slot = jnp.where(on_token, path // 2, length)  # blank frames go to a spare column, cut off below
  positions = jnp.broadcast_to(jnp.arange(frames, dtype=jnp.int32), (batch, frames))
  first = jnp.full((batch, length + 1), frames, jnp.int32).at[rows[:, None], slot].min(positions)[:, :length]
  last = jnp.full((batch, length + 1), -1, jnp.int32).at[rows[:, None], slot].max(positions)[:, :length]
  possible = (min_frames(tokens, token_lengths) <= lengths) & jnp.isfinite(best)
  keep = possible[:, None] & valid_mask(token_lengths, length)
  return jnp.where(keep, first, -1), jnp.where(keep, last, -1)
