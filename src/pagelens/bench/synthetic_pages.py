"""Synthetic ColQwen-sized page and query multi-vectors with the structure search depends on.

Real page embeddings are not noise: a page's ~750 token vectors gather around what the page is
about, white space gives near-identical "background" vectors shared by every page, pages of one
document share a vocabulary, and common concepts recur across documents. A query is a dozen
content tokens close to some of its page's concepts plus the prompt tokens every query shares. So:

- `concepts` unit vectors (4096 by default) with Zipf popularity (weight 1 / rank^0.8);
- a document (10 pages) draws 48 topic concepts; a page adds `own_concepts` (24) of its own
  (counted twice), and each of its 600-800 tokens (uniform) is background (`background`, 35%: one
  of 8 shared vectors) or one of those concepts, plus Gaussian noise (cosine to its concept ~0.8).
  By default a page holds ~66 distinct concepts; 96 own concepts and 10% background give ~121,
  more than a page's 64 centroids can each keep apart (`pagelens bench search --own-concepts`);
- a query for page `p`: 6 prompt tokens (shared, tiny noise) + 14 of `p`'s content tokens'
  concepts with heavier noise (cosine ~0.6).

Every row is L2-normalized float32; page `i` is a pure function of (seed, i), so a corpus is never
held whole.
"""

from __future__ import annotations

import numpy as np

DIM = 128
OWN_CONCEPTS, BACKGROUND = 24, 0.35  # the default page shape: ~66 distinct concepts per page


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


class SyntheticCorpus:
    """`pages` page multi-vectors in documents of `pages_per_document` pages; see the module docstring."""

    def __init__(
        self,
        pages: int,
        *,
        seed: int = 0,
        concepts: int = 4096,
        pages_per_document: int = 10,
        prompt_tokens: int = 6,
        own_concepts: int = OWN_CONCEPTS,
        background: float = BACKGROUND,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.pages, self.seed, self.pages_per_document = pages, seed, pages_per_document
        self.own_concepts, self.background_share = own_concepts, background
        self.concepts = _unit(rng.standard_normal((concepts, DIM)))
        self.background = _unit(rng.standard_normal((8, DIM)))
        self.prompt = _unit(rng.standard_normal((prompt_tokens, DIM)))
        popularity = 1.0 / np.arange(1, concepts + 1) ** 0.8
        self.popularity = popularity / popularity.sum()
        documents = -(-pages // pages_per_document)
        self.topics = rng.choice(concepts, size=(documents, 48), p=self.popularity)
        self.tokens = rng.integers(600, 800, size=pages)

    def _layout(self, page: int) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """Page `page`'s concept per token, which tokens are background, and its own generator."""
        rng = np.random.default_rng((self.seed, 1, page))
        own = rng.choice(len(self.concepts), size=self.own_concepts, p=self.popularity)
        vocabulary = np.concatenate([self.topics[page // self.pages_per_document], own, own])
        count = int(self.tokens[page])
        return vocabulary[rng.integers(0, len(vocabulary), size=count)], rng.random(count) < self.background_share, rng

    def distinct_concepts(self, page: int) -> int:
        """How many concepts page `page`'s non-background tokens come from."""
        concept_of, is_background, _ = self._layout(page)
        return len(np.unique(concept_of[~is_background]))

    def page(self, page: int) -> np.ndarray:
        """Page `page`'s `(600..800, 128)` float32 unit rows."""
        concept_of, is_background, rng = self._layout(page)
        count = len(concept_of)
        background = self.background[rng.integers(0, len(self.background), size=count)]
        centers = np.where(is_background[:, None], background, self.concepts[concept_of])
        return _unit(centers + 0.066 * rng.standard_normal((count, DIM)))

    def query(self, page: int, seed: int) -> np.ndarray:
        """A `(20, 128)` float32 query whose content comes from page `page`."""
        concept_of, is_background, _ = self._layout(page)
        rng = np.random.default_rng((self.seed, 2, seed))
        content = concept_of[~is_background]
        chosen = self.concepts[content[rng.integers(0, len(content), size=14)]]
        prompt = self.prompt + 0.05 * rng.standard_normal(self.prompt.shape)
        return _unit(np.concatenate([prompt, chosen + 0.12 * rng.standard_normal(chosen.shape)]))
