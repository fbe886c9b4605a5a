"""The text side of speech recognition and synthesis: tokenizers (ESPnet's token-list conventions)
and error rates (jiwer's definitions)."""

from afx.text.metrics import (character_error_rate, edit_distance, error_counts, normalize_for_scoring,
                              word_error_rate)
from afx.text.tokenizers import (BLANK, CASES, KINDS, MODEL_TYPES, SOS_EOS, SPACE, UNK, CharacterTokenizer,
                                 SentencePieceTokenizer, Tokenizer, build_tokenizer, load_tokenizer, normalize_text)

__all__ = ["BLANK", "CASES", "KINDS", "MODEL_TYPES", "SOS_EOS", "SPACE", "UNK", "CharacterTokenizer",
           "SentencePieceTokenizer", "Tokenizer", "build_tokenizer", "character_error_rate", "edit_distance",
           "error_counts", "load_tokenizer", "normalize_for_scoring", "normalize_text", "word_error_rate"]
