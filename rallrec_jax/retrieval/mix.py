"""Item embedding mixtures and item-item similarity (spec 2.5; Table 6 variants).

Two styles:
- `paper` (eq. 7): each block L2-normalised per row, concatenated [e_text || e_colla || e_ssl], similarity =
  dot product of the concatenations (= the sum of the blocks' cosines). The text block is centred over the
  items first (`text_center`, default on) and optionally reduced by PCA (`text_pca` > 0 components): mean-pooled
  LLM states are anisotropic (they share a large common direction), so uncentred text cosines bunch together
  near one value and the text ranking is decided by small differences on top of it; centring removes that
  common direction (spec 6.5: PCA on the text block). The collaborative blocks are used as they are.
- `official` (`rag/topK_relevant_*.py`): the text block reduced by PCA(128) fitted on all items, each block
  divided by ONE scalar, its largest row norm, then cosine similarity over the concatenation.

Variants (`kind`): `text` (text block only), `colla` (LightGCN only = ID-based), `mix` (text + colla = concat
w/o SSL), `mix3` (text + colla + ssl = concat w/ SSL), `hybrid` (score level:
0.5 * softmax_row(cos(T)) + 0.5 * softmax_row(cos(colla)), the code's `mix2`), `retri_then_mix` (list level,
the code's `hybrid` embed_type and Fig. 8's "Retri.-then-Mix": no mixed score at all, but two rankings,
text and colla, whose top items retrieve.py interleaves; its similarity has two channels).

`ItemSimilarity` scores a target against candidate items on the fly (a batch of targets times their
candidates), never building the item x item matrix; `matrix()` builds it for small item sets (tests).
Every kind returns [B, H] scores except `retri_then_mix`, which returns [B, H, 2]: channel 0 is exactly the
`text` kind's similarity and channel 1 the `colla` kind's (same style), so each channel ranks as that kind.
Items without a collaborative embedding hold zero rows: their colla block contributes 0, never NaN.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("text", "colla", "mix", "mix3", "hybrid", "retri_then_mix")
SINGLE_EMBEDDING_KINDS = ("text", "colla", "mix", "mix3")  # kinds whose similarity is one dot product
STYLES = ("paper", "official")


def l2_normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """x_i / ||x_i|| per row; an all-zero row stays zero."""
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, eps)


def scale_by_max_row_norm(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """x / max_i ||x_i|| (the official code's single global scalar per block)."""
    x = np.asarray(x, np.float32)
    return x / max(float(np.linalg.norm(x, axis=1).max(initial=0.0)), eps)


def pca(x: np.ndarray, n_components: int) -> np.ndarray:
    """PCA projection (as sklearn's `PCA(n).fit_transform`, up to the sign of each component).

    x: [N, D] -> [N, n_components], by SVD of the centred data (float64 for stable components).
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"PCA input must be [items, features], got shape {x.shape}")
    if not 0 < n_components <= min(x.shape):
        raise ValueError(f"n_components={n_components} must lie in [1, min{x.shape}]")
    centred = x - x.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)  # u [N, r], s [r]
    return (u[:, :n_components] * s[:n_components]).astype(np.float32)


def _check_block(name: str, x, num_items: int | None) -> np.ndarray:
    if x is None:
        raise ValueError(f"this similarity kind needs the {name} embeddings")
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} embeddings must be [items, dim], got shape {x.shape}")
    if num_items is not None and x.shape[0] != num_items:
        raise ValueError(f"{name} embeddings have {x.shape[0]} rows, expected {num_items} items")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} embeddings hold non-finite values")
    return x


def prepare_text(text: np.ndarray, center: bool = True, n_pca: int = 0) -> np.ndarray:
    """The paper style's text block before its L2 norm: centred over items (x - mean_items x), and with
    `n_pca` > 0 projected on its first principal components (which centres it too). [I, D] -> [I, D or n_pca]."""
    x = np.asarray(text, np.float32)
    if n_pca and n_pca < x.shape[1]:
        return pca(x, min(int(n_pca), min(x.shape)))
    if center:
        return (x.astype(np.float64) - x.mean(0, dtype=np.float64)).astype(np.float32)
    return x


def mixed_embedding(kind: str, text: np.ndarray | None = None, colla: np.ndarray | None = None,
                    ssl: np.ndarray | None = None, style: str = "paper", pca_dim: int = 128,
                    text_center: bool = False, text_pca: int = 0) -> np.ndarray:
    """The item vectors whose dot products are the `kind` similarity ([I, D_total]); not for `hybrid`
    (a score mixture) nor `retri_then_mix` (two rankings): those are built from the single kinds.

    paper: concat of row-normalised blocks (the text block through `prepare_text(text_center, text_pca)` first).
    official: PCA(pca_dim) text, blocks / max row norm, then the concatenation row-normalised so that the dot
    product is the cosine similarity.
    """
    if kind not in SINGLE_EMBEDDING_KINDS:
        raise ValueError(f"kind={kind!r} has no single embedding; choose one of {SINGLE_EMBEDDING_KINDS}")
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not one of {STYLES}")
    blocks = {"text": ("text",), "colla": ("colla",), "mix": ("text", "colla"), "mix3": ("text", "colla", "ssl")}
    given = {"text": text, "colla": colla, "ssl": ssl}
    num_items = None
    parts = []
    for name in blocks[kind]:
        x = _check_block(name, given[name], num_items)
        num_items = x.shape[0]
        if style == "paper":
            parts.append(l2_normalize_rows(prepare_text(x, text_center, text_pca) if name == "text" else x))
        else:
            if name == "text" and pca_dim and x.shape[1] > pca_dim:
                x = pca(x, pca_dim)
            parts.append(scale_by_max_row_norm(x))
    joined = np.concatenate(parts, axis=1)  # [I, sum of block dims]
    return joined if style == "paper" else l2_normalize_rows(joined)


@jax.jit
def _dot_scores(emb: jax.Array, targets: jax.Array, cands: jax.Array) -> jax.Array:
    # The target's row against all items ([B, I]), then the candidates' columns: memory B*I, never the
    # [B, H, D] gather of candidate vectors (H can be thousands, D thousands).
    row = emb[targets] @ emb.T  # [B, I]
    return jnp.take_along_axis(row, cands, axis=1)  # [B, H]


@jax.jit
def _hybrid_scores(text: jax.Array, colla: jax.Array, targets: jax.Array, cands: jax.Array) -> jax.Array:
    """0.5 softmax_row(cos T)[t, c] + 0.5 softmax_row(cos C)[t, c]; rows normalised over all items."""
    def block(x):
        row = x[targets] @ x.T  # [B, I] cosines of the target to every item
        picked = jnp.take_along_axis(row, cands, axis=1)  # [B, H]
        return jnp.exp(picked - jax.nn.logsumexp(row, axis=1, keepdims=True))
    return 0.5 * block(text) + 0.5 * block(colla)


@jax.jit
def _two_channel_scores(text: jax.Array, colla: jax.Array, targets: jax.Array, cands: jax.Array) -> jax.Array:
    """[B, H, 2]: the text kind's and the colla kind's dot scores, each as `_dot_scores`."""
    return jnp.stack([_dot_scores(text, targets, cands), _dot_scores(colla, targets, cands)], axis=-1)


class ItemSimilarity:
    """similarity(targets [B], candidates [B, H]) -> [B, H] for one Table 6 variant, computed on the fly
    ([B, H, 2] text and colla channels for `retri_then_mix`)."""

    def __init__(self, kind: str, text: np.ndarray | None = None, colla: np.ndarray | None = None,
                 ssl: np.ndarray | None = None, style: str = "paper", pca_dim: int = 128, chunk: int = 256,
                 text_center: bool = False, text_pca: int = 0):
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not one of {KINDS}")
        self.kind, self.style, self.chunk = kind, style, chunk
        if kind == "hybrid":
            t = _check_block("text", text, None)
            c = _check_block("colla", colla, t.shape[0])
            if style == "official" and pca_dim and t.shape[1] > pca_dim:
                t = pca(t, pca_dim)
            elif style == "paper":
                t = prepare_text(t, text_center, text_pca)
            self._text = jnp.asarray(l2_normalize_rows(t))
            self._colla = jnp.asarray(l2_normalize_rows(c))
            self.num_items = t.shape[0]
        elif kind == "retri_then_mix":
            # Each channel is its own kind's embedding, so the two rankings are the text and ID rankings of
            # Table 6 (official style: PCA text, cosine), as the code's `hybrid` reads the `text` and
            # `colla` index files.
            self._text = jnp.asarray(mixed_embedding("text", text, None, None, style, pca_dim, text_center, text_pca))
            self._colla = jnp.asarray(mixed_embedding("colla", None, colla, None, style, pca_dim))
            if self._colla.shape[0] != self._text.shape[0]:
                raise ValueError(f"colla embeddings have {self._colla.shape[0]} rows, expected "
                                 f"{self._text.shape[0]} items")
            self.num_items = self._text.shape[0]
        else:
            self._emb = jnp.asarray(mixed_embedding(kind, text, colla, ssl, style, pca_dim, text_center, text_pca))
            self.num_items = self._emb.shape[0]

    @property
    def channels(self) -> int:
        """Scores per (target, candidate): 2 for `retri_then_mix`, else 1 (no trailing axis)."""
        return 2 if self.kind == "retri_then_mix" else 1

    def __call__(self, targets: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        targets = np.asarray(targets, np.int32)
        candidates = np.asarray(candidates, np.int32)
        if candidates.ndim != 2 or targets.shape != (candidates.shape[0],):
            raise ValueError(f"targets {targets.shape} must be [B] and candidates {candidates.shape} [B, H]")
        for name, arr in (("targets", targets), ("candidates", candidates)):
            if arr.size and (arr.min() < 0 or arr.max() >= self.num_items):
                raise ValueError(f"{name} hold item indices outside [0, {self.num_items})")
        out = []
        for s in range(0, max(targets.shape[0], 1), self.chunk):
            t, c = jnp.asarray(targets[s:s + self.chunk]), jnp.asarray(candidates[s:s + self.chunk])
            if self.kind == "hybrid":
                out.append(np.asarray(_hybrid_scores(self._text, self._colla, t, c)))
            elif self.kind == "retri_then_mix":
                out.append(np.asarray(_two_channel_scores(self._text, self._colla, t, c)))
            else:
                out.append(np.asarray(_dot_scores(self._emb, t, c)))
        if out:
            return np.concatenate(out, axis=0)
        return np.zeros(candidates.shape + ((2,) if self.channels == 2 else ()), np.float32)

    def matrix(self) -> np.ndarray:
        """The full [I, I] similarity matrix ([I, I, 2] for `retri_then_mix`; small item sets only)."""
        idx = np.arange(self.num_items)
        return self(idx, np.broadcast_to(idx, (self.num_items, self.num_items)))
