"""The graph's input and output names, fixed by the bundle format (docs/bundle-format.md).

The exporter names the graph's I/O with these; the runtime binds with them. Nothing else spells them.

    input_ids                 [B, T] int64          the new tokens
    position_ids              [B, T] int64          their absolute positions
    logits_from               [1] int64             "selectable" logits only: first position that gets logits
    seqlens_k                 [B] int32             capturable graphs only (manifest target.graph_capture): each
                                                    sequence's last position, GroupQueryAttention's seqlens_k
    total_sequence_length     [] int32              capturable graphs only: rows of the cache attention may span
    attention_bias.w{W}       [1, 1, T, C + T]      static graphs only: additive mask for layers of window W
                                                    (0 = full attention) with C cached rows
    past_key.{i} / past_value.{i}        layer i's cache going in
    present_key.{i} / present_value.{i}  layer i's cache coming out (what that is depends on kv_cache.mode)
    logits                    [B, rows, vocab]
    hidden_in / hidden_out    [B, T, hidden] float32   between the parts of a split model (manifest graphs.*.parts):
                              every part but the first takes hidden_in, every part but the last returns hidden_out
"""

INPUT_IDS = "input_ids"
POSITION_IDS = "position_ids"
LOGITS_FROM = "logits_from"
SEQLENS_K = "seqlens_k"
TOTAL_SEQUENCE_LENGTH = "total_sequence_length"
LOGITS = "logits"
HIDDEN_IN = "hidden_in"
HIDDEN_OUT = "hidden_out"


def past_key(layer: int) -> str:
    return f"past_key.{layer}"


def past_value(layer: int) -> str:
    return f"past_value.{layer}"


def present_key(layer: int) -> str:
    return f"present_key.{layer}"


def present_value(layer: int) -> str:
    return f"present_value.{layer}"


def kv_names(layer: int) -> tuple[str, str, str, str]:
    """(past_key, past_value, present_key, present_value) of `layer`."""
    return past_key(layer), past_value(layer), present_key(layer), present_value(layer)


def attention_bias(window: int) -> str:
    """The mask input shared by every layer of sliding window `window` (0: the full-attention layers)."""
    return f"attention_bias.w{window}"
