"""CTC on the device: the joint-training loss with impossible pairs masked, and greedy decoding with the
frame of each emitted token (for word timestamps).

Conventions (ESPnet's, and `afx.text`'s): id 0 is the blank and the padding of label arrays.
"""

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
